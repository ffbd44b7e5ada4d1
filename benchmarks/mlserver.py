"""MLServer, for benchmarks/v2_profile.py: the same two profiles as MLServer custom runtimes, in its own venv.

MLServer pins protobuf below 7 and an older FastAPI, so it cannot share the project's environment:
`--mlserver PATH` names the `mlserver` command of a virtual environment of its own (see docs/v2.md).
"""

import json
import subprocess
import time
from pathlib import Path

import grpc

from benchmarks.processes import LOGS, free_port
from grpc_model.src.auto_generated.v2 import grpc_predict_v2_pb2 as v2
from grpc_model.src.auto_generated.v2.grpc_predict_v2_pb2_grpc import GRPCInferenceServiceStub

# The runtimes, written into the model folder MLServer loads (it runs them; this project's code does not
# import mlserver). `device` awaits 20 ms per batch call without blocking the loop, as a device would.
RUNTIME = """
import asyncio

from mlserver import MLModel
from mlserver.types import InferenceRequest, InferenceResponse, ResponseOutput


class Echo(MLModel):
    async def load(self) -> bool:
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        outputs = [
            ResponseOutput(name="output.bin", datatype="BYTES", shape=tensor.shape, data=tensor.data)
            for tensor in payload.inputs
        ]
        return InferenceResponse(model_name=self.name, outputs=outputs)


class Device(Echo):
    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        await asyncio.sleep(0.020)
        return await super().predict(payload)
"""
MODELS = {  # profile -> model-settings.json: Echo alone, Device with MLServer's adaptive batching
    "echo": {"name": "echo", "implementation": "runtime.Echo"},
    "device": {"name": "device", "implementation": "runtime.Device", "max_batch_size": 32, "max_batch_time": 0.005},
}


class MLServer:
    """`mlserver start` serving one profile's model on free loopback ports, answering once `__init__` returns."""

    def __init__(self, command: str, profile: str, directory: Path) -> None:
        self.model = profile
        folder = directory / profile
        folder.mkdir(parents=True)
        (folder / "runtime.py").write_text(RUNTIME)
        (folder / "model-settings.json").write_text(json.dumps(MODELS[profile]))
        self.port = free_port()
        settings = {  # in-process inference, as grpc-model runs these profiles
            "host": "127.0.0.1", "grpc_port": self.port, "http_port": free_port(), "metrics_port": free_port(),
            "parallel_workers": 0, "debug": False,
        }  # fmt: skip
        (directory / "settings.json").write_text(json.dumps(settings))
        LOGS.mkdir(parents=True, exist_ok=True)
        with open(LOGS / f"mlserver-{profile}.log", "wb") as log:
            self.process = subprocess.Popen(
                [command, "start", str(directory)], cwd=directory, stdout=log, stderr=subprocess.STDOUT
            )
        self._wait_until_ready()

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _wait_until_ready(self, seconds: float = 120) -> None:
        deadline = time.monotonic() + seconds
        with grpc.insecure_channel(self.target) as channel:
            stub = GRPCInferenceServiceStub(channel)
            while time.monotonic() < deadline and self.process.poll() is None:
                try:
                    if stub.ModelReady(v2.ModelReadyRequest(name=self.model), timeout=5).ready:
                        return
                except grpc.RpcError:
                    pass
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"MLServer did not serve {self.model} within {seconds:g} s; see {LOGS}")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
