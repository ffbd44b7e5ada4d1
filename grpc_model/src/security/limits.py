"""Memory-safe limits: the largest request follows model.yaml, and a budget bounds the bytes in flight.

gRPC core refuses a message larger than the receive limit before the handler sees it, and for a
compressed message it compares the decompressed size, stopping as it inflates (docs/operations.md,
## Limits). What that cannot bound is how many accepted requests are held at once while they are
checked, queued and run: that is the budget's job.
"""

import os
from pathlib import Path
from types import TracebackType

from grpc_model.src.metadata import ModelSpec
from grpc_model.src.metadata.units import parse_size

INT32_MAX = 2**31 - 1  # gRPC's message size limits are C ints
FIELD_OVERHEAD_BYTES = 16
"""Protobuf framing per map entry or item: tags and length varints, generous."""
MESSAGE_OVERHEAD_BYTES = 64 * 1024
"""Room for the rest of a RunRequest (flags, unknown small fields) and for rounding."""
MEMORY_SHARE = 4
"""The default budget is this fraction of the memory limit: the rest is for the model and copies."""


def request_size_limit(spec: ModelSpec) -> int:
    """The largest RunRequest of full-size items that one batch call takes: each input at its maxSize,
    times features.maxBatchSize, plus protobuf overhead; at most gRPC's int32 limit."""
    item = sum(
        parse_size(file.maxSize) + len(name.encode()) + 2 * FIELD_OVERHEAD_BYTES for name, file in spec.inputs.items()
    )
    return min((item + FIELD_OVERHEAD_BYTES) * spec.features.maxBatchSize + MESSAGE_OVERHEAD_BYTES, INT32_MAX)


def memory_limit_bytes() -> int:
    """The memory this process may use: its cgroup's limit (a container's), else the machine's RAM."""
    for path in (Path("/sys/fs/cgroup/memory.max"), Path("/sys/fs/cgroup/memory/memory.limit_in_bytes")):
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 2**60:  # cgroup v1 writes a huge number for "no limit"
            return int(text)
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


class OverBudgetError(Exception):
    """A request that would take the bytes in flight past the budget; the caller may retry later."""


class InflightBudget:
    """Counts the bytes of requests being served; refuses one that would go past `limit`.

    Used from one event loop, so a plain counter is enough. A refusal happens before the request
    is checked or queued, so its bytes are freed as soon as the front end answers.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0

    def hold(self, size: int) -> "_Held":
        """Holds `size` bytes for the `with` block; raises OverBudgetError when they would pass the limit."""
        if self.held + size > self.limit:
            raise OverBudgetError(
                f"the server holds {self.held} bytes of requests in flight and this one of {size} bytes "
                f"would pass max_inflight_request_bytes ({self.limit} bytes); try again later"
            )
        self.held += size
        return _Held(self, size)


class _Held:
    """Bytes held until the `with` block ends; a class rather than a generator, as every call passes here."""

    __slots__ = ("budget", "size")

    def __init__(self, budget: InflightBudget, size: int) -> None:
        self.budget = budget
        self.size = size

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.budget.held -= self.size


class LimitsSetupError(Exception):
    """A budget of bytes in flight smaller than the largest request, which could then never be served."""


def inflight_budget(setting: int, largest_request: int) -> InflightBudget:
    """The budget `max_inflight_request_bytes` asks for (0: a share of the memory limit), never below one request."""
    if setting == 0:
        return InflightBudget(max(largest_request, memory_limit_bytes() // MEMORY_SHARE))
    if setting < largest_request:
        raise LimitsSetupError(
            f"max_inflight_request_bytes ({setting}) is smaller than the largest request accepted "
            f"({largest_request} bytes, max_receive_message_bytes or model.yaml), which could never be served; "
            "raise it, or lower max_receive_message_bytes"
        )
    return InflightBudget(setting)
