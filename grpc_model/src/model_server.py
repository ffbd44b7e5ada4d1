"""Entry point: `python -m grpc_model.src.model_server [--flags]` (see `--help`)."""

import asyncio
import logging
import sys
from collections.abc import Sequence

from pydantic import ValidationError

from grpc_model.src.metadata import BundleError
from grpc_model.src.observability import logs, tracing
from grpc_model.src.runtime import WrapperImportError
from grpc_model.src.security.auth import AuthSetupError
from grpc_model.src.security.limits import LimitsSetupError
from grpc_model.src.security.tls import TLSSetupError
from grpc_model.src.server import ListenError, serve
from grpc_model.src.settings import describe_settings_error, settings_from_args


def main(argv: Sequence[str] | None = None, prog: str = "python -m grpc_model.src.model_server") -> int:
    try:
        settings = settings_from_args(argv, prog)
    except ValidationError as error:
        print(f"invalid settings:\n{describe_settings_error(error)}", file=sys.stderr)
        return 2
    logs.configure(settings.log_level, settings.log_format)
    try:
        tracing.configure(settings.tracing)  # before the model loads: worker processes trace as the server does
        asyncio.run(serve(settings))
    except (
        BundleError,
        WrapperImportError,
        ListenError,
        tracing.TracingUnavailableError,
        TLSSetupError,
        AuthSetupError,
        LimitsSetupError,
    ) as error:
        logging.getLogger("grpc_model").critical("cannot start: %s", error)
        return 2
    finally:
        tracing.shutdown()  # exports the spans still buffered
    return 0


if __name__ == "__main__":
    sys.exit(main())
