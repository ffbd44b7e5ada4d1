"""MLServer, for benchmarks/v2_profile.py and the peer comparison: the profiles as MLServer custom runtimes,
in its own venv.

MLServer pins protobuf below 7 and an older FastAPI, so it cannot share the project's environment:
`--mlserver PATH` names the `mlserver` command of a virtual environment of its own (see docs/v2.md);
the peer comparison makes one (benchmarks/peers/venvs.py).
"""

import json
from pathlib import Path
from typing import Any

from benchmarks.peers.probes import v2_grpc_ready
from benchmarks.peers.profiles import burn_cpu_source
from benchmarks.processes import Launched, free_port

# The runtimes, written into the model folder MLServer loads (it runs them; this project's code does not
# import mlserver). `Device` awaits 20 ms per batch call without blocking the loop, as a device would;
# `OneDevice` is one such device, taking one batch call at a time; `Cpu` burns 5 ms of Python per item.
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


class OneDevice(Echo):
    async def load(self) -> bool:
        self.device = asyncio.Lock()
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        async with self.device:
            await asyncio.sleep(0.020)
        return await super().predict(payload)


class Cpu(Echo):
    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        for _ in range(payload.inputs[0].shape[0]):
            burn_cpu()
        return await super().predict(payload)
"""
# profile -> model-settings.json: Echo alone, Device with MLServer's adaptive batching
MODELS: dict[str, dict[str, Any]] = {
    "echo": {"name": "echo", "implementation": "runtime.Echo"},
    "device": {"name": "device", "implementation": "runtime.Device", "max_batch_size": 32, "max_batch_time": 0.005},
}


def runtime_source(cpu_iterations: int) -> str:
    return f"{RUNTIME}\n\n{burn_cpu_source(cpu_iterations)}"


class MLServer:
    """`mlserver start` serving one model on free loopback ports (gRPC and REST), answering once `__init__`
    returns. `settings` are added to settings.json (in-process inference, debug off, unless they say otherwise);
    `model_settings` replace the profile's model-settings.json."""

    def __init__(
        self,
        command: str,
        profile: str,
        directory: Path,
        settings: dict[str, Any] | None = None,
        model_settings: dict[str, Any] | None = None,
        cpu_iterations: int = 100_000,
        log_name: str = "",
    ) -> None:
        model = model_settings or MODELS[profile]
        self.model = str(model["name"])
        folder = directory / profile
        folder.mkdir(parents=True)
        (folder / "runtime.py").write_text(runtime_source(cpu_iterations))
        (folder / "model-settings.json").write_text(json.dumps(model))
        self.port, self.http_port = free_port(), free_port()
        server_settings = {  # in-process inference, as grpc-model runs these profiles
            "host": "127.0.0.1", "grpc_port": self.port, "http_port": self.http_port, "metrics_port": free_port(),
            "parallel_workers": 0, "debug": False, **(settings or {}),
        }  # fmt: skip
        (directory / "settings.json").write_text(json.dumps(server_settings))
        if "/" in command:  # a path: it runs from `directory`
            command = str(Path(command).absolute())
        self.server = Launched(
            [command, "start", str(directory)],
            log_name or f"mlserver-{profile}",
            v2_grpc_ready(self.target, self.model),
            cwd=directory,
        )

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.stop()
