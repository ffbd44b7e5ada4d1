"""Rows of numbers from an item's file: a CSV with a header, or a JSON list of rows (lists or objects).

Columns are matched by name, so a CSV's columns may come in any order; a missing or extra column, or a
value that is not a number, is refused with its name and row, because the author of the file reads it.
"""

import csv
import io
import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

MAX_NAMES_LISTED = 20


class InputError(ValueError):
    """The item's rows cannot be read; the message names the row, the column or the names at fault."""


def read_rows(content: bytes, names: Sequence[str]) -> npt.NDArray[np.float64]:
    """The rows as a float64 matrix, one column per name in `names`' order."""
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise InputError(
            f"the file is not UTF-8 text (byte {error.start}): send a CSV or a JSON list of rows"
        ) from None
    rows = _json_rows(text, names) if text.lstrip().startswith(("[", "{")) else _csv_rows(text, names)
    if not rows:
        raise InputError("the file has no rows")
    return np.array(rows, dtype=np.float64).reshape(len(rows), len(names))


def _listed(names: Sequence[str]) -> str:
    shown = ", ".join(repr(name) for name in names[:MAX_NAMES_LISTED])
    return shown + (f" and {len(names) - MAX_NAMES_LISTED} more" if len(names) > MAX_NAMES_LISTED else "")


def _columns_problem(given: Sequence[str], names: Sequence[str]) -> str | None:
    wanted = set(names)
    missing = [name for name in names if name not in set(given)]
    extra = [name for name in given if name not in wanted]
    repeated = sorted({name for name in given if given.count(name) > 1})
    problems = [f"missing {_listed(missing)}"] if missing else []
    problems += [f"not features of this model: {_listed(extra)}"] if extra else []
    problems += [f"repeated: {_listed(repeated)}"] if repeated else []
    if not problems:
        return None
    return "; ".join(problems) + f" (the model's features: {_listed(names)})"


def _csv_rows(text: str, names: Sequence[str]) -> list[list[float]]:
    records = (record for record in csv.reader(io.StringIO(text, newline="")) if record)
    try:
        header = [name.strip() for name in next(records, [])]
        if not header:
            raise InputError("the file is empty: send a CSV whose first line names the columns")
        problem = _columns_problem(header, names)
        if problem:
            raise InputError(f"CSV header: {problem}")
        order = [header.index(name) for name in names]
        rows = []
        for number, record in enumerate(records, start=1):
            if len(record) != len(header):
                raise InputError(f"row {number} has {len(record)} values; the header names {len(header)} columns")
            rows.append([_number(record[index], number, header[index]) for index in order])
    except csv.Error as error:
        raise InputError(f"not a readable CSV: {error}") from None
    return rows


def _number(text: str, row: int, column: str) -> float:
    try:
        value = float(text)
    except ValueError:
        shown = text if len(text) <= 40 else text[:40] + "..."
        what = "empty" if not text.strip() else f"{shown!r} is not a number"
        raise InputError(f"row {row}, column {column!r}: {what} (write nan for a missing value)") from None
    return value


def _json_rows(text: str, names: Sequence[str]) -> list[list[float]]:
    try:
        document = json.loads(text)
    except (ValueError, RecursionError) as error:
        raise InputError(f"not valid JSON: {error}") from None
    if not isinstance(document, list):
        raise InputError("a JSON input must be a list of rows: each a list of numbers or an object of name: number")
    return [_json_row(row, number, names) for number, row in enumerate(document, start=1)]


def _json_row(row: Any, number: int, names: Sequence[str]) -> list[float]:
    if isinstance(row, dict):
        problem = _columns_problem(list(row), names)
        if problem:
            raise InputError(f"row {number}: {problem}")
        return [_json_number(row[name], number, name) for name in names]
    if isinstance(row, list):
        if len(row) != len(names):
            raise InputError(f"row {number} has {len(row)} values; the model takes {len(names)} ({_listed(names)})")
        return [_json_number(value, number, name) for value, name in zip(row, names, strict=True)]
    raise InputError(f"row {number} is {type(row).__name__}: each row must be a list of numbers or an object")


def _json_number(value: Any, row: int, column: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InputError(f"row {row}, column {column!r}: {json.dumps(value)[:40]} is not a number")
    try:
        return float(value)
    except OverflowError:  # an integer too large for a float
        raise InputError(f"row {row}, column {column!r}: {str(value)[:40]}... is too large") from None
