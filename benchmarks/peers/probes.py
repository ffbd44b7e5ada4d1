"""Readiness probes for `processes.Launched`: whether a peer can take work yet (its cold start ends there)."""

import urllib.error
import urllib.request
from collections.abc import Callable

import grpc

from grpc_model.src.auto_generated.v2 import grpc_predict_v2_pb2 as v2
from grpc_model.src.auto_generated.v2.grpc_predict_v2_pb2_grpc import GRPCInferenceServiceStub


def v2_grpc_ready(target: str, model: str) -> Callable[[], bool]:
    """Whether the V2 server at `target` has `model` loaded; False while it does not answer yet."""

    def ready() -> bool:
        with grpc.insecure_channel(target) as channel:
            try:
                return bool(
                    GRPCInferenceServiceStub(channel).ModelReady(v2.ModelReadyRequest(name=model), timeout=1).ready
                )
            except grpc.RpcError:
                return False

    return ready


def http_ready(url: str) -> Callable[[], bool]:
    """Whether GET `url` answers 200; False while nothing listens or the answer is another status."""

    def ready() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                return int(response.status) == 200
        except (OSError, urllib.error.URLError):
            return False

    return ready
