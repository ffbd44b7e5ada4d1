"""The `grpc-model score` command; registered on the app by app.py. gRPC and the scoring run (score.py) are
imported when it runs, so the other commands start quickly.
"""

import asyncio
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
from grpc_model.src.cli.output import USAGE, console, errors, fail, settings_from_env


def score(
    inputs: Annotated[
        Path, typer.Argument(help="A folder (a file or a subfolder per item), a .jsonl or a .csv file of items.")
    ],
    out: Annotated[Path, typer.Option(help="The results, .jsonl or .csv; run again with the same file to resume.")],
    server: Annotated[
        list[str] | None,
        typer.Option(
            metavar="HOST:PORT",
            help="A server (default localhost:45000); repeat it (or a,b) for several, round robin, "
            "or give one dns:///NAME:PORT target.",
        ),
    ] = None,
    in_process: Annotated[
        bool, typer.Option("--in-process", help="Run the served model in this process instead of calling a server.")
    ] = False,
    batch_size: Annotated[int, typer.Option(min=1, help="Items per Run call.")] = 8,
    concurrency: Annotated[int, typer.Option(min=1, help="Run calls in flight at once.")] = 8,
    timeout: Annotated[float, typer.Option(min=0.001, help="Seconds per call (its deadline).")] = 60.0,
    detect_drift: Annotated[bool, typer.Option(help="Set detect_drift on every call.")] = False,
    explain: Annotated[bool, typer.Option(help="Set explain on every call.")] = False,
    allow_failures: Annotated[bool, typer.Option(help="Exit 0 even if some items failed.")] = False,
    allow_paths_outside: Annotated[
        bool,
        typer.Option(
            help="Read files outside the inputs folder (or the CSV/JSONL file's folder) that links or paths "
            "name; without it they are refused."
        ),
    ] = False,
    model_name: ModelName = None,
    model_version: ModelVersion = None,
    tls: Tls = False,
    tls_ca: TlsCa = None,
    tls_cert: TlsCert = None,
    tls_key: TlsKey = None,
    tls_server_name: TlsServerName = None,
    token: Token = None,
) -> None:
    """Score many items through running servers (or --in-process) into a JSONL or CSV file, resumably.

    Exit code 0 when every item succeeded, 1 if any failed (unless --allow-failures), 2 for bad
    arguments or inputs, 130 after Ctrl-C (everything answered so far is written).

    Example: `grpc-model score images/ --server localhost:45000 --out results.csv`
    """
    import grpc

    from grpc_model.src.cli.scoring import score as scoring  # gRPC, only when scoring
    from grpc_model.src.cli.scoring.backend import Options
    from grpc_model.src.cli.scoring.score_io import ScoreInputError
    from grpc_model.src.client import TargetError, server_list

    if in_process and (model_name is not None or model_version is not None):
        raise fail("--model-name and --model-version choose a model on a server, not with --in-process", USAGE)
    route = model_route(model_name, model_version)
    security = client_security(SecurityOptions(tls, tls_ca, tls_cert, tls_key, tls_server_name, token))
    options = Options(batch_size, concurrency, timeout, detect_drift, explain, security, allow_paths_outside, route)
    settings = settings_from_env()
    local = (settings.model_class, settings.asset_bundle_dir, settings.model_version) if in_process else None
    targets = server_list(server or ["localhost:45000"])
    try:
        tally = asyncio.run(scoring.run_score(console, errors, inputs, out, targets, local, options))
    except (ScoreInputError, TargetError) as error:
        raise fail(str(error), USAGE) from None
    except grpc.aio.AioRpcError as error:
        raise fail(f"{','.join(targets)}: {error.code().name}: {error.details()}") from None
    if tally.interrupted:
        raise typer.Exit(130)
    if tally.failed and not allow_failures:
        raise typer.Exit(1)
