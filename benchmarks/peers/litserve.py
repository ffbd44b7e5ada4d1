"""LitServe in the peer comparison: its own HTTP route (POST /predict, JSON in and out), in its own venv.

`default` is LitServe's documented usage (`LitServer(api, accelerator="cpu")`, access logs at info);
`lean` adds its ZeroMQ queue between the HTTP process and the inference workers (`fast_queue=True`) and
logs warnings only. The device profile turns on LitServe's batching (`max_batch_size=32`, a 5 ms
`batch_timeout`); the cpu profile runs two inference workers (`workers_per_device=2`).
"""

from pathlib import Path

from benchmarks.peers import venvs
from benchmarks.peers.calls import PAYLOAD, Started, answered, http_caller
from benchmarks.peers.probes import http_ready
from benchmarks.peers.profiles import BATCH_WAIT_S, MAX_BATCH, PeerProfile, burn_cpu_source
from benchmarks.processes import Launched, free_port

# {api} is one of the classes below; each answers {"output": ...} for {"input": "..."}.
SERVER = """
import sys
import threading
import time

import litserve as ls


class Echo(ls.LitAPI):
    def setup(self, device):
        pass

    def decode_request(self, request):
        return request["input"]

    def predict(self, x):
        return x

    def encode_response(self, output):
        return {{"output": output}}


class Device(Echo):
    def setup(self, device):
        self.lock = threading.Lock()  # not `device`: LitServe sets that attribute

    def predict(self, batch):
        with self.lock:
            time.sleep(0.020)
        return batch


class Cpu(Echo):
    def predict(self, x):
        burn_cpu()
        return x


{burn_cpu}


if __name__ == "__main__":
    api = {api}({api_options})
    server = ls.LitServer(api, accelerator="cpu", {server_options})
    server.run(host="127.0.0.1", port=int(sys.argv[1]), generate_client_file=False, {run_options})
"""
PROFILES = {  # profile -> (class, LitAPI options, LitServer options)
    "echo": ("Echo", "", ""),
    "device": ("Device", f"max_batch_size={MAX_BATCH}, batch_timeout={BATCH_WAIT_S}", ""),
    "cpu": ("Cpu", "", "workers_per_device=2"),
}
VARIANTS = {  # variant -> (LitServer options, run options)
    "default": ("", ""),
    "lean": ("fast_queue=True", 'log_level="warning"'),
}
PROTOCOLS = ("HTTP",)


def source(profile: str, variant: str, cpu_iterations: int) -> str:
    """The server script for `profile` in `variant`."""
    api, api_options, server_options = PROFILES[profile]
    variant_options, run_options = VARIANTS[variant]
    return SERVER.format(
        api=api,
        api_options=api_options,
        server_options=", ".join(option for option in (server_options, variant_options) if option),
        run_options=run_options,
        burn_cpu=burn_cpu_source(cpu_iterations),
    )


def start(profile: PeerProfile, variant: str, directory: Path, cpu_iterations: int) -> Started:
    (directory / "server.py").write_text(source(profile.name, variant, cpu_iterations))
    port = free_port()
    python = venvs.ensure(venvs.LITSERVE)
    url = f"http://127.0.0.1:{port}"
    server = Launched(
        [str(python), "server.py", str(port)], f"litserve-{profile.name}-{variant}", http_ready(f"{url}/health"),
        cwd=directory,
    )  # fmt: skip
    return Started(server, {"HTTP": http_caller(f"{url}/predict", {"input": PAYLOAD}, answered)})
