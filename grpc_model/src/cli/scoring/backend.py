"""What a scoring run calls and how: a backend (the servers, or the model in this process) answers a batch of
items, one (success, output files) pair per item; and the run's options.

score.py (the servers' backend and the run) and score_local.py (the model's) share these: kept apart, neither
imports the other.
"""

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from grpc_model.src.client import DEFAULT_MODEL, PLAINTEXT, ModelRoute
from grpc_model.src.security.channel import ClientSecurity

Answer = tuple[bool, dict[str, bytes]]
Backend = Callable[[list[dict[str, bytes]]], Awaitable[list[Answer]]]


@dataclass
class Options:
    batch_size: int = 8
    concurrency: int = 8
    timeout: float = 60.0
    detect_drift: bool = False
    explain: bool = False
    security: ClientSecurity = PLAINTEXT
    paths_outside: bool = False  # read files outside the inputs' folder (links, paths in a CSV or JSONL)
    route: ModelRoute = DEFAULT_MODEL  # the model of a server of several that the calls are for
