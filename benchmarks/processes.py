"""Server processes for the benchmark and the soak test, and what /proc says about them."""

import contextlib
import os
import socket
import subprocess
import tempfile
from pathlib import Path

import grpc

from grpc_model.src.client import ModelClient
from grpc_model.src.settings import PROJECT_ROOT

CLK_TCK = os.sysconf("SC_CLK_TCK")
LOGS = Path(tempfile.gettempdir()) / "grpc-model-bench"  # each server's output, for when a number looks wrong


def process_tree(pid: int) -> list[int]:
    """`pid` and its descendants; a child belongs to the thread that started it, so every thread is asked."""
    pids = [pid]
    for current in pids:
        for children in Path(f"/proc/{current}/task").glob("*/children"):
            with contextlib.suppress(OSError):
                pids += [int(child) for child in children.read_text().split()]
    return pids


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / CLK_TCK


def reset_peak_rss(pids: list[int]) -> None:
    """Restarts the kernel's RSS high-water mark (VmHWM) of each process, so each point has its own."""
    for pid in pids:
        with contextlib.suppress(OSError):
            Path(f"/proc/{pid}/clear_refs").write_text("5")


def peak_rss_mb(pids: list[int]) -> float:
    """The kernel's exact peak RSS (VmHWM), summed over the processes."""
    total = 0
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        total += next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")), 0)
    return total / 1024


def memory_mb(pids: list[int]) -> tuple[float, float]:
    """(RSS, PSS) summed over the processes, in MB; PSS counts shared pages once."""
    rss = pss = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Rss:"):
                    rss += int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss += int(line.split()[1])
        except OSError:
            continue
    return rss / 1024, pss / 1024


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Server:
    """A server process on a free loopback port, answering once `__init__` returns."""

    def __init__(self, command: list[str], env: dict[str, str], name: str) -> None:
        self.port = free_port()
        LOGS.mkdir(parents=True, exist_ok=True)
        with open(LOGS / f"{name}.log", "wb") as log:
            self.process = subprocess.Popen(
                [*command, "--port", str(self.port)],
                cwd=PROJECT_ROOT,
                env={"GRPC_MODEL_METRICS_PORT": "0", **env},  # several servers at once: 9090 would clash
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        with ModelClient(self.target, timeout=120) as client:
            grpc.channel_ready_future(client.channel).result(timeout=120)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        try:
            with ModelClient(self.target, timeout=10) as client:
                client.shutdown()
            self.process.wait(timeout=30)
        except (grpc.RpcError, subprocess.TimeoutExpired):
            self.process.kill()
            self.process.wait()
