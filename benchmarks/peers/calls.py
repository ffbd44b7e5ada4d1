"""What every peer module shares: how a started peer is described, its calls, and its readiness probes."""

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import grpc

from benchmarks import v2_profile
from benchmarks.http_load import Check, json_caller
from benchmarks.load import Call
from benchmarks.processes import Launched

Caller = Callable[[int], AbstractAsyncContextManager[Call]]
"""Given the number of concurrent callers, a context in which one call can be made by all of them."""

PAYLOAD = v2_profile.PAYLOAD.decode()
"""One item, the same 64 bytes as the V2 profile's; a JSON string for the HTTP peers."""


@dataclass
class Started:
    """A peer serving one profile in one variant: its process, and a caller per protocol it answers on."""

    server: Launched
    callers: dict[str, Caller] = field(default_factory=dict)


def grpc_caller(target: str, protocol: str, model: str) -> Caller:
    """`v2_profile.callers`' call of `protocol` ("ModzyModel Run" or "V2 ModelInfer"), over one channel."""

    @asynccontextmanager
    async def caller(concurrency: int) -> AsyncIterator[Call]:
        async with grpc.aio.insecure_channel(target) as channel:
            yield v2_profile.callers(channel, model)[protocol]

    return caller


def http_caller(url: str, body: Any, check: Check) -> Caller:
    def caller(concurrency: int) -> AbstractAsyncContextManager[Call]:
        return json_caller(url, body, check, concurrency)

    return caller


def answered(answer: Any) -> bool:
    """Whether an HTTP peer's JSON answer echoes the payload: `{"output": PAYLOAD}`."""
    return isinstance(answer, dict) and answer.get("output") == PAYLOAD


def v2_rest_caller(base_url: str, model: str) -> Caller:
    """V2 REST inference with one BYTES element, as JSON (what a curl user sends)."""
    body = {"inputs": [{"name": "input.bin", "datatype": "BYTES", "shape": [1], "data": [PAYLOAD]}]}
    return http_caller(f"{base_url}/v2/models/{model}/infer", body, v2_answered)


def v2_answered(answer: Any) -> bool:
    """Whether a V2 REST answer has the one output tensor (an `{"error": ...}` answer has none)."""
    return isinstance(answer, dict) and isinstance(answer.get("outputs"), list) and len(answer["outputs"]) == 1
