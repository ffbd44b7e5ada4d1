"""This server in the peer comparison: one process per profile and variant, measured on ModzyModel gRPC,
V2 gRPC and V2 REST (the HTTP server is on in every row, so that one process answers all three)."""

import os
import sys
from pathlib import Path

from benchmarks.bundle import write_bundle
from benchmarks.peers.calls import Started, grpc_caller, v2_rest_caller
from benchmarks.peers.probes import http_ready, v2_grpc_ready
from benchmarks.peers.profiles import PeerProfile
from benchmarks.processes import Launched, free_port
from grpc_model.src.metadata import load_bundle, slug
from grpc_model.src.settings import PROJECT_ROOT

PROFILES = {  # profile -> (model class in benchmarks/models.py, flags)
    "echo": ("Echo", ()),
    "device": ("SleepBatch", ("--model-threads", "1")),  # one device: one batch call at a time
    "cpu": ("Cpu", ("--workers", "2")),
}
VARIANTS = {
    "default": (),
    "lean": ("--no-metrics", "--log-level", "WARNING"),
}
PROTOCOLS = ("ModzyModel gRPC", "V2 gRPC", "V2 REST")


def start(
    profile: PeerProfile, variant: str, directory: Path, cpu_iterations: int, root: Path = PROJECT_ROOT
) -> Started:
    """The server of the checkout at `root` (another one: a before-and-after comparison, benchmarks/rest_cost.py)."""
    model_class, flags = PROFILES[profile.name]
    bundle = write_bundle(directory / "bundle")
    model = slug(load_bundle(bundle).spec.name)
    port, http_port = free_port(), free_port()
    command = [
        sys.executable, "-m", "grpc_model.src.model_server", "--host", "127.0.0.1", "--port", str(port),
        "--http", "on", "--http-port", str(http_port), "--load-model-at-startup",
        "--model-class", f"benchmarks.models:{model_class}", "--asset-bundle-dir", str(bundle), *flags,
        *VARIANTS[variant],
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(root), "BENCH_CPU_ITERATIONS": str(cpu_iterations),
           "GRPC_MODEL_METRICS_PORT": "0"}  # fmt: skip
    target = f"127.0.0.1:{port}"
    grpc_ready, http_is_ready = (
        v2_grpc_ready(target, model),
        http_ready(f"http://127.0.0.1:{http_port}/v2/health/ready"),
    )

    def ready() -> bool:  # gRPC serves before the HTTP app has loaded (docs/http.md): the REST row needs both
        return grpc_ready() and http_is_ready()

    server = Launched(command, f"ours-{profile.name}-{variant}", ready, env, root)
    return Started(
        server,
        {
            "ModzyModel gRPC": grpc_caller(target, "ModzyModel Run", model),
            "V2 gRPC": grpc_caller(target, "V2 ModelInfer", model),
            "V2 REST": v2_rest_caller(f"http://127.0.0.1:{http_port}", model),
        },
    )
