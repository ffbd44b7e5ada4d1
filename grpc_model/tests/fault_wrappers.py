"""Wrappers for the engine's recovery and loading tests: loads that fail, block or never end."""

import logging
import threading
from typing import ClassVar

from grpc_model.tests.wrappers import Echo


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
