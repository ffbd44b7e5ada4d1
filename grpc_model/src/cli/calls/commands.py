"""The commands that call one running server: `status` and `call`, with their transport security options.

Registered on the `grpc-model` app by app.py; gRPC is imported when one runs, so the others start quickly.
"""

from pathlib import Path
from typing import Annotated

import typer

from grpc_model.src.cli.client_options import (
    ModelName,
    ModelVersion,
    SecurityOptions,
    Tls,
    TlsCa,
    TlsCert,
    TlsKey,
    TlsServerName,
    Token,
    client_security,
    model_route,
)
from grpc_model.src.cli.output import console

TargetArgument = Annotated[str, typer.Argument(metavar="HOST:PORT", help="The server.")]


def status(
    target: TargetArgument = "localhost:45000",
    timeout: Annotated[float, typer.Option(help="Seconds per call.")] = 30.0,
    model_name: ModelName = None,
    model_version: ModelVersion = None,
    tls: Tls = False,
    tls_ca: TlsCa = None,
    tls_cert: TlsCert = None,
    tls_key: TlsKey = None,
    tls_server_name: TlsServerName = None,
    token: Token = None,
) -> None:
    """Show a server's Status answer (of --model-name on a server of several) and health (and that model's); exit
    0 only if Status is 200 and health SERVING.

    Example: `grpc-model status localhost:45000`
    """
    from grpc_model.src.cli.calls import remote  # gRPC, only when calling a server

    route = model_route(model_name, model_version)
    security = client_security(SecurityOptions(tls, tls_ca, tls_cert, tls_key, tls_server_name, token))
    raise typer.Exit(remote.show_status(console, target, timeout, security, route))


def call(
    target: TargetArgument = "localhost:45000",
    inputs: Annotated[
        list[str] | None, typer.Option("--input", help="An input file of the item, NAME=PATH; repeat for more.")
    ] = None,
    output_dir: Annotated[
        Path | None, typer.Option(help="Write the output files here instead of printing them.")
    ] = None,
    detect_drift: Annotated[bool, typer.Option(help="Set detect_drift on the call.")] = False,
    explain: Annotated[bool, typer.Option(help="Set explain on the call.")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds for the call.")] = 60.0,
    model_name: ModelName = None,
    model_version: ModelVersion = None,
    tls: Tls = False,
    tls_ca: TlsCa = None,
    tls_cert: TlsCert = None,
    tls_key: TlsKey = None,
    tls_server_name: TlsServerName = None,
    token: Token = None,
) -> None:
    """Send one item to a server (to --model-name on a server of several) and print (or write) its outputs; exit 0
    only if the item succeeded.

    Example: `grpc-model call localhost:45000 --input input.txt=hello.txt`
    """
    from grpc_model.src.cli.calls import remote  # gRPC, only when calling a server

    route = model_route(model_name, model_version)
    security = client_security(SecurityOptions(tls, tls_ca, tls_cert, tls_key, tls_server_name, token))
    raise typer.Exit(
        remote.call_once(console, target, inputs or [], output_dir, detect_drift, explain, timeout, security, route)
    )
