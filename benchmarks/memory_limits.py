"""The memory check of issue 12: concurrent gzip-compressed huge Run calls against the example server.

16 calls (by default), each one input of 200 MiB of zero bytes sent with gzip (a few hundred KB on
the wire), all at once against the hello-world model served with its default settings (as
`scripts/dev.sh serve` does). Passes when the server's peak RSS (VmHWM) stays under 300 MB, every
call gets an error that says what is wrong, and the server then answers a normal Run.

    .venv/bin/python -m benchmarks.memory_limits [--calls 16] [--mib 200] [--json out.json] [-- SERVER FLAGS]

Server flags after `--` show other configurations, e.g. `-- --max-receive-message-bytes 262144000`
(the former flat 250 MiB limit). Memory is measured here, never asserted in the tests.
"""

import argparse
import json
import os
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import grpc

from benchmarks.processes import Server, peak_rss_mb
from grpc_model.src.auto_generated.model2_template import model_pb2 as pb
from grpc_model.src.client import ModelClient
from grpc_model.src.settings import ENV_PREFIX, MIB

PEAK_RSS_LIMIT_MB = 300.0


@dataclass
class Result:
    server_flags: list[str]
    calls: int
    mib_per_call: int
    baseline_rss_mb: float
    peak_rss_mb: float
    seconds: float
    answers: dict[str, int]
    served_afterwards: bool
    passed: bool


def run(calls: int, mib: int, server_flags: list[str]) -> Result:
    env = {name: value for name, value in os.environ.items() if not name.startswith(ENV_PREFIX)}
    server = Server([sys.executable, "-m", "grpc_model.src.model_server", *server_flags], env, "memory-limits")
    try:
        with ModelClient(server.target, timeout=300, max_message_bytes=-1) as client:
            client.status()  # loads the model, as a platform's first call does
            baseline = peak_rss_mb([server.process.pid])
            request = pb.RunRequest(inputs=[pb.InputItem(input={"input.txt": bytes(mib * MIB)})])

            def one_call(_: int) -> str:
                try:
                    response = client.stub.Run(request, timeout=600, compression=grpc.Compression.Gzip)
                except grpc.RpcError as error:
                    return f"{error.code().name}: {error.details()}"
                item = response.outputs[0] if response.outputs else None
                error_text = item.output.get("error", b"").decode() if item is not None else response.message
                return f"answered {response.status_code}: {error_text}"

            started = time.monotonic()
            with ThreadPoolExecutor(calls) as pool:
                answers = Counter(pool.map(one_call, range(calls)))
            seconds = time.monotonic() - started
            peak = peak_rss_mb([server.process.pid])
            served = client.run([{"input.txt": b"My name is Ada"}]).outputs[0].success
    finally:
        server.stop()
    refused = all(answer.startswith("RESOURCE_EXHAUSTED") for answer in answers)
    return Result(
        server_flags,
        calls,
        mib,
        round(baseline, 1),
        round(peak, 1),
        round(seconds, 1),
        dict(answers),
        served,
        passed=peak < PEAK_RSS_LIMIT_MB and refused and served,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=16, help="concurrent Run calls (default 16)")
    parser.add_argument("--mib", type=int, default=200, help="MiB of zeros in each call's input (default 200)")
    parser.add_argument("--json", type=Path, help="also write the result here")
    parser.add_argument("server_flags", nargs="*", help="flags for the server, after --")
    args = parser.parse_args()
    result = run(args.calls, args.mib, args.server_flags)
    print(f"server flags: {' '.join(result.server_flags) or '(defaults)'}")
    print(f"{result.calls} gzip calls of {result.mib_per_call} MiB of zeros in {result.seconds} s")
    print(f"server peak RSS (VmHWM): {result.peak_rss_mb} MB (after loading: {result.baseline_rss_mb} MB)")
    for answer, count in result.answers.items():
        print(f"  {count} x {answer}")
    print(f"a normal Run afterwards: {'succeeded' if result.served_afterwards else 'FAILED'}")
    verdict = "PASS" if result.passed else "FAIL"
    print(f"{verdict}: peak under {PEAK_RSS_LIMIT_MB:g} MB, every call refused, serving afterwards")
    if args.json:
        args.json.write_text(json.dumps(asdict(result), indent=2) + "\n")
    return 0 if result.passed else 1


if __name__ == "__main__":
    sys.exit(main())
