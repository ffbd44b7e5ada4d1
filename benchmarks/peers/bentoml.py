"""BentoML in the peer comparison: its own HTTP route (POST /predict, JSON in and out), in its own venv.

`default` is a `@bentoml.service` with BentoML's defaults (one worker process, metrics and access logs on),
served by `bentoml serve`; `lean` turns metrics and access logs off. The device profile uses its adaptive
batching (`batchable=True`, `max_batch_size=32`; a call then sends a list of one item and gets a list of one
answer back); the cpu profile runs two worker processes (`workers=2`). API methods are plain `def`s, as in
BentoML's examples: BentoML runs them in its thread pool.
"""

import os
from pathlib import Path

from benchmarks.peers import venvs
from benchmarks.peers.calls import PAYLOAD, Started, answered, http_caller
from benchmarks.peers.probes import http_ready
from benchmarks.peers.profiles import MAX_BATCH, PeerProfile, burn_cpu_source
from benchmarks.processes import Launched, free_port

# {options} configures every service; the one served is named on the command line.
SERVICE = """
import threading
import time

import bentoml


@bentoml.service({options})
class Echo:
    @bentoml.api
    def predict(self, input: str) -> dict:
        return {{"output": input}}


@bentoml.service({options})
class Device:
    def __init__(self) -> None:
        self.device = threading.Lock()

    @bentoml.api(batchable=True, max_batch_size={max_batch})
    def predict(self, input: list[str]) -> list[dict]:
        with self.device:
            time.sleep(0.020)
        return [{{"output": item}} for item in input]


@bentoml.service({options_cpu})
class Cpu:
    @bentoml.api
    def predict(self, input: str) -> dict:
        burn_cpu()
        return {{"output": input}}


{burn_cpu}
"""
PROFILES = {"echo": "Echo", "device": "Device", "cpu": "Cpu"}
VARIANTS = {
    "default": "",
    "lean": 'metrics={"enabled": False}, logging={"access": {"enabled": False}}',
}
PROTOCOLS = ("HTTP",)


def source(variant: str, cpu_iterations: int) -> str:
    """The services, configured for `variant`; `bentoml serve` is told which one to serve."""
    options = VARIANTS[variant]
    options_cpu = ", ".join(option for option in (options, "workers=2") if option)
    return SERVICE.format(
        options=options, options_cpu=options_cpu, max_batch=MAX_BATCH, burn_cpu=burn_cpu_source(cpu_iterations)
    )


def start(profile: PeerProfile, variant: str, directory: Path, cpu_iterations: int) -> Started:
    (directory / "service.py").write_text(source(variant, cpu_iterations))
    port = free_port()
    command = [str(venvs.ensure(venvs.BENTOML)), "serve", f"service:{PROFILES[profile.name]}",
               "--host", "127.0.0.1", "--port", str(port)]  # fmt: skip
    env = {**os.environ, "BENTOML_HOME": str(directory / "home"), "BENTOML_DO_NOT_TRACK": "True"}
    url = f"http://127.0.0.1:{port}"
    server = Launched(command, f"bentoml-{profile.name}-{variant}", http_ready(f"{url}/readyz"), env, directory)
    if profile.name == "device":  # batchable: a list of items in, a list of answers out
        return Started(server, {"HTTP": http_caller(f"{url}/predict", {"input": [PAYLOAD]}, _one_answer)})
    return Started(server, {"HTTP": http_caller(f"{url}/predict", {"input": PAYLOAD}, answered)})


def _one_answer(answer: object) -> bool:
    return isinstance(answer, list) and len(answer) == 1 and answered(answer[0])
