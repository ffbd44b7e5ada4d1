"""The framework as a package, down the path a model author outside this repository takes (docs/package.md).

The wheel is built from this source, installed alone into a clean virtual environment, and that environment's
`grpc-model new` starts a project; the project installs the framework from the wheel it was given (its lock, its
own .venv/) and every author command runs there, from the project's directory. A second project, made by
`grpc-model new --from` a model file, depends on the framework with its runtime's extra and installs it from the
wheel's metadata. Slow (a wheel, three environments, two locks): each project is made once for the module.
"""

import os
import re
import shutil
import socket
import subprocess
import sys
import tomllib
import zipfile
from concurrent.futures import ThreadPoolExecutor
from email.parser import HeaderParser
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from typer.testing import CliRunner

from grpc_model.src.cli import app
from grpc_model.src.cli.author import engine as author_engine
from grpc_model.src.cli.author import project as author_project
from grpc_model.src.cli.author import project_files
from grpc_model.src.cli.author.engine import CONTAINER_SCRIPTS, default_tag
from grpc_model.src.cli.author.project import ServedFile, create_project, file_specs
from grpc_model.src.runtime.loader import import_wrapper_class
from grpc_model.src.runtimes import RUNTIMES
from grpc_model.src.settings import ENV_PREFIX, PROJECT_ROOT, Settings, project_dir
from grpc_model.tests.conftest import PATIENCE_SECONDS, ServerProcess
from grpc_model.tests.runtime_models import TRAINERS, iris
from grpc_model.tests.test_init_from_model import sample_csv

MODE = os.environ.get("INTEGRATION_MODE")
NAME = "Word Stats"
CASE = ("hello world", '{"data": {"result": {"input_bytes": {"input.txt": 11}}, "explanation": null, "drift": null}}')
SLOW_SECONDS = 900  # a bound on one install or lock, on a loaded machine with a cold cache


def poetry() -> str:
    """The poetry scripts/dev.sh installs (.tools/ of this checkout or of the one it was made from), or PATH's."""
    for candidate in (PROJECT_ROOT / ".tools/bin/poetry", Path(sys.prefix).parent / ".tools/bin/poetry"):
        if candidate.is_file():
            return str(candidate)
    found = shutil.which("poetry")
    if found is None:
        pytest.skip("no poetry (scripts/dev.sh installs it into .tools/)")
    return found


def clean_env(*path: Path) -> dict[str, str]:
    """The environment an author's shell would have: none of this checkout's paths or server settings."""
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in ("PYTHONPATH", "VIRTUAL_ENV", "PSC_MODEL_PORT") and not name.startswith(ENV_PREFIX)
    }
    env["PATH"] = os.pathsep.join([*(str(p) for p in path), env.get("PATH", "")])
    env["POETRY_NO_INTERACTION"] = "1"
    return env


def run(command: list[str], cwd: Path, env: dict[str, str], seconds: float = SLOW_SECONDS) -> str:
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=seconds, check=False)
    assert done.returncode == 0, f"{command} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out), str(PROJECT_ROOT)], out, {})
    (built,) = out.glob("grpc_model-*.whl")
    return built


