"""Worst health answer while the server checks one large JSON item (issue 19, defect 14).

Starts a server process on loopback with a one-input model that accepts application/json up to
200M, sends one Run carrying a JSON item of about SIZE_MB, and meanwhile asks health over its own
channel, one call after another; prints the worst and median health latency. Load the machine
beside it (e.g. `python3 -c 'while True: pass' &` per core) to see the contention the review saw.

    PYTHONPATH=$PWD .venv/bin/python scripts/health_during_json.py [SIZE_MB]

MEDIA=application/octet-stream declares the input as a type whose content is not checked: the same
item then measures what receiving it costs without the JSON check. For the check alone, see
`--check-only`: it validates the item on a thread in this process and reports the event loop's
longest gap.
"""

import asyncio
import json
import multiprocessing
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from grpc_model.src.client import ModelClient
from grpc_model.src.validation import sniffer

ROOT = Path(__file__).resolve().parent.parent
MODEL = """
from model_lib.src.model_wrapper import ModelWrapper

class Small(ModelWrapper):
    def handle_single_input(self, model_input, detect_drift, explain):
        return {"out": b"ok"}
"""


def main() -> None:
    arguments = [argument for argument in sys.argv[1:] if argument != "--check-only"]
    size_mb = float(arguments[0]) if arguments else 150
    if "--check-only" in sys.argv:
        asyncio.run(_check_only(size_mb))
        return
    with tempfile.TemporaryDirectory() as tmp:
        spec = yaml.safe_load((ROOT / "grpc_model/tests/greeter/model.yaml").read_text())
        spec["inputs"] = {
            "data.json": {"acceptedMediaTypes": [os.environ.get("MEDIA", "application/json")], "maxSize": "200M"}
        }
        spec["outputs"] = {"out": {"mediaType": "application/octet-stream", "maxSize": "1M"}}
        spec["features"]["maxBatchSize"] = 1
        (Path(tmp) / "bundle" / spec["version"]).mkdir(parents=True)
        (Path(tmp) / "bundle" / spec["version"] / "model.yaml").write_text(yaml.safe_dump(spec))
        (Path(tmp) / "small_model.py").write_text(MODEL)
        env = {**os.environ, "PYTHONPATH": f"{tmp}:{ROOT}", "GRPC_MODEL_HTTP": "off"}
        args = ["--host", "127.0.0.1", "--port", "0", "--no-metrics", "--asset-bundle-dir", f"{tmp}/bundle"]
        server = subprocess.Popen(
            [sys.executable, "-m", "grpc_model.src.model_server", *args, "--model-class", "small_model:Small",
             "--load-model-at-startup"],
            env=env, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            assert server.stderr is not None
            port = next(m.group(1) for line in server.stderr if (m := re.search(r"on 127\.0\.0\.1:(\d+)", line)))
            prober = ModelClient(f"127.0.0.1:{port}")
            prober.wait_for_health("SERVING", 60)
            latencies: list[float] = []
            slow: list[str] = []
            # The item goes from another process: serialising 150 MB would hold this one's GIL and
            # delay the health calls here, which is not what is measured.
            runner = multiprocessing.get_context("fork").Process(target=_run, args=(port, size_mb))
            started = time.perf_counter()
            runner.start()
            while runner.is_alive():
                before = time.perf_counter()
                prober.health()
                latencies.append(time.perf_counter() - before)
                if latencies[-1] > 0.2:
                    slow.append(f"{before - started:.2f}s+{latencies[-1]:.2f}")
            runner.join()
            print("health answers over 200 ms (sent at + took):", " ".join(slow) or "none")
            print(
                f"{size_mb:.0f} MB JSON item answered in {time.perf_counter() - started:.1f} s; "
                f"{len(latencies)} health calls: worst {max(latencies) * 1000:.0f} ms, "
                f"median {statistics.median(latencies) * 1000:.1f} ms"
            )
        finally:
            server.terminate()
            server.wait(30)


async def _check_only(size_mb: float) -> None:
    """The JSON check on a thread, as the data plane runs it, and the longest wait of a 1 ms ticker on the loop."""
    item = _json_item(int(size_mb * 1e6))
    gaps: list[float] = []
    checking = True

    async def ticker() -> None:
        last = time.perf_counter()
        while checking:
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    ticking = asyncio.create_task(ticker())
    started = time.perf_counter()
    check = sniffer("application/json")
    assert check is not None
    valid = await asyncio.to_thread(check, item)
    took = time.perf_counter() - started
    checking = False
    await ticking
    gaps.sort()
    print(
        f"{size_mb:.0f} MB JSON item checked (valid: {valid}) in {took:.1f} s; loop gaps: worst "
        f"{gaps[-1] * 1000:.0f} ms, p99 {gaps[int(len(gaps) * 0.99)] * 1000:.1f} ms, "
        f"median {statistics.median(gaps) * 1000:.1f} ms"
    )


def _run(port: str, size_mb: float) -> None:
    answer = ModelClient(f"127.0.0.1:{port}", timeout=600).run([{"data.json": _json_item(int(size_mb * 1e6))}])
    print("run:", "ok" if answer.outputs[0].success else answer.outputs[0].output)


def _json_item(size: int) -> bytes:
    row = json.dumps({"id": 123456, "name": "x" * 10, "values": [1.5, 2, None, True, "text"]}).encode()
    return b"[" + b",".join([row] * (size // (len(row) + 1))) + b"]"


if __name__ == "__main__":
    main()
