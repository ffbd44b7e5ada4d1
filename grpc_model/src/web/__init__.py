"""HTTP beside gRPC: the hosting (FastAPI on uvicorn), the browser page and the multipart endpoint.

FastAPI, uvicorn and python-multipart come from the package's optional `http` extra. This module
imports none of them, so the wiring can decide whether to serve HTTP on a server without them.
"""

import importlib.util
import logging

logger = logging.getLogger(__name__)

HTTP_MODULES = ("fastapi", "fastapi_offline", "uvicorn", "python_multipart")
INSTALL_HINT = (
    "install the optional `http` extra: depend on `grpc-model[http]` (docs/package.md), or in the template "
    "repository `scripts/dev.sh install --add http` (for its image, `--build-arg POETRY_EXTRAS=http`)"
)


class HttpUnavailableError(Exception):
    """HTTP was asked for (`http=on`) but the `http` extra is not installed."""


def missing_http_modules() -> list[str]:
    return [name for name in HTTP_MODULES if importlib.util.find_spec(name) is None]


def serves_http(mode: str) -> bool:
    """Whether to serve HTTP under the `http` setting; raises HttpUnavailableError for `on` without the group."""
    if mode == "off":
        return False
    missing = missing_http_modules()
    if not missing:
        return True
    if mode == "on":
        raise HttpUnavailableError(f"http is 'on' but {', '.join(missing)} cannot be imported: {INSTALL_HINT}")
    logger.info("HTTP is off: the `http` extra is not installed; to serve it, %s", INSTALL_HINT)
    return False