@pytest.fixture(scope="module")
def framework(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A clean environment with the wheel alone installed (runtime_project adds the `sklearn` extra to it, as an
    author of a model file would): its `grpc-model` and poetry on the PATH."""
    root = tmp_path_factory.mktemp("framework")
    run([sys.executable, "-m", "venv", str(root)], root, clean_env())
    run([str(root / "bin/pip"), "install", "--quiet", str(wheel)], root, clean_env())
    return clean_env(root / "bin", Path(poetry()).parent)


def make_project(wheel: Path, framework: dict[str, str], root: Path) -> Path:
    """A project made by the wheel's own `grpc-model new`, installed with its lock, with one test case added."""
    run(["grpc-model", "new", "word-stats", NAME, "--framework-wheel", str(wheel)], root, framework)
    project = root / "word-stats"
    run(["poetry", "install"], project, framework)
    case = project / "asset_bundle/0.1.0/test_cases/0001-two-words"
    case.mkdir()
    (case / "input.txt").write_text(CASE[0])
    (case / "results.json").write_text(CASE[1])
    return project


def make_runtime_project(wheel: Path, framework: dict[str, str], root: Path) -> Path:
    """A project made by the wheel's `grpc-model new --from` a scikit-learn pipeline trained here, with a sample's
    test case, installed with its lock: the framework and the `sklearn` extra's libraries, from the wheel's
    metadata (the scikit-learn the lock resolves is the newest, as here, so the pickle loads)."""
    # `new --from` reads the model with its library: the author's environment has the framework with the extra.
    run(["pip", "install", "--quiet", f"{wheel}[sklearn]"], root, framework)
    file, _ = TRAINERS["sklearn"](root, iris()[0][:1])
    sample = sample_csv(root / "rows.csv")
    made = ["grpc-model", "new", "iris", "--from", file, "--sample", sample.name, "--trusted"]
    made += ["--framework-wheel", str(wheel)]
    run(made, root, framework)
    run(["poetry", "install"], root / "iris", framework)
    return root / "iris"


@pytest.fixture(scope="module")
def projects(wheel: Path, framework: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Both projects, made at once: each is minutes of waiting on installs and locks, which overlap."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        made = {
            "word-stats": pool.submit(make_project, wheel, framework, tmp_path_factory.mktemp("author")),
            "iris": pool.submit(make_runtime_project, wheel, framework, tmp_path_factory.mktemp("runtime-author")),
        }
        return {name: future.result() for name, future in made.items()}


@pytest.fixture(scope="module")
def project(projects: dict[str, Path]) -> Path:
    return projects["word-stats"]


@pytest.fixture(scope="module")
def runtime_project(projects: dict[str, Path]) -> Path:
    return projects["iris"]


def activated(project: Path) -> dict[str, str]:
    """The project's .venv/bin first on the PATH, as after `source .venv/bin/activate`."""
    return clean_env(project / ".venv/bin")


@pytest.fixture
def author_env(project: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.delenv("PYTHONPATH", raising=False)  # the server processes must not see this checkout
    return activated(project)


def test_the_working_directory_is_importable_for_the_authors_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An installed `grpc-model serve` has only its own directory on the path, not the project's."""
    (tmp_path / "author_package").mkdir()
    (tmp_path / "author_package/__init__.py").write_text("")
    (tmp_path / "author_package/model.py").write_text(
        "class AuthorModel:\n"
        "    def handle_single_input(self, model_input, detect_drift, explain):\n"
        "        return {}\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [entry for entry in sys.path if entry not in ("", ".", str(tmp_path))])
    monkeypatch.delitem(sys.modules, "author_package", raising=False)
    monkeypatch.delitem(sys.modules, "author_package.model", raising=False)
    assert import_wrapper_class("author_package.model").__name__ == "AuthorModel"
    assert sys.path[-1] == str(tmp_path)  # last: nothing installed is shadowed


def test_the_commands_act_on_the_project_in_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, greeter_bundle: Path
) -> None:
    shutil.copytree(greeter_bundle, tmp_path / "asset_bundle")
    monkeypatch.chdir(tmp_path)
    assert project_dir() == tmp_path
    assert Settings().asset_bundle_dir.resolve() == tmp_path / "asset_bundle"
    assert default_tag() == "hello-world:0.1.0"  # grpc-model build's tag: model.yaml's name, the served version


def test_build_and_test_image_find_the_container_scripts_the_template_links() -> None:
    """They run these from the package, where a project has them too; without an engine no other test gets there."""
    for script in ("container_engine.sh", "integration_test.sh"):
        assert (CONTAINER_SCRIPTS / script).resolve() == (PROJECT_ROOT / "scripts" / script).resolve()


def test_build_on_podmans_service_says_where_it_listens_and_how_to_stop_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where build set podman's service up, it is left running for the next build: the author needs its address
    (to push) and the command that stops it, whole on one line to copy."""
    (tmp_path / "model_lib").mkdir()
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    monkeypatch.setattr(author_engine, "engine_environment", lambda: {"DOCKER_HOST": "unix:///run/podman/podman.sock"})
    builds: list[list[str]] = []

    def docker(command: list[str], **_: object) -> subprocess.CompletedProcess[str]:
        builds.append(command)
        return subprocess.CompletedProcess(command, 0)

    monkeypatch.setattr(subprocess, "run", docker)
    built = CliRunner().invoke(app, ["build", "--tag", "word-stats:0.1.0"], env={"COLUMNS": "40"})
    assert built.exit_code == 0, built.output
    assert builds == [["docker", "build", "--tag", "word-stats:0.1.0", "."]]
    assert "`export DOCKER_HOST=unix:///run/podman/podman.sock` for docker push" in built.output
    assert f"until `bash {CONTAINER_SCRIPTS / 'container_engine.sh'} --stop`" in built.output


def test_new_refuses_a_directory_that_holds_files(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    refused = CliRunner().invoke(app, ["new", str(tmp_path)], env={"COLUMNS": "200"})
    assert refused.exit_code == 2
    assert "exists and is not an empty directory" in refused.output
    assert [path.name for path in tmp_path.iterdir()] == ["notes.txt"]
    not_a_wheel = CliRunner().invoke(
        app, ["new", str(tmp_path / "p"), "--framework-wheel", str(tmp_path / "notes.txt")]
    )
    assert not_a_wheel.exit_code == 2
    assert not (tmp_path / "p").exists()
    bad_version = CliRunner().invoke(app, ["new", str(tmp_path / "p"), "--version", "1.0"])
    assert bad_version.exit_code == 2
    assert not (tmp_path / "p").exists()


def test_new_names_the_poetry_to_install_with_when_it_is_not_on_the_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`scripts/dev.sh new` finds the template's own poetry in .tools/, which is not on the author's PATH: the next
    step names it by a path that still holds after the `cd` into the project."""
    template_poetry = str(tmp_path / "template/.tools/bin/poetry")
    monkeypatch.setattr(author_project, "find_poetry", lambda: template_poetry)
    monkeypatch.setattr(author_project, "lock", lambda directory, poetry: poetry == template_poetry)
    monkeypatch.setattr(shutil, "which", lambda name: None)  # no poetry on the PATH
    wheel = tmp_path / "grpc_model-0.1.0-py3-none-any.whl"  # only its name is read before it is copied
    wheel.write_bytes(b"")
    made = CliRunner().invoke(
        app, ["new", str(tmp_path / "word-stats"), "--framework-wheel", str(wheel)], env={"COLUMNS": "40"}
    )
    assert made.exit_code == 0, made.output
    assert f"&& {template_poetry} install, then" in made.output
    assert "no poetry.lock" not in made.output


def test_the_projects_dockerfile_keeps_the_templates_guarantees() -> None:
    """What test_packaging.py checks of the template's Dockerfile; the image test runs it where an engine does."""
    build, final = project_files.dockerfile().split("\nFROM ")[1:]
    assert "python -m grpc_model validate" in build  # a broken bundle fails the build
    copies = re.findall(r"^COPY (?:--from=\S+ )?(\S+) (\S+)", final, re.MULTILINE)
    assert copies == [("/venv", "/venv"), ("model_lib", "./model_lib"), ("/bundle", "./asset_bundle/")]
    assert re.findall(r"^USER (\S+)", final, re.MULTILINE) == ["model"]
    assert re.search(r"^HEALTHCHECK .*\n.*grpc_model\.src\.model_client --health", final, re.MULTILINE)
    assert "**/tests/" in project_files.DOCKERIGNORE.splitlines()


def test_the_projects_image_shares_the_templates_poetry_layer() -> None:
    """The engine's build cache reuses a RUN layer only for the same text after the same layers: word for word, the
    project's image takes poetry's installation from any image of the template built before on the machine."""

    def poetry_stage(dockerfile: str) -> list[str]:
        lines = [line for line in dockerfile.splitlines() if line and not line.startswith("#")]
        return lines[: lines.index("WORKDIR /build")]

    template = poetry_stage((PROJECT_ROOT / "Dockerfile").read_text())
    assert "pip install poetry==" in "".join(template)
    assert poetry_stage(project_files.dockerfile()) == template


def test_the_wheel_is_the_framework_alone(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    assert not [name for name in names if name.startswith("model_lib/") or "/tests/" in name]
    for shipped in (
        "grpc_model/wrapper.py",  # the contract models import
        "grpc_model/src/auto_generated/model2_template/model_pb2.py",  # the .proto's code
        "grpc_model/src/web/static/index.html",
        "grpc_model/src/container/integration_test.sh",  # test --image and build
    ):
        assert shipped in names


def test_the_wheel_declares_each_feature_as_an_extra(wheel: Path) -> None:
    """A project that depends on the wheel turns a feature on with an extra: dependency groups do not ship."""
    with zipfile.ZipFile(wheel) as archive:
        (name,) = [name for name in archive.namelist() if name.endswith(".dist-info/METADATA")]
        metadata = HeaderParser().parsestr(archive.read(name).decode())
    declared = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert {"http", "tracing", "ray"} | {module.extra for module in RUNTIMES.values()} <= set(declared)
    assert sorted(metadata.get_all("Provides-Extra") or []) == sorted(declared)
    required = [Requirement(text) for text in metadata.get_all("Requires-Dist") or []]
    for extra, requirements in declared.items():
        wanted = {str(Requirement(text)) for text in requirements}
        marked = [r for r in required if r.marker is not None and r.marker.evaluate({"extra": extra})]
        shipped = {str(r).partition(";")[0] for r in marked}
        assert shipped == wanted, extra


def test_new_from_a_model_file_depends_on_the_runtimes_extra(tmp_path: Path) -> None:
    """What `new --from` writes (no lock here: the slow test below installs one and runs it)."""
    file, _ = TRAINERS["sklearn"](tmp_path, iris()[0][:1])
    wheel = tmp_path / "grpc_model-0.1.0-py3-none-any.whl"
    wheel.write_bytes(b"stands in for the wheel: only its name is read")
    served = ServedFile(tmp_path / file, sample_csv(tmp_path / "rows.csv"), trusted=True)
    made = tmp_path / "iris"
    inputs, outputs = file_specs(None, None)
    create_project(made, "Iris", "0.1.0", inputs, outputs, "me", wheel, served)
    assert 'dependencies = ["grpc-model[sklearn] (>=0.1.0,<0.2.0)"]' in (made / "pyproject.toml").read_text()
    spec = yaml.safe_load((made / "asset_bundle/0.1.0/model.yaml").read_text())
    assert (spec["runtime"]["kind"], spec["runtime"]["file"], spec["runtime"]["trusted"]) == ("sklearn", file, True)
    assert (made / "asset_bundle/0.1.0/test_cases/0001-rows/results.json").is_file()
    assert not (made / "model_lib/src/model.py").exists()  # no wrapper to fill in: the runtime serves the file


def test_new_from_a_pickle_needs_trusted_and_leaves_nothing_behind(tmp_path: Path) -> None:
    file, _ = TRAINERS["sklearn"](tmp_path, iris()[0][:1])
    wide = {"COLUMNS": "200"}
    refused = CliRunner().invoke(app, ["new", str(tmp_path / "p"), "--from", str(tmp_path / file)], env=wide)
    assert refused.exit_code == 2
    assert "pass --trusted if you trust where it came from" in refused.output
    assert not (tmp_path / "p").exists()
    both = CliRunner().invoke(
        app, ["new", str(tmp_path / "p"), "--from", str(tmp_path / file), "--input", "a.txt=text/plain"], env=wide
    )
    assert both.exit_code == 2
    assert "drop --input/--output" in both.output
    assert not (tmp_path / "p").exists()


def test_the_project_holds_the_model_and_none_of_the_framework(
    project: Path, wheel: Path, author_env: dict[str, str]
) -> None:
    files = {
        path.relative_to(project).as_posix()
        for path in project.rglob("*")
        if path.is_file() and not {".venv", "__pycache__", ".pytest_cache"} & set(path.relative_to(project).parts)
    }
    assert {name.split("/")[0] for name in files} == {
        *(".ci", ".dockerignore", ".gitignore", "Dockerfile", "README.md", "asset_bundle", "model_lib"),
        *("poetry.lock", "poetry.toml", "pyproject.toml", "wheels"),
    }
    assert {name for name in files if name.startswith("wheels/")} == {"wheels/README.md", f"wheels/{wheel.name}"}
    model_lib = {name for name in files if name.startswith("model_lib/")}
    assert model_lib == {
        *("model_lib/__init__.py", "model_lib/src/__init__.py", "model_lib/src/model.py"),
        *("model_lib/tests/__init__.py", "model_lib/tests/test_model.py"),
    }  # no copy of the contract: the model imports grpc_model.wrapper
    assert "from grpc_model.wrapper import" in (project / "model_lib/src/model.py").read_text()
    # The framework the project runs is the wheel's, installed in the project's own environment.
    where = run(["python", "-c", "import grpc_model; print(grpc_model.__file__)"], project, author_env)
    assert Path(where.strip()).is_relative_to(project / ".venv")
    assert 'dependencies = ["grpc-model (>=0.1.0,<0.2.0)"]' in (project / "pyproject.toml").read_text()


def test_grpc_model_test_passes_in_the_project(project: Path, author_env: dict[str, str]) -> None:
    output = run(["grpc-model", "test"], project, author_env)
    assert "PASS in-process: 0001-two-words" in output


def test_the_project_serves_and_passes_its_cases_against_the_server(project: Path, author_env: dict[str, str]) -> None:
    server = ServerProcess(
        ["--port", "0", "--metrics-port", "0"], env=author_env, command=["grpc-model", "serve"], cwd=project
    )
    try:
        with server.client(seconds=3 * PATIENCE_SECONDS) as client:
            status = client.status()
            assert (status.status_code, status.model_info.model_name) == (200, NAME)
            target = f"127.0.0.1:{server.port}"
            run(["grpc-model", "status", target], project, author_env)
            assert "PASS 127.0.0.1" in run(["grpc-model", "test", "--server", target], project, author_env)
            item = "input.txt=asset_bundle/0.1.0/test_cases/0001-two-words/input.txt"
            called = run(["grpc-model", "call", target, "--input", item], project, author_env)
            assert '"input.txt": 11' in called
            client.shutdown()
        assert server.wait() == 0
    finally:
        server.close()


def test_the_release_commands_work_in_a_copy_of_the_project(
    project: Path, author_env: dict[str, str], tmp_path: Path
) -> None:
    copy = Path(shutil.copytree(project, tmp_path / "copy", ignore=shutil.ignore_patterns(".venv")))
    run(["grpc-model", "validate"], copy, author_env)
    run(["grpc-model", "new-version", "0.2.0", "--keep-test-cases"], copy, author_env)
    assert run(["grpc-model", "version"], copy, author_env).strip() == "0.2.0"
    run(["grpc-model", "k8s"], copy, author_env)
    assert (copy / "deploy/kubernetes/base/kustomization.yaml").is_file()
    assert "PASS in-process: 0001-two-words" in run(["grpc-model", "test"], copy, author_env)


def test_a_project_from_a_model_file_passes_its_test_with_the_runtime_served(
    runtime_project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PYTHONPATH", raising=False)
    env = activated(runtime_project)
    assert 'dependencies = ["grpc-model[sklearn] (>=0.1.0,<0.2.0)"]' in (runtime_project / "pyproject.toml").read_text()
    output = run(["grpc-model", "test"], runtime_project, env)
    assert "PASS in-process: 0001-rows" in output  # the library's own answers on the sample, from the runtime
    installed = "import importlib.util as u; print([bool(u.find_spec(m)) for m in ('sklearn', 'onnxruntime')])"
    assert run(["python", "-c", installed], runtime_project, env).strip() == "[True, False]"  # the extra, no other


@pytest.mark.skipif(MODE != "docker", reason="no container engine (scripts/dev.sh test provisions one where it can)")
@pytest.mark.usefixtures("container_engine")
def test_the_projects_image_passes_and_builds(runtime_project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The project's Dockerfile installs the locked dependency, and with it the runtime's extra (the image's server
    answers the test case with scikit-learn's own answer); `grpc-model build` then tags the release image. One
    project for both: the word-stats project's image differs only in the wheel's extra, and each image is a minute of
    installs on this machine whenever the framework changes (docs/testing.md)."""
    monkeypatch.delenv("PYTHONPATH", raising=False)
    env = activated(runtime_project)
    with socket.socket() as probe:  # the image test publishes a concrete port: 45000 may be taken
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    run(["grpc-model", "test", "--image"], runtime_project, {**env, "PSC_MODEL_PORT": str(port)})
    tag = "grpc-model-project-test:0.1.0"
    engine = subprocess.run(
        ["bash", str(PROJECT_ROOT / "scripts/container_engine.sh")], capture_output=True, text=True, check=True
    ).stdout
    engine_env = {**env, **dict(pair.partition("=")[::2] for line in engine.splitlines() for pair in line.split()[1:])}
    try:
        assert f"built: {tag}" in run(["grpc-model", "build", "--tag", tag], runtime_project, env)
        run(["docker", "image", "inspect", tag], runtime_project, engine_env, seconds=60)
    finally:
        subprocess.run(["docker", "rmi", "-f", tag], env=engine_env, capture_output=True, check=False, timeout=60)
