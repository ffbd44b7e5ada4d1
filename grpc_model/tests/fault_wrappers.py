"""Wrappers for the engine's recovery and loading tests: loads that fail, block or never end.

Worker processes cannot see the test's events, so a file named by an environment variable
(which spawned workers inherit) is the switch that makes their loads fail.
"""

import logging
import os
import threading
from typing import ClassVar

from grpc_model.tests.wrappers import Crashes, Echo
from grpc_model.wrapper import ModelWrapper

LOAD_BLOCKER = "TEST_MODEL_LOAD_BLOCKER"
"""Names a file; while it exists, loading `CrashesWhileBlocked` raises (in any process)."""


class CrashesWhileBlocked(Crashes):
    """Crashes on request (see `Crashes`), and cannot load while the `LOAD_BLOCKER` file exists."""

    def __init__(self) -> None:
        blocker = os.environ.get(LOAD_BLOCKER)
        if blocker and os.path.exists(blocker):
            raise OSError(f"weights unavailable ({blocker} exists)")


class CrashesWhileBlockedOneAtATime(CrashesWhileBlocked):
    """No batch method, so the batcher hands the pool one item at a time."""

    handle_input_batch = ModelWrapper.handle_input_batch


class LoadsForever(Echo):
    """`__init__` never returns, like a load stuck on a dead network mount."""

    def __init__(self) -> None:
        logging.getLogger(__name__).warning("loading forever")
        threading.Event().wait()


class FailsAfterRelease(Echo):
    """`__init__` blocks until the test sets `release`, then raises; counts its loads."""

    release: ClassVar[threading.Event] = threading.Event()
    loads = 0

    def __init__(self) -> None:
        cls = type(self)
        cls.loads += 1
        number = cls.loads
        cls.release.wait(timeout=30)
        raise RuntimeError(f"load {number} failed")
