"""The size and duration forms people write in model.yaml: `512K`, `1.5MB`, `1G`; `20s`, `1500ms`, `2m`."""

import re

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(I?B)?\s*$", re.IGNORECASE)
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$", re.IGNORECASE)
_SIZE_FACTORS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
_DURATION_FACTORS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_size(text: str) -> int:
    """Bytes in `text`: plain bytes, or K, M, G, T with optional B or iB, all binary (1K = 1024).

    Binary for every spelling: a limit read a little generously never rejects a file its
    author meant to allow.
    """
    match = _SIZE.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not a size; write bytes or a number with K, M, G or T, e.g. 512K, 1.5MB, 1G")
    number, unit, _ = match.groups()
    return int(float(number) * _SIZE_FACTORS[unit.upper()])


def parse_duration(text: str) -> float:
    """Seconds in `text`: a number with ms, s, m or h (a plain number is seconds)."""
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not a duration; write a number with ms, s, m or h, e.g. 1500ms, 20s, 2m")
    number, unit = match.groups()
    seconds = float(number) * _DURATION_FACTORS[(unit or "s").lower()]
    if seconds <= 0:
        raise ValueError(f"{text!r} must be longer than zero")
    return seconds
