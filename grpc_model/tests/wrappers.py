"""Small purpose-built model wrappers that the tests serve, never the model in model_lib/.

The framework's tests must pass whatever model a user puts in model_lib/ (only
test_functional.py, test_packaging.py and test_integration.py test the user's model).
"""

import ctypes
import json
import os
import resource
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

from model_lib.src.model_wrapper import ModelInput, ModelOutput, ModelWrapper, success_output

GATE_DIR = "MODEL_TEST_GATE_DIR"
"""Names the directory through which a test and wrappers running in other processes (worker processes,
server processes) signal each other with files; the `gate` fixture sets it. Threading events cannot
cross a process boundary, and a test that sleeps instead of waiting for a signal is a flaky test."""

PATIENCE_SECONDS = 60.0
"""The bound on every wait in the tests, and on a wrapper's wait for a test's signal: far above what
anything takes on a loaded machine, so that reaching it means a bug, not a busy machine; short enough
that a test which forgot to signal fails instead of hanging."""


def gate_file(name: str) -> Path:
    return Path(os.environ[GATE_DIR]) / name


def gate_files(pattern: str) -> list[Path]:
    return list(Path(os.environ[GATE_DIR]).glob(pattern))


def wait_until(condition: Callable[[], bool], what: str) -> None:
    """Polls `condition` within PATIENCE_SECONDS; raises TimeoutError naming `what` if it never holds."""
    deadline = time.monotonic() + PATIENCE_SECONDS
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {PATIENCE_SECONDS:g} s for {what}")
        time.sleep(0.01)


class Greeter(ModelWrapper):
    """A whole small model with a text input, served with the bundle in greeter/: greets the last word."""

    def handle_single_input(self, model_input: ModelInput, detect_drift: bool, explain: bool) -> ModelOutput:
        words = model_input["input.txt"].decode("utf-8").split()
        if not words:
            raise ValueError("input.txt is empty: expected at least one word")
        return success_output({"greeting": "Hello. Nice to meet you, {}".format(words[-1].strip('"'))})

    def handle_input_batch(
        self, model_inputs: list[ModelInput], detect_drift: bool, explain: bool
    ) -> list[ModelOutput]:
        return [self.handle_single_input(item, detect_drift, explain) for item in model_inputs]


class Echo(ModelWrapper):
    """Returns its input files plus the flags it saw; records every batch it was given."""

    batch_sizes: ClassVar[list[int]] = []

    def handle_single_input(self, model_input: ModelInput, detect_drift: bool, explain: bool) -> ModelOutput:
        if b"fail" in model_input.values():
            raise ValueError("asked to fail")
        flags = json.dumps({"detect_drift": detect_drift, "explain": explain}).encode()
        return {**model_input, "flags.json": flags}

    def handle_input_batch(
        self, model_inputs: list[ModelInput], detect_drift: bool, explain: bool
    ) -> list[ModelOutput]:
        type(self).batch_sizes.append(len(model_inputs))
        return [self.handle_single_input(item, detect_drift, explain) for item in model_inputs]


class Counted(Echo):
    instances = 0

    def __init__(self) -> None:
        type(self).instances += 1


class SingleOnly(Echo):
    """No batch method: the base class's NotImplementedError applies."""

    handle_input_batch = ModelWrapper.handle_input_batch


class RaisingBatch(Echo):
    def handle_input_batch(
        self, model_inputs: list[ModelInput], detect_drift: bool, explain: bool
    ) -> list[ModelOutput]:
        raise RuntimeError("batch exploded")


class WrongCountBatch(Echo):
    def handle_input_batch(
        self, model_inputs: list[ModelInput], detect_drift: bool, explain: bool
    ) -> list[ModelOutput]:
        return [self.handle_single_input(item, detect_drift, explain) for item in model_inputs[1:]]


class BadOutput(ModelWrapper):
    """Returns text where bytes are required, or not a dict at all."""

    def handle_single_input(self, model_input: ModelInput, detect_drift: bool, explain: bool) -> ModelOutput:
        if "not-a-dict" in model_input:
            return [b"oops"]  # type: ignore[return-value]
        return {"results.json": "a str, not bytes"}  # type: ignore[dict-item]


class Exiting(ModelWrapper):
    def handle_single_input(self, model_input: ModelInput, detect_drift: bool, explain: bool) -> ModelOutput:
        sys.exit(3)


