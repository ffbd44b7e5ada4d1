"""Server processes for the benchmark and the soak test, and what /proc says about them."""

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
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


@dataclass
class Usage:
    """What a server's process tree used during a measured window."""

    cpu_seconds: float = 0.0
    """User + system time of the server and its descendants."""
    peak_rss_mb: float = 0.0
    peak_pss_mb: float = 0.0


def usage_window(pid: int, usage: Usage) -> Callable[[], AbstractAsyncContextManager[None]]:
    """A window for `load.drive` that fills `usage` for `pid`'s tree: CPU from /proc, memory sampled every 0.1 s
    and the kernel's high-water mark, reset when the window opens."""

    @contextlib.asynccontextmanager
    async def window() -> AsyncIterator[None]:
        async def sample_memory() -> None:
            while True:
                rss, pss = memory_mb(process_tree(pid))
                usage.peak_rss_mb, usage.peak_pss_mb = max(usage.peak_rss_mb, rss), max(usage.peak_pss_mb, pss)
                await asyncio.sleep(0.1)

        reset_peak_rss(process_tree(pid))
        sampler = asyncio.create_task(sample_memory())
        cpu_before = cpu_seconds(process_tree(pid))
        try:
            yield
        finally:
            usage.cpu_seconds = cpu_seconds(process_tree(pid)) - cpu_before
            usage.peak_rss_mb = max(usage.peak_rss_mb, peak_rss_mb(process_tree(pid)))
            sampler.cancel()

    return window


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Server:
    """A server process on a free loopback port, answering once `__init__` returns."""

    def __init__(self, command: list[str], env: dict[str, str], name: str, cwd: Path = PROJECT_ROOT) -> None:
        self.port = free_port()
        LOGS.mkdir(parents=True, exist_ok=True)
        with open(LOGS / f"{name}.log", "wb") as log:
            self.process = subprocess.Popen(
                [*command, "--port", str(self.port)],
                cwd=cwd,
                # several servers at once: metrics' 9090 and HTTP's 8080 would clash
                env={"GRPC_MODEL_METRICS_PORT": "0", "GRPC_MODEL_HTTP_PORT": "0", **env},
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


RUNNING: set["Launched"] = set()
"""Every Launched server not yet stopped, for `stop_all` to stop whatever an error or Ctrl-C left behind."""


class Launched:
    """Any server command (a peer's, in its own venv) on loopback, answering once `__init__` returns.

    It runs in a session of its own, so that stopping it stops the workers it started too. `cold_start_s`
    is the time from starting the process to `ready()` first answering True.
    """

    def __init__(
        self,
        command: list[str],
        name: str,
        ready: Callable[[], bool],
        env: dict[str, str] | None = None,
        cwd: Path = PROJECT_ROOT,
        timeout: float = 180,
    ) -> None:
        self.name = name
        LOGS.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        with open(LOGS / f"{name}.log", "wb") as log:
            self.process = subprocess.Popen(
                command, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        RUNNING.add(self)
        while not ready():
            exited, late = self.process.poll(), time.monotonic() - started > timeout
            if exited is not None or late:
                self.stop()
                what = f"exited with code {exited}" if exited is not None else f"was not ready within {timeout:g} s"
                raise RuntimeError(f"{name} {what}; see {LOGS / name}.log")
            time.sleep(0.05)
        self.cold_start_s = time.monotonic() - started

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self, grace: float = 20) -> None:
        """SIGTERM to the server's whole session, then SIGKILL after `grace` seconds."""
        RUNNING.discard(self)
        for sent in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, sent)
            try:
                self.process.wait(timeout=grace)
                break
            except subprocess.TimeoutExpired:
                continue
        with contextlib.suppress(ProcessLookupError):  # workers that outlived their parent
            os.killpg(self.process.pid, signal.SIGKILL)


def stop_all() -> None:
    for server in list(RUNNING):
        server.stop()
