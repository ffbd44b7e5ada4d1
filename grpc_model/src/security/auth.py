"""Optional bearer-token auth: `authorization: Bearer <token>` call metadata (or HTTP header), checked before any
method (or HTTP route) runs.

Tokens are compared in constant time, against every accepted token (no early exit), and are never
logged or echoed. The health service (and HTTP's /v2/health/) stays open, so probes that cannot send
metadata still work.
"""

import hmac
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import grpc

from grpc_model.src.settings import Settings, env_var, flag, token_problem

logger = logging.getLogger(__name__)

AUTHORIZATION = "authorization"
SCHEME = "bearer "
OPEN_SERVICES = ("/grpc.health.v1.Health/",)
"""Method prefixes callable without a token: health, for load balancers and probes."""

Continuation = Callable[[grpc.HandlerCallDetails], Awaitable["grpc.RpcMethodHandler[Any, Any] | None"]]


class AuthSetupError(Exception):
    """A tokens file that cannot be read or holds no token."""


def load_tokens(settings: Settings) -> list[str]:
    """Every accepted token: `auth_token` and the lines of `auth_tokens_file`; empty means no auth."""
    tokens = [settings.auth_token] if settings.auth_token else []
    if settings.auth_tokens_file:
        path = settings.auth_tokens_file
        where = f"set with {flag('auth_tokens_file')} or {env_var('auth_tokens_file')}"
        try:
            lines = Path(path).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as error:
            reason = error.strerror if isinstance(error, OSError) else "not UTF-8 text"
            raise AuthSetupError(f"auth_tokens_file: cannot read {path}: {reason}; {where}") from None
        found = [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]
        for number, line in enumerate(lines, 1):
            if (problem := token_problem(line.strip())) and not line.strip().startswith("#"):
                raise AuthSetupError(f"auth_tokens_file: {path} line {number} {problem}; {where}")
        if not found:
            raise AuthSetupError(f"auth_tokens_file: {path} holds no token (one a line); {where}")
        tokens += found
    return tokens


class TokenCheck:
    """The accepted tokens, and why a call's `authorization` values (gRPC metadata or HTTP headers) are refused."""

    def __init__(self, tokens: Sequence[str]) -> None:
        self._tokens = [token.encode() for token in tokens]

    def refusal(self, values: Sequence[str | bytes]) -> str | None:
        """Why the call may not go on, or None; never says anything about the token sent."""
        if not values:
            return f"this server needs a bearer token: send '{AUTHORIZATION}: Bearer <token>' call metadata"
        value = values[0].encode("utf-8", "surrogatepass") if isinstance(values[0], str) else values[0]
        if len(values) > 1 or value[: len(SCHEME)].lower() != SCHEME.encode():
            return f"the '{AUTHORIZATION}' call metadata must be one 'Bearer <token>'"
        sent = value[len(SCHEME) :].strip()
        matched = False
        for token in self._tokens:  # every token, so the time taken tells nothing about which one is close
            matched |= hmac.compare_digest(sent, token)
        return None if matched else "the bearer token is not valid"


class RefusalLog:
    """Warns of refused calls at most once a window, with how many were refused meanwhile.

    A client with a wrong token that retries in a loop would otherwise write a line per call and bury
    every other line (and fill the disk); the first refusal and a count each window say the same.
    """

    def __init__(self, window_seconds: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._window = window_seconds
        self._clock = clock
        self._next_line_at = float("-inf")
        self._unlogged = 0

    def refused(self, method: str, refusal: str) -> None:
        now = self._clock()
        if now < self._next_line_at:
            self._unlogged += 1
            return
        earlier = f" ({self._unlogged} more refused since the last line)" if self._unlogged else ""
        logger.warning("%s refused: %s%s", method, refusal, earlier)
        self._unlogged = 0
        self._next_line_at = now + self._window


class TokenAuthInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, check: TokenCheck, log: RefusalLog | None = None) -> None:
        self._check = check
        self._log = log or RefusalLog()

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> "grpc.RpcMethodHandler[Any, Any] | None":
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or method.startswith(OPEN_SERVICES):
            return handler
        metadata = handler_call_details.invocation_metadata or ()
        refusal = self._check.refusal([value for key, value in metadata if key == AUTHORIZATION])
        if refusal is None:
            return handler
        self._log.refused(method, refusal)
        return _refusing(handler, refusal)


def _refusing(handler: "grpc.RpcMethodHandler[Any, Any]", message: str) -> "grpc.RpcMethodHandler[Any, Any]":
    """A handler of the same shape as `handler` that answers UNAUTHENTICATED."""

    async def refuse(_: Any, context: "grpc.aio.ServicerContext[Any, Any]") -> Any:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    kind = (handler.request_streaming, handler.response_streaming)
    make = {
        (False, False): grpc.unary_unary_rpc_method_handler,
        (False, True): grpc.unary_stream_rpc_method_handler,
        (True, False): grpc.stream_unary_rpc_method_handler,
        (True, True): grpc.stream_stream_rpc_method_handler,
    }[kind]
    return make(refuse, handler.request_deserializer, handler.response_serializer)