class FailingInit(ModelWrapper):
    def __init__(self) -> None:
        raise RuntimeError("weights file /models/weights.pt not found")

    def handle_single_input(self, model_input: ModelInput, detect_drift: bool, explain: bool) -> ModelOutput:
        raise AssertionError("never loaded")


class FailsFirstInit(Echo):
    """Fails to load the first time only, like a model whose weights arrive late."""

    attempts = 0

    def __init__(self) -> None:
        type(self).attempts += 1
        if type(self).attempts == 1:
            raise OSError("weights not there yet")


class Slow(ModelWrapper):
    """Holds the model thread until `release` is set (or 10 s pass)."""

    started = threading.Event()
    release = threading.Event()

    def handle_single_input(self, model_input: ModelInput, detect_drift: bool, explain: bool) -> ModelOutput:
        type(self).started.set()
        type(self).release.wait(timeout=10)
        return {"slept.txt": b"done"}


class SlowInit(Echo):
    def __init__(self) -> None:
        time.sleep(0.5)


class SeedNames:
    """Written for the seed template: its method names, no base class."""

    def handle_discrete_input(self, model_input: ModelInput, detect_drift: bool, explain: bool) -> ModelOutput:
        return {"single.txt": b"1"}

    def handle_discrete_input_batch(
        self, model_inputs: list[ModelInput], detect_drift: bool, explain: bool
    ) -> list[ModelOutput]:
        return [{"batch.txt": b"1"} for _ in model_inputs]


class NoMethods:
    pass


class Pid(ModelWrapper):
    """Answers with the process that ran it, once `together` processes are answering calls at once.

    Each process leaves a file named after itself in the gate directory and waits for the others'
    files: the calls are made to overlap, instead of hoping that a pause makes them overlap.
    """

    together = 2

    def handle_single_input(self, model_input: ModelInput, detect_drift: bool, explain: bool) -> ModelOutput:
        gate_file(f"pid-{os.getpid()}").touch()
        wait_until(
            lambda: len(gate_files("pid-*")) >= self.together,
            f"{self.together} worker processes to answer at once",
        )
        return {"pid": str(os.getpid()).encode()}


class PidOrFail(Pid):
    """Pid, except that an item holding b"fail" fails (raises) at once."""

    def handle_single_input(self, model_input: ModelInput, detect_drift: bool, explain: bool) -> ModelOutput:
        if b"fail" in model_input.values():
            raise ValueError("asked to fail")
        return super().handle_single_input(model_input, detect_drift, explain)


class OnLoop(Echo):
    """Echo on the event loop; records the thread each call ran on."""

    run_on_event_loop = True
    threads: ClassVar[list[str]] = []

    def handle_single_input(self, model_input: ModelInput, detect_drift: bool, explain: bool) -> ModelOutput:
        type(self).threads.append(threading.current_thread().name)
        return super().handle_single_input(model_input, detect_drift, explain)


class Overlapping(ModelWrapper):
    """Thread-safe; records how many of its calls ran at the same time (`most`).

    Each call stays in the model until `wanted` calls have run at once, or `patience` seconds pass:
    a test that expects overlap waits for it instead of hoping that a pause produces it, and a test
    that expects none gives the engine `patience` seconds to (wrongly) start another call.
    """

    thread_safe = True
    changed = threading.Condition()
    running = 0
    most = 0
    wanted = 2
    patience = 0.2

    @classmethod
    def reset(cls, wanted: int, patience: float) -> None:
        with cls.changed:
            cls.running = cls.most = 0
            cls.wanted, cls.patience = wanted, patience

    def handle_single_input(self, model_input: ModelInput, detect_drift: bool, explain: bool) -> ModelOutput:
        cls = type(self)
        with cls.changed:
            cls.running += 1
            cls.most = max(cls.most, cls.running)
            cls.changed.notify_all()
            cls.changed.wait_for(lambda: cls.most >= cls.wanted, timeout=cls.patience)
            cls.running -= 1
        return {"ok": b"1"}


class HangsOnRequest(Echo):
    """Hangs for a minute on an item whose `a` is b"hang" (only ever served in a worker process)."""

    def handle_single_input(self, model_input: ModelInput, detect_drift: bool, explain: bool) -> ModelOutput:
        if model_input.get("a") == b"hang":
            time.sleep(60)
        return super().handle_single_input(model_input, detect_drift, explain)


