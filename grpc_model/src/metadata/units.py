"""The size and duration forms people write in model.yaml (`512K`, `1.5MB`, `1G`; `20s`, `1500ms`, `2m`), and the
bounds of every number in model.yaml and the settings, with their units."""

import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(I?B)?\s*$", re.IGNORECASE)
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$", re.IGNORECASE)
_SIZE_FACTORS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
_DURATION_FACTORS = {"ms": Decimal("0.001"), "s": Decimal(1), "m": Decimal(60), "h": Decimal(3600)}
MAX_SIZE_BYTES = 2**63 - 1
"""The largest size a file (an int64 length) can have: 8 EiB."""
MAX_DURATION_SECONDS = (2**31 - 1) // 1000
"""The longest wait every timer accepts: poll(2) takes at most 2**31-1 ms (about 24 days)."""


def parse_size(text: str, low: int = 0, high: int = MAX_SIZE_BYTES) -> int:
    """Bytes in `text`: plain bytes, or K, M, G, T with optional B or iB, all binary (1K = 1024).

    Binary for every spelling: a limit read a little generously never rejects a file its
    author meant to allow. Decimal, not float: a long number stays exact instead of turning
    into infinity. Outside `low`..`high` bytes is an error that names both.
    """
    match = _SIZE.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not a size; write bytes or a number with K, M, G or T, e.g. 512K, 1.5MB, 1G")
    number, unit, _ = match.groups()
    size = int(Decimal(number) * _SIZE_FACTORS[unit.upper()])
    if not low <= size <= high:
        raise ValueError(f"too {'large' if size > high else 'small'}: must be between {low} and {high} bytes")
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


def shown_number(number: float) -> str:
    """`60000`, `2147483647`, `0.5`, `3.40282e+38`: whole numbers in full, others short."""
    return str(int(number)) if float(number).is_integer() and abs(number) < 1e16 else f"{number:g}"


@dataclass(frozen=True)
class Range:
    """A number's bounds and unit, so that an error says both: `must be between 0 and 60000 milliseconds`.

    Used as `Annotated[float, Range(0, 60_000, "milliseconds")]`. NaN fails every comparison, and an
    infinity is past every bound, so neither gets in; the bounds also go into the JSON Schema.
    """

    low: float
    high: float
    unit: str
    low_excluded: bool = False

    def check(self, value: float) -> float:
        above_low = value > self.low if self.low_excluded else value >= self.low
        if not (above_low and value <= self.high):
            low = f"more than {shown_number(self.low)} and at most" if self.low_excluded else "between"
            joint = "" if self.low_excluded else f" {shown_number(self.low)} and"
            raise ValueError(f"must be {low}{joint} {shown_number(self.high)} {self.unit}")
        return value

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(self.check, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        json_schema = handler(schema)
        json_schema["exclusiveMinimum" if self.low_excluded else "minimum"] = self.low
        json_schema["maximum"] = self.high
        return json_schema
