"""A throwaway Ray cluster on this host for the Ray Serve test and benchmark, in namespaces of its own.

Ray's proxy and replicas listen on every interface (`[::]`, fixed in Ray's code): in a private
network namespace nothing outside can reach them and they take nobody's ports. In a private PID
namespace `ray stop` sees only this cluster's processes, and when the namespace's first process
ends, the kernel ends every process left in it, so nothing outlives a run.
"""

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

HEAD_PORT = 6379
START_SECONDS = 300  # `ray start` on a loaded 2-core machine: 10-60 s, so a bound far above
START_ATTEMPTS = 3
# Ray Serve's controller gives a new proxy 5 s to report ready (5 s more per restart) and a running one
# 10 s to answer a health check; three misses and it kills the proxy and starts another. A proxy's start
# (a fresh Python importing Ray Serve, two servers) takes longer than that on a loaded 2-core machine, so
# the proxies were restarted again and again and none stayed up to route a call. Ray reads these in the
# controller, a worker of the raylets that `ray start` launches with this process's environment.
SERVE_TIMEOUTS = {
    "RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S": "120",
    "RAY_SERVE_PROXY_HEALTH_CHECK_TIMEOUT_S": "120",
}
NAMESPACE = ["unshare", "--net", "--pid", "--fork", "--mount-proc", "--kill-child"]


def namespace_problem() -> str | None:
    """Why a private network and PID namespace cannot be made here; None when it can."""
    if os.geteuid() != 0:
        return "needs root to make a private network namespace (unshare --net) for Ray, which binds [::]"
    for tool, package in (("unshare", "util-linux"), ("ip", "iproute2")):
        if shutil.which(tool) is None:
            return f"needs `{tool}` ({package}) to run Ray in a private network namespace"
    try:
        subprocess.run([*NAMESPACE, "true"], capture_output=True, text=True, timeout=60, check=True)
    except subprocess.CalledProcessError as error:
        return f"cannot make a private network namespace: {error.stderr.strip()}"
    except subprocess.TimeoutExpired:
        return "making a private network namespace did not finish within 60 s"
    return None


def in_namespace(command: list[str]) -> list[str]:
    """`command`, run in a private network and PID namespace with loopback up.

    The shell stays as the namespace's first process, which inherits every orphan (Ray's
    daemons once `ray start` exits) and must reap them: `ray stop` waits until they are gone.
    """
    return [*NAMESPACE, "sh", "-c", 'ip link set lo up && "$@"', "sh", *command]


def wait_for(condition: Callable[[], object], what: str, seconds: float) -> None:
    """Polls `condition` until it is true; raises TimeoutError naming `what` after `seconds`."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {seconds:g} s for {what}")
        time.sleep(0.2)


class LocalRay:
    """A Ray head and `nodes - 1` more nodes on 127.0.0.1, each with `cpus` CPUs; call only inside a namespace."""

    def __init__(self, nodes: int = 2, cpus: int = 1) -> None:
        # For this process and all it starts: without it, a token that some earlier local `ray.init()` left in
        # ~/.ray makes the head require it and the second node fail to join. Only the namespace reaches the cluster.
        os.environ["RAY_AUTH_MODE"] = "disabled"
        os.environ.update(SERVE_TIMEOUTS)
        self.address = f"127.0.0.1:{HEAD_PORT}"
        self.ray = str(Path(sys.executable).parent / "ray")
        self.temp_dir = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # short: Ray's socket paths have a limit
        common = ["--node-ip-address=127.0.0.1", f"--num-cpus={cpus}", "--disable-usage-stats"]
        head = ["--head", f"--port={HEAD_PORT}", "--include-dashboard=false", f"--temp-dir={self.temp_dir}"]
        for attempt in range(1, START_ATTEMPTS + 1):
            try:
                self._ray("start", *head, *common)
                for _ in range(nodes - 1):
                    self._ray("start", f"--address={self.address}", *common)
                return
            except RuntimeError:
                # `ray start` gives a raylet 30 s to register (fixed in Ray's code), which a loaded machine
                # can miss: start the whole cluster again.
                self.stop()
                if attempt == START_ATTEMPTS:
                    raise
            except BaseException:
                self.stop()
                raise

    def _ray(self, *args: str) -> None:
        done = subprocess.run([self.ray, *args], capture_output=True, text=True, timeout=START_SECONDS, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"ray {' '.join(args)} exited with {done.returncode}: {done.stdout}{done.stderr}")

    def serve_warnings(self, count: int = 10) -> str:
        """The last warnings and errors of Ray Serve's controller: why a proxy or replica did not come up."""
        lines = [
            line
            for log in sorted(Path(self.temp_dir).glob("session_latest/logs/serve/controller_*.log"))
            for line in log.read_text(errors="replace").splitlines()
            if " WARNING " in line or " ERROR " in line
        ]
        return "\n".join(lines[-count:])

    def stop(self) -> None:
        """Stops every Ray process of the namespace (the only ones `ray stop` sees here)."""
        subprocess.run([self.ray, "stop", "--force"], capture_output=True, timeout=120, check=False)
        shutil.rmtree(self.temp_dir, ignore_errors=True)

    def __enter__(self) -> "LocalRay":
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
