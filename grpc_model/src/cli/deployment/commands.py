"""Running the model: `serve`, `ray-serve` and `k8s`; registered on the app by app.py. The server, Ray and the
manifests' code are imported when their command runs, so the other commands start quickly.
"""

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from grpc_model.src.cli.output import USAGE, console, errors, fail, settings_from_env, shown
from grpc_model.src.metadata import BundleError, load_bundle
from grpc_model.src.settings import project_dir


def kubernetes(
    out: Annotated[
        Path | None,
        typer.Option(help="Where to write the kustomize base and overlays; default: deploy/kubernetes in the project."),
    ] = None,
    image: Annotated[
        str | None,
        typer.Option(help="The image to run; default: from docker_metadata.yaml, tagged with the served version."),
    ] = None,
    replicas: Annotated[int, typer.Option(min=1, help="Replicas without an autoscaler.")] = 2,
    repository: Annotated[
        Path | None,
        typer.Option(
            metavar="DIR",
            help="Write a repository server's manifests instead, for every model of DIR (a folder per model), "
            "and the Dockerfile of its image (image/Dockerfile); needs --image. Default --out: "
            "deploy/kubernetes-repository.",
        ),
    ] = None,
    max_loaded_models: Annotated[
        int,
        typer.Option(
            min=0,
            help="With --repository: the server keeps at most N models loaded, and the pod's resources are the sum "
            "of the N largest models' instead of every model's. 0: every model loaded.",
        ),
    ] = 0,
    check: Annotated[
        bool,
        typer.Option("--check", help="Write nothing; exit 1 if the files there differ from what would be written."),
    ] = False,
) -> None:
    """Deployment step: write the Kubernetes manifests of the served model (a kustomize base and overlays for
    an HPA, KEDA, KServe) from its model.yaml, or with --repository those of a server of many models; run it again
    whenever a model.yaml changes.

    Example: `grpc-model k8s && kubectl apply -k deploy/kubernetes/overlays/hpa`
    """
    from grpc_model.src.cli.deployment import kubernetes_layout as layout
    from grpc_model.src.cli.deployment.kubernetes import Target, default_image
    from grpc_model.src.cli.deployment.kubernetes_repository import repository_target

    if max_loaded_models and repository is None:
        raise fail("--max-loaded-models is a repository server's budget: add --repository DIR", USAGE)
    if repository is not None and image is None:
        raise fail("--repository needs --image: the image its image/Dockerfile builds (docs/deploy.md)", USAGE)
    settings = settings_from_env()
    folder = "kubernetes" if repository is None else "kubernetes-repository"
    out = out or project_dir() / "deploy" / folder
    try:
        if repository is not None and image is not None:
            target = repository_target(repository, settings, image, replicas, max_loaded_models)
        else:
            bundle = load_bundle(settings.asset_bundle_dir, settings.model_version)
            target = Target((bundle,), settings, image or default_image(bundle), replicas)
    except BundleError as error:
        raise fail(str(error)) from None
    files = layout.render(target)
    if check:
        stale = layout.stale_files(out, files)
        for name in stale:
            errors.print(f"[red]stale:[/red] {escape(shown(out / name))}")
        if stale:
            again = "grpc-model k8s" + (f" --repository {repository}" if repository is not None else "")
            raise fail(f"{shown(out)} is not what model.yaml gives: run `{again}` and commit the result")
        console.print(f"[green]up to date:[/green] {escape(shown(out))} ({len(files)} files)")
        return
    for path in layout.write(out, files):
        console.print(f"  wrote {escape(shown(path))}")
    build = f"build and push the image as {shown(out / 'image/Dockerfile')} says, then " if repository else ""
    console.print(f"Next: {escape(build)}`kubectl apply -k {escape(shown(out))}/overlays/hpa` (docs/deploy.md)")


def serve(ctx: typer.Context) -> None:
    """Serve the model, or every model of a repository with --repository DIR (the flags of
    python -m grpc_model.src.model_server; see grpc-model serve --help, and docs/repository.md).

    Example: `grpc-model serve --port 45000 --workers 2`
    """
    from grpc_model.src import model_server  # the server's imports, only when serving

    raise typer.Exit(model_server.main(ctx.args, prog="grpc-model serve"))


def ray_serve(ctx: typer.Context) -> None:
    """Serve the model on Ray Serve behind Ray's gRPC proxy (the flags of serve, plus the ray_* settings; needs
    the `ray` extra; see docs/deploy.md).

    Example: `grpc-model ray-serve --port 45000 --ray-replicas 2`
    """
    try:
        from grpc_model.src.ray_serve import command  # Ray, only when serving on it
    except ImportError as error:
        raise fail(f"Ray Serve is not installed ({error}): the `ray` extra, docs/package.md", USAGE) from None

    raise typer.Exit(command.main(ctx.args))
