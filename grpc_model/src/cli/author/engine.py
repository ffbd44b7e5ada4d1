"""The container engine behind `grpc-model build` and `grpc-model test --image`.

Whichever engine answers: Docker, or podman behind the `docker` client, set up by the shell scripts that ship
in the framework's package (`grpc_model/src/container/`; the template repository links them from `scripts/`),
so a model project that depends on the package builds its image the same way the template does.
"""

import os
import subprocess
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from grpc_model.src.cli.output import console, fail, settings_from_env, shown
from grpc_model.src.metadata import BundleError, load_bundle
from grpc_model.src.metadata.schema import slug
from grpc_model.src.settings import project_dir

CONTAINER_SCRIPTS = Path(__file__).resolve().parents[2] / "container"
NO_ENGINE = 3  # container_engine.sh: nothing answers and nothing can be set up here


class EngineError(Exception):
    """No container engine answers, and none could be set up."""


def engine_environment() -> dict[str, str]:
    """This process's environment plus what makes the `docker` client reach an engine (podman's service's
    address, where container_engine.sh started it)."""
    script = subprocess.run(
        ["bash", str(CONTAINER_SCRIPTS / "container_engine.sh")], capture_output=True, text=True, check=False
    )
    if script.returncode != 0:
        reason = script.stderr.strip() or script.stdout.strip() or f"exit {script.returncode}"
        raise EngineError(f"no container engine: {reason}")
    env = dict(os.environ)
    for line in script.stdout.splitlines():  # `export NAME=value ...`
        if line.startswith("export "):
            env.update(pair.partition("=")[::2] for pair in line.split()[1:] if "=" in pair)
    return env


def default_tag() -> str:
    """`<slug of model.yaml's name>:<served version>`, e.g. `word-stats:0.2.0`."""
    settings = settings_from_env()
    try:
        bundle = load_bundle(settings.asset_bundle_dir, settings.model_version)
    except BundleError as error:
        raise fail(str(error)) from None
    return f"{slug(bundle.spec.name)}:{bundle.version}"


def build(
    tag: Annotated[
        str | None, typer.Option(help="The image's name and tag; default: <model name>:<served version>.")
    ] = None,
    build_arg: Annotated[
        list[str] | None, typer.Option("--build-arg", metavar="NAME=VALUE", help="A Dockerfile ARG; repeat for more.")
    ] = None,
) -> None:
    """Release step: build the project's Dockerfile into an image, with Docker or (where none answers) podman
    set up as `grpc-model test --image` does; prints the tag.

    Example: `grpc-model build --tag registry.example.com/models/word-stats:0.2.0`
    """
    project = project_dir()
    if not (project / "Dockerfile").is_file():
        raise fail(f"no Dockerfile in {shown(project)}: run grpc-model build in the model project")
    name = tag or default_tag()
    try:
        env = engine_environment()
    except EngineError as error:
        raise fail(str(error)) from None
    arguments = [item for pair in build_arg or [] for item in ("--build-arg", pair)]
    console.print(f"building {escape(name)} from {escape(shown(project / 'Dockerfile'))}")
    built = subprocess.run(["docker", "build", "--tag", name, *arguments, "."], cwd=project, env=env, check=False)
    if built.returncode != 0:
        raise fail(f"docker build failed (exit {built.returncode}); its output is above")
    console.print(f"[green]built:[/green] {escape(name)}")
    if env.get("DOCKER_HOST") and env.get("DOCKER_HOST") != os.environ.get("DOCKER_HOST"):
        stop = f"bash {CONTAINER_SCRIPTS / 'container_engine.sh'} --stop"
        console.print(
            f"  the engine is podman's service: `export DOCKER_HOST={escape(env['DOCKER_HOST'])}` for docker push;"
            f" it keeps running for the next build until `{escape(stop)}`"
        )
