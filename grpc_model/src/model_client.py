"""Reference client: `python -m grpc_model.src.model_client [options]` (see `--help`).

Without input options it runs every functional test case of the served version and
exits non-zero if any item fails or any output differs from the expected files.
"""

import argparse
import dataclasses
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import grpc
from pydantic import ValidationError

from grpc_model.src.client import (
    InputError,
    ModelClient,
    ModelRoute,
    RouteError,
    check_test_case,
    read_inputs,
    render,
)
from grpc_model.src.metadata import BundleError, load_bundle, load_test_case
from grpc_model.src.security.channel import CLIENT_ENV, ClientSecurity, ClientSecurityError
from grpc_model.src.settings import Settings, describe_settings_error


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        target, security = _local_server(args) if args.local else (f"{args.host}:{args.port}", _security(args))
        route = ModelRoute(args.model_name, args.model_version)
        client = ModelClient(target, timeout=args.timeout, security=security, route=route)
    except ValidationError as error:
        print(f"error: invalid settings in the environment:\n{describe_settings_error(error)}", file=sys.stderr)
        return 2
    except (ClientSecurityError, RouteError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    with client:
        try:
            return _main(client, args)
        except grpc.RpcError as error:
            print(f"error: {error.code().name}: {error.details()}", file=sys.stderr)
            return 1
        except (BundleError, InputError, OSError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 2


def _main(client: ModelClient, args: argparse.Namespace) -> int:
    if args.health:
        answer = client.wait_for_health("SERVING", args.wait, service=args.model_name or "")
        print(answer)
        return 0 if answer == "SERVING" else 1
    if args.shutdown:
        shutdown = client.shutdown(args.shutdown_token)
        print(f"Shutdown: {shutdown.status_code} {shutdown.status}: {shutdown.message}")
        return 0 if shutdown.status_code == 200 else 1

    status = client.status()
    print(f"Status: {status.status_code} {status.status}: {status.message}")
    if status.status_code != 200:
        return 1
    info = status.model_info
    print(
        f"Model: {info.model_name} {info.model_version} by {info.model_author}; max batch {status.features.batch_size}"
    )
    input_names = [model_input.filename for model_input in status.inputs]
    output_names = [model_output.filename for model_output in status.outputs]
    if args.input:
        return _run_inputs(client, args, read_inputs(args.input, input_names))
    if not args.test_case and args.model_name is not None and not _is_this_project(info.model_name):
        print(
            f"error: the server's model {info.model_name!r} is not this project's: pass its --test-case DIRs",
            file=sys.stderr,
        )
        return 2
    cases = args.test_case or _bundled_cases(info.model_version)
    if not cases:
        print("error: no test cases found; pass --input NAME=PATH or --test-case DIR", file=sys.stderr)
        return 2
    failed = 0
    for path in cases:
        case = load_test_case(path, input_names, output_names)
        case = dataclasses.replace(
            case, detect_drift=case.detect_drift or args.detect_drift, explain=case.explain or args.explain
        )
        problems = check_test_case(client, case, args.batch_size)
        print(f"{'PASS' if not problems else 'FAIL'} {path.name} (batch size {args.batch_size})")
        for problem in problems:
            print(f"    {problem}")
        failed += bool(problems)
    print(f"{len(cases) - failed} of {len(cases)} test cases passed")
    return 1 if failed else 0


def _run_inputs(client: ModelClient, args: argparse.Namespace, item: Mapping[str, bytes]) -> int:
    response = client.run([item] * args.batch_size, args.detect_drift, args.explain)
    print(f"Run: {response.status_code} {response.status}: {response.message}")
    for index, output in enumerate(response.outputs):
        print(f"item {index + 1}: {'success' if output.success else 'FAILED'}")
        for name, content in output.output.items():
            print(f"  {name}: {render(content)}")
    return 0 if response.outputs and all(output.success for output in response.outputs) else 1


def _security(args: argparse.Namespace) -> ClientSecurity:
    return ClientSecurity.from_env(
        args.tls,
        tls_ca=args.tls_ca,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        tls_server_name=args.tls_server_name,
        token=args.token,
    )


def _local_server(args: argparse.Namespace) -> tuple[str, ClientSecurity]:
    """The server this environment's settings describe, as the image's HEALTHCHECK reaches it: its
    plaintext health port when it has one, else its gRPC port with the client's TLS options."""
    settings = Settings()  # raises ValidationError for broken settings
    if settings.health_port:
        return f"127.0.0.1:{settings.health_port}", ClientSecurity()
    return f"127.0.0.1:{settings.port}", _security(args)


def _is_this_project(model_name: str) -> bool:
    """Whether the model a server of several answered for is the one this project's bundle describes."""
    settings = Settings()
    return load_bundle(settings.asset_bundle_dir, settings.model_version).spec.name == model_name


def _bundled_cases(version: str) -> list[Path]:
    root = Settings().asset_bundle_dir / version / "test_cases"  # the served bundle's, as the server finds it
    return sorted(path for path in root.iterdir() if path.is_dir()) if root.is_dir() else []


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m grpc_model.src.model_client",
        description="Call a ModzyModel server. By default, check every functional test case of the served version.",
    )
    parser.add_argument("--host", default="localhost", help="server host (default: localhost)")
    parser.add_argument("--port", type=int, default=45000, help="server port (default: 45000)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per call (default: 60)")
    parser.add_argument(
        "--local",
        action="store_true",
        help="the server of this environment's GRPC_MODEL_ settings on 127.0.0.1: its health_port if set, "
        "else its port (the image's HEALTHCHECK)",
    )
    route = parser.add_argument_group("the model, on a server of several (call metadata x-model-name, x-model-version)")
    route.add_argument("--model-name", metavar="NAME", help="the model to call (default: the server's default model)")
    route.add_argument(
        "--model-version", metavar="X.Y.Z", help="its version (default: the newest the server has loaded)"
    )
    _add_security_arguments(parser)
    parser.add_argument(
        "--input", action="append", metavar="NAME=PATH", help="an input file of one item, e.g. input.txt=hello.txt"
    )
    parser.add_argument("--test-case", action="append", type=Path, metavar="DIR", help="a test-case directory")
    parser.add_argument("--batch-size", type=int, default=1, help="send the item N times in one Run call")
    parser.add_argument("--detect-drift", action="store_true", help="set detect_drift on the Run call")
    parser.add_argument("--explain", action="store_true", help="set explain on the Run call")
    parser.add_argument(
        "--health",
        action="store_true",
        help="print the health status (with --model-name, that model's); exit 0 only if SERVING",
    )
    parser.add_argument("--wait", type=float, default=0.0, help="with --health: seconds to wait for SERVING")
    parser.add_argument("--shutdown", action="store_true", help="ask the server to shut down")
    parser.add_argument(
        "--shutdown-token",
        default=os.environ.get("GRPC_MODEL_SHUTDOWN_TOKEN"),
        help="with --shutdown: the server's token (default: $GRPC_MODEL_SHUTDOWN_TOKEN)",
    )
    return parser


def _add_security_arguments(parser: argparse.ArgumentParser) -> None:
    tls = parser.add_argument_group("transport security (each option falls back to its environment variable)")
    tls.add_argument("--tls", action="store_true", help="speak TLS, trusting the system's root certificates")
    tls.add_argument("--tls-ca", metavar="PEM", help=f"speak TLS, trusting this CA file (${CLIENT_ENV['tls_ca']})")
    tls.add_argument("--tls-cert", metavar="PEM", help=f"client certificate for mutual TLS (${CLIENT_ENV['tls_cert']})")
    tls.add_argument("--tls-key", metavar="PEM", help=f"its private key (${CLIENT_ENV['tls_key']})")
    tls.add_argument(
        "--tls-server-name",
        metavar="NAME",
        help=f"the name the server's certificate carries, if not the host (${CLIENT_ENV['tls_server_name']})",
    )
    tls.add_argument("--token", help=f"bearer token for a server that requires one; needs TLS (${CLIENT_ENV['token']})")


if __name__ == "__main__":
    sys.exit(main())
