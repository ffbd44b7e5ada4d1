"""The size and duration forms people write in model.yaml: `512K`, `1.5MB`, `1G`; `20s`, `1500ms`, `2m`."""

import re
from decimal import Decimal

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(I?B)?\s*$", re.IGNORECASE)
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$", re.IGNORECASE)
_SIZE_FACTORS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
_DURATION_FACTORS = {"ms": Decimal("0.001"), "s": Decimal(1), "m": Decimal(60), "h": Decimal(3600)}
MAX_SIZE_BYTES = 2**63 - 1
"""The largest size a file (an int64 length) can have."""
MAX_DURATION_SECONDS = (2**31 - 1) // 1000
"""The longest wait every timer accepts: poll(2) takes at most 2**31-1 ms (about 24 days)."""


def parse_size(text: str) -> int:
    """Bytes in `text`: plain bytes, or K, M, G, T with optional B or iB, all binary (1K = 1024).

    Binary for every spelling: a limit read a little generously never rejects a file its
    author meant to allow. Decimal, not float: a long number stays exact instead of turning
    into infinity.
    """
    match = _SIZE.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not a size; write bytes or a number with K, M, G or T, e.g. 512K, 1.5MB, 1G")
    number, unit, _ = match.groups()
    size = int(Decimal(number) * _SIZE_FACTORS[unit.upper()])
    if size > MAX_SIZE_BYTES:
        raise ValueError(f"too large: a file has at most {MAX_SIZE_BYTES} bytes")
    return size


def parse_duration(text: str) -> float:
    """Seconds in `text`: a number with ms, s, m or h (a plain number is seconds)."""
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not a duration; write a number with ms, s, m or h, e.g. 1500ms, 20s, 2m")
    number, unit = match.groups()
    seconds = Decimal(number) * _DURATION_FACTORS[(unit or "s").lower()]
    if seconds <= 0:
        raise ValueError(f"{text!r} must be longer than zero")
    if seconds > MAX_DURATION_SECONDS:
        raise ValueError(f"too long: a timeout is at most {MAX_DURATION_SECONDS} s (about 24 days)")
    return float(seconds)
