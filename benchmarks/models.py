"""Model profiles for the benchmark; kept out of the example model.

Each profile's cost is the same here and in the bare servicer (bare_server.py), so the
two differ only by the framework. Payloads use the files declared in the bench bundle:
`input.bin` in, `output.bin` out.
"""

import os
import statistics
import time

from model_lib.src.model_wrapper import ModelInput, ModelOutput, ModelWrapper

COST_SECONDS = 0.020
# Pure-Python loop iterations worth 5 ms on the benchmark machine; calibrated by scripts/bench.py.
CPU_ITERATIONS = int(os.environ.get("BENCH_CPU_ITERATIONS", "100000"))
OK = {"output.bin": b"ok"}


def burn_cpu(iterations: int = CPU_ITERATIONS) -> int:
    """Work that holds the GIL, like a model written in pure Python."""
    total = 0
    for i in range(iterations):
        total += i
    return total


def calibrate_cpu_iterations(target_seconds: float = 0.005) -> int:
    """How many `burn_cpu` iterations take `target_seconds` on this machine, now (median of 5 timings)."""
    iterations = 100_000
    timings = []
    for _ in range(5):
        started = time.perf_counter()
        burn_cpu(iterations)
        timings.append(time.perf_counter() - started)
    return int(iterations * target_seconds / statistics.median(timings))


class Echo(ModelWrapper):
    """No work at all: what remains is the framework's own cost."""

    thread_safe = True

    def handle_single_input(self, model_input: ModelInput, detect_drift: bool, explain: bool) -> ModelOutput:
        return {"output.bin": model_input["input.bin"]}

    def handle_input_batch(
        self, model_inputs: list[ModelInput], detect_drift: bool, explain: bool
    ) -> list[ModelOutput]:
        return [{"output.bin": item["input.bin"]} for item in model_inputs]


class EchoOnLoop(Echo):
    """Echo, run on the event loop: no hand-off to a model thread (`run_on_event_loop`)."""

    run_on_event_loop = True


class SleepItem(ModelWrapper):
    """20 ms per item with the GIL released: an I/O- or device-bound model without batching."""

    thread_safe = True

    def handle_single_input(self, model_input: ModelInput, detect_drift: bool, explain: bool) -> ModelOutput:
        time.sleep(COST_SECONDS)
        return OK


class SleepBatch(ModelWrapper):
    """20 ms per call whatever the batch size: a GPU-like model."""

    thread_safe = True

    def handle_single_input(self, model_input: ModelInput, detect_drift: bool, explain: bool) -> ModelOutput:
        time.sleep(COST_SECONDS)
        return OK

    def handle_input_batch(
        self, model_inputs: list[ModelInput], detect_drift: bool, explain: bool
    ) -> list[ModelOutput]:
        time.sleep(COST_SECONDS)
        return [OK] * len(model_inputs)


class Cpu(ModelWrapper):
    """5 ms of pure-Python work per item, GIL held."""

    def handle_single_input(self, model_input: ModelInput, detect_drift: bool, explain: bool) -> ModelOutput:
        burn_cpu()
        return OK


class Weights(Echo):
    """Echo with 256 MB of read-only weights, to measure what worker processes cost in memory."""

    thread_safe = False
    WEIGHT_BYTES = 256 * 1024 * 1024

    def __init__(self) -> None:
        self.weights = os.urandom(1024) * (self.WEIGHT_BYTES // 1024)


class Faulty(ModelWrapper):
    """For the soak test: echoes, or misbehaves as the input asks (b"raise", b"exit", b"sleep")."""

    def handle_single_input(self, model_input: ModelInput, detect_drift: bool, explain: bool) -> ModelOutput:
        content = model_input["input.bin"]
        if content == b"raise":
            raise ValueError("asked to raise")
        if content == b"exit":
            os._exit(3)
        if content == b"sleep":
            time.sleep(0.2)
        return {"output.bin": content}
