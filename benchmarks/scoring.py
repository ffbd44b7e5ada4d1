"""`grpc-model score` in the benchmark: a folder of items, and the scorer's own items/s from its summary."""

import re
import subprocess
import sys
import time
from pathlib import Path

from grpc_model.src.settings import PROJECT_ROOT

SUMMARY = re.compile(r"scored (\d+) item\(s\) in ([\d.]+) s \(([\d,.]+) items/s\)")


def item_folder(directory: Path, count: int, payload: bytes) -> Path:
    """`count` files of `payload`, one item each (the bench bundle's one input, input.bin)."""
    directory.mkdir(parents=True, exist_ok=True)
    for number in range(count):
        (directory / f"item-{number:05d}.bin").write_bytes(payload)
    return directory


def run_scorer(target: str, items: Path, out: Path, batch_size: int, concurrency: int) -> dict[str, float]:
    """Runs the scorer as users do; its items/s (first call to last answer) and the whole process's wall time."""
    command = [sys.executable, "-m", "grpc_model", "score", str(items), "--server", target, "--out", str(out),
               "--batch-size", str(batch_size), "--concurrency", str(concurrency)]  # fmt: skip
    started = time.monotonic()
    done = subprocess.run(command, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600, check=False)
    wall = time.monotonic() - started
    match = SUMMARY.search(" ".join(done.stdout.split()))
    if done.returncode != 0 or match is None:
        raise RuntimeError(f"the scorer failed ({done.returncode}): {done.stdout}{done.stderr}")
    scored = int(match[1])
    return {"items": scored, "items_per_s": float(match[3].replace(",", "")), "process_items_per_s": scored / wall}
