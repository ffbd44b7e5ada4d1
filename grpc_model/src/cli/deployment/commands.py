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
    check: Annotated[
        bool,
        typer.Option("--check", help="Write nothing; exit 1 if the files there differ from what would be written."),
    ] = False,
) -> None:
    """Deployment step: write the Kubernetes manifests of the served model (a kustomize base and overlays for
    an HPA, KEDA, KServe) from its model.yaml; run it again whenever model.yaml changes.

    Example: `grpc-model k8s && kubectl apply -k deploy/kubernetes/overlays/hpa`
    """
    from grpc_model.src.cli.deployment import kubernetes_layout as layout
    from grpc_model.src.cli.deployment.kubernetes import Target, default_image

    settings = settings_from_env()
    out = out or project_dir() / "deploy" / "kubernetes"
    try:
        bundle = load_bundle(settings.asset_bundle_dir, settings.model_version)
    except BundleError as error:
        raise fail(str(error)) from None
    files = layout.render(Target(bundle, settings, image or default_image(bundle), replicas))
    if check:
        stale = layout.stale_files(out, files)
        for name in stale:
            errors.print(f"[red]stale:[/red] {escape(shown(out / name))}")
        if stale:
            raise fail(f"{shown(out)} is not what model.yaml gives: run `grpc-model k8s` and commit the result")
        console.print(f"[green]up to date:[/green] {escape(shown(out))} ({len(files)} files)")
        return
    for path in layout.write(out, files):
        console.print(f"  wrote {escape(shown(path))}")
    console.print(f"Next: `kubectl apply -k {escape(shown(out))}/overlays/hpa` (docs/deploy.md)")


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
