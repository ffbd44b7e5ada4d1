"""MLServer in the peer comparison: V2 gRPC and V2 REST from one `mlserver start`, in its own venv.

The runtimes and the process are benchmarks/mlserver.py's. `default` is MLServer's own defaults (one
parallel inference worker process, debug logging, metrics); `lean` is what its docs suggest for speed:
inference in the server process, debug and metrics off. The device profile turns on its adaptive batching
(`max_batch_size` 32, `max_batch_time` 5 ms); the cpu profile runs two parallel workers in both variants.
"""

from pathlib import Path
from typing import Any

from benchmarks.mlserver import MLServer
from benchmarks.peers import venvs
from benchmarks.peers.calls import Started, grpc_caller, v2_rest_caller
from benchmarks.peers.profiles import BATCH_WAIT_S, MAX_BATCH, PeerProfile

PROFILES: dict[str, dict[str, Any]] = {  # profile -> model-settings.json
    "echo": {"name": "echo", "implementation": "runtime.Echo"},
    "device": {
        "name": "device",
        "implementation": "runtime.OneDevice",
        "max_batch_size": MAX_BATCH,
        "max_batch_time": BATCH_WAIT_S,
    },
    "cpu": {"name": "cpu", "implementation": "runtime.Cpu"},
}
VARIANTS: dict[str, dict[str, Any]] = {  # variant -> settings.json
    "default": {"parallel_workers": 1, "debug": True},
    "lean": {"parallel_workers": 0, "debug": False, "metrics_endpoint": None},
}
WORKERS = {"cpu": 2}
"""Parallel inference workers a profile needs whatever the variant: the cpu profile's two cores."""
PROTOCOLS = ("V2 gRPC", "V2 REST")


def start(profile: PeerProfile, variant: str, directory: Path, cpu_iterations: int) -> Started:
    settings = dict(VARIANTS[variant])
    if profile.name in WORKERS:
        settings["parallel_workers"] = WORKERS[profile.name]
    server = MLServer(
        str(venvs.ensure(venvs.MLSERVER)), profile.name, directory, settings, PROFILES[profile.name],
        cpu_iterations, f"mlserver-{profile.name}-{variant}",
    )  # fmt: skip
    return Started(
        server.server,
        {
            "V2 gRPC": grpc_caller(server.target, "V2 ModelInfer", server.model),
            "V2 REST": v2_rest_caller(f"http://127.0.0.1:{server.http_port}", server.model),
        },
    )
