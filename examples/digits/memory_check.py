"""Measures the digits server's peak memory while it refuses bad images (the bound in README.md).

    .venv/bin/python examples/digits/memory_check.py [--rounds 20]

Starts the example's server as its own process, takes its resident memory (VmRSS) once it has
answered a few good images, then sends every bad image of bad_images.py ROUNDS times, 8 calls
at a time, each call mixing bad and good items, and reads the kernel's high-water mark (VmHWM)
of the server. A measurement, not a test: its numbers go into README.md with the machine.
"""

import argparse
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path[:0] = [str(HERE), str(ROOT)]

import bad_images  # noqa: E402

from benchmarks.processes import Server, memory_mb, peak_rss_mb, process_tree, reset_peak_rss  # noqa: E402
from grpc_model.src.client import ModelClient  # noqa: E402

CALLS_AT_ONCE = 8


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=20, help="times each bad image is sent (default 20)")
    args = parser.parse_args()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), str(ROOT)])}
    command = [sys.executable, "-m", "grpc_model.src.model_server", "--host", "127.0.0.1", "--load-model-at-startup",
               "--model-class", "digits_model.model", "--asset-bundle-dir", str(HERE / "asset_bundle"),
               "--log-level", "WARNING"]  # fmt: skip
    server = Server(command, env, "digits-memory")
    good = {"image.png": bad_images.good_png()}
    bad = {make.__name__: make() for make in (bad_images.not_an_image, bad_images.truncated_png,
                                               bad_images.empty_png, bad_images.bomb_png)}  # fmt: skip
    try:
        with ModelClient(server.target, timeout=60) as client:
            assert client.status().status_code == 200
            for _ in range(20):
                assert client.run([good] * 8).outputs[0].success
            pids = process_tree(server.process.pid)
            settled, _ = memory_mb(pids)
            reset_peak_rss(pids)
            calls = [[good, {"image.png": content}, good] for _ in range(args.rounds) for content in bad.values()]
            with ThreadPoolExecutor(CALLS_AT_ONCE) as pool:
                answers = list(pool.map(client.run, calls))
            refused = sum(not item.success for answer in answers for item in answer.outputs)
            served = sum(item.success for answer in answers for item in answer.outputs)
            peak = peak_rss_mb(process_tree(server.process.pid))
            reset_peak_rss(pids)
            largest = {"image.png": bad_images.largest_png()}
            with ThreadPoolExecutor(CALLS_AT_ONCE) as pool:
                big = list(pool.map(client.run, [[largest] * 4] * args.rounds))
            served += sum(item.success for answer in big for item in answer.outputs)
            peak_largest = peak_rss_mb(process_tree(server.process.pid))
    finally:
        server.stop()
    print(f"bad images sent: {len(calls)} ({args.rounds} x {', '.join(bad)}), refused {refused}, good served {served}")
    print(f"server RSS after warm-up: {settled:.1f} MB; peak RSS (VmHWM) while refusing them: {peak:.1f} MB")
    print(
        f"peak RSS while serving {args.rounds} calls of 4 images of 2048x2048 RGBA (the largest): {peak_largest:.1f} MB"
    )
    return 0 if refused == len(calls) and served == 2 * len(calls) + 4 * args.rounds else 1


if __name__ == "__main__":
    sys.exit(main())