class SleepsAsAsked(ModelWrapper):
    """Sleeps for as many seconds as `a` says; records what it ran."""

    ran: ClassVar[list[bytes]] = []

    def handle_single_input(self, model_input: ModelInput, detect_drift: bool, explain: bool) -> ModelOutput:
        type(self).ran.append(model_input["a"])
        time.sleep(float(model_input["a"]))
        return {"slept.txt": model_input["a"]}


class Crashes(Echo):
    """Dies the way real models do, on request: a segfault, a kill signal, or running out of memory."""

    def handle_single_input(self, model_input: ModelInput, detect_drift: bool, explain: bool) -> ModelOutput:
        action = model_input.get("a")
        if action == b"exit":
            os._exit(1)
        elif action == b"segfault":
            ctypes.string_at(0)
        elif action == b"kill":
            os.kill(os.getpid(), signal.SIGKILL)
        elif action == b"oom":
            soft, hard = resource.getrlimit(resource.RLIMIT_AS)
            resource.setrlimit(resource.RLIMIT_AS, (512 * 1024 * 1024, hard))
            try:
                hog = [bytearray(64 * 1024 * 1024) for _ in range(64)]  # 4 GB: over the limit
                del hog
            finally:
                resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
        return super().handle_single_input(model_input, detect_drift, explain)


class BadMessages(Echo):
    """Raises exceptions whose messages cannot be encoded, or whose str() itself raises."""

    def handle_single_input(self, model_input: ModelInput, detect_drift: bool, explain: bool) -> ModelOutput:
        if model_input.get("a") == b"surrogate":
            raise ValueError("bad " + b"\xff".decode("utf-8", "surrogateescape"))
        if model_input.get("a") == b"unprintable":
            raise Unprintable()
        if model_input.get("a") == b"long":  # a long message, every character outside ASCII
            raise ValueError("\u00e9\u20ac" * 2000)
        return super().handle_single_input(model_input, detect_drift, explain)


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no message")


class Gated(ModelWrapper):
    """Echoes `a` and records it in `ran`; the item b"hold" keeps the model thread until `release` is set.

    For tests in this process: holding the model makes a window of time that the test controls
    (calls queue behind it for as long as the test needs), where a sleeping model makes a window
    that a loaded machine can close early.
    """

    ran: ClassVar[list[bytes]] = []
    holding = threading.Event()
    release = threading.Event()

    @classmethod
    def reset(cls) -> None:
        cls.ran.clear()
        cls.holding.clear()
        cls.release.clear()

    def handle_single_input(self, model_input: ModelInput, detect_drift: bool, explain: bool) -> ModelOutput:
        type(self).ran.append(model_input["a"])
        if model_input["a"] == b"hold":
            type(self).holding.set()
            if not type(self).release.wait(timeout=PATIENCE_SECONDS):
                raise TimeoutError("the test never released the held item")
        return {"a": model_input["a"]}


class GatedBatch(Gated):
    """Gated with a batch method, so that items of several calls queued behind the held one share one batch call."""

    batches: ClassVar[list[list[bytes]]] = []

    @classmethod
    def reset(cls) -> None:
        super().reset()
        cls.batches.clear()

    def handle_input_batch(
        self, model_inputs: list[ModelInput], detect_drift: bool, explain: bool
    ) -> list[ModelOutput]:
        type(self).batches.append([item["a"] for item in model_inputs])
        return [self.handle_single_input(item, detect_drift, explain) for item in model_inputs]


class HeldLoad(Echo):
    """Loads (in this process) only when the test sets `release`: a load that takes exactly as long as the test says."""

    release = threading.Event()

    def __init__(self) -> None:
        if not type(self).release.wait(timeout=PATIENCE_SECONDS):
            raise TimeoutError("the test never released the load")


class HeldByFile(ModelWrapper):
    """For a server in another process: creates `started` in the gate directory, then waits for `release` there."""

    def handle_single_input(self, model_input: ModelInput, detect_drift: bool, explain: bool) -> ModelOutput:
        gate_file("started").touch()
        wait_until(gate_file("release").exists, "the test to create the release file")
        return {"released.txt": b"done"}


class CrashesSlowToReplace(Crashes):
    """Crashes, whose new instances (replacement workers load their own) wait in `__init__` while the gate
    directory holds a file `hold`: the test decides how long a replacement takes to start.

    The workers started with the server are forked from the loaded model, so they are not held.
    """

    def __init__(self) -> None:
        if GATE_DIR in os.environ and gate_file("hold").exists():
            gate_file(f"loading-{os.getpid()}").touch()
            wait_until(lambda: not gate_file("hold").exists(), "the test to remove the hold file")
