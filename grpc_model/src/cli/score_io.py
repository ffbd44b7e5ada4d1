"""`grpc-model score`'s files: the items it reads and the results it writes, resumably.

Inputs are a folder, a JSONL file or a CSV file; each item gets an id (its file or folder
name, or its line number) that is also the key for resuming. Results are JSONL or CSV, one
line per item, appended and flushed as answers arrive, so a run killed at any moment leaves
only whole lines (and at most one torn last line, which the next run cuts off): every line
is an item answered once, every item not on a line is scored again.
"""

import csv
import io
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

ID = "id"
SUCCESS = "success"
ERROR = "error"
RESULT_FORMATS = (".jsonl", ".csv")


class ScoreInputError(ValueError):
    """The inputs or the results file cannot be used as given; the message says why."""


@dataclass(frozen=True)
class Item:
    """One item to score: its id, and for each input name a file to read or inline text."""

    id: str
    sources: dict[str, Path | str]

    def read(self) -> dict[str, bytes]:
        """The item's files, read only now so that a large input set is never all in memory."""
        item = {}
        for name, source in self.sources.items():
            try:
                item[name] = source.read_bytes() if isinstance(source, Path) else source.encode("utf-8")
            except OSError as error:
                raise ScoreInputError(f"item {self.id}: {name}: cannot read {source}: {error.strerror}") from None
        return item


def read_items(path: Path, input_names: Sequence[str]) -> list[Item]:
    """Every item of a folder, a .jsonl or a .csv file, in a stable order, for a model with these inputs."""
    if path.is_dir():
        return _folder_items(path, input_names)
    if not path.is_file():
        raise ScoreInputError(f"{path}: no such file or folder")
    if path.suffix.lower() == ".jsonl":
        return _jsonl_items(path, input_names)
    if path.suffix.lower() == ".csv":
        return _csv_items(path, input_names)
    raise ScoreInputError(f"{path}: inputs must be a folder, a .jsonl file or a .csv file")


def _folder_items(folder: Path, input_names: Sequence[str]) -> list[Item]:
    """One file per item when the model has one input, else one subfolder per item holding its files."""
    entries = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    if len(input_names) == 1 and not any(p.is_dir() for p in entries):
        return [Item(p.name, {input_names[0]: p}) for p in entries if p.is_file()]
    items = []
    for sub in (p for p in entries if p.is_dir()):
        items.append(Item(sub.name, {name: sub / name for name in input_names if (sub / name).is_file()}))
    if not items:
        raise ScoreInputError(
            f"{folder}: expected one subfolder per item holding {', '.join(input_names)}"
            + (" (or, for this one-input model, one file per item)" if len(input_names) == 1 else "")
        )
    return items


def _value(base: Path, where: str, name: str, value: Any) -> Path | str:
    """A path to a file (relative to the inputs file's folder) when one exists there, else inline text."""
    if not isinstance(value, str):
        raise ScoreInputError(f"{where}: {name} must be a path or text, got {type(value).__name__}")
    candidate = base / value
    if value and len(value) < 4096 and "\n" not in value and candidate.is_file():
        return candidate
    return value


def _sources(base: Path, where: str, record: dict[str, Any], input_names: Sequence[str]) -> dict[str, Path | str]:
    unknown = sorted(set(record) - set(input_names) - {ID})
    if unknown:
        raise ScoreInputError(f"{where}: {', '.join(unknown)}: not an input of the model ({', '.join(input_names)})")
    return {name: _value(base, where, name, record[name]) for name in input_names if name in record}


def _jsonl_items(path: Path, input_names: Sequence[str]) -> list[Item]:
    items = []
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                record = json.loads(line)
            except ValueError as error:
                raise ScoreInputError(f"{where}: not a JSON object: {error}") from None
            if not isinstance(record, dict):
                raise ScoreInputError(f"{where}: expected a JSON object of input name to path or text")
            item_id = str(record.get(ID, number))
            items.append(Item(item_id, _sources(path.parent, where, record, input_names)))
    return _unique(path, items)


def _csv_items(path: Path, input_names: Sequence[str]) -> list[Item]:
    items = []
    with path.open(encoding="utf-8", newline="") as rows:
        reader = csv.DictReader(rows)
        for number, row in enumerate(reader, start=1):
            where = f"{path}: row {number}"
            record = {key: value for key, value in row.items() if key is not None and value is not None}
            item_id = record.get(ID) or str(number)
            items.append(Item(item_id, _sources(path.parent, where, record, input_names)))
    return _unique(path, items)


def _unique(path: Path, items: list[Item]) -> list[Item]:
    seen: set[str] = set()
    for item in items:
        if item.id in seen:
            raise ScoreInputError(f"{path}: id {item.id!r} appears twice; ids must be unique to resume")
        seen.add(item.id)
    return items


class ResultWriter:
    """Appends one line per answered item to a .jsonl or .csv file; knows which ids it already holds."""

    def __init__(self, path: Path, output_names: Sequence[str]) -> None:
        if path.suffix.lower() not in RESULT_FORMATS:
            raise ScoreInputError(f"{path}: results must be a .jsonl or a .csv file")
        self.path = path
        self.csv = path.suffix.lower() == ".csv"
        self.output_names = list(output_names)
        self.files_dir = path.with_name(path.name + ".files")  # binary outputs, one folder per item
        self.columns = [ID, SUCCESS, *self.output_names, ERROR]
        self.done = self._resume()
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file: TextIO = path.open("a", encoding="utf-8", newline="")
        if self.csv and path.stat().st_size == 0:
            self._write_line(self.columns)

    def _resume(self) -> set[str]:
        """The ids already answered; a torn last line (a kill mid-write) is cut off, so that item runs again."""
        if not self.path.exists():
            return set()
        content = self.path.read_bytes()
        whole = content[: content.rfind(b"\n") + 1]
        if len(whole) != len(content):
            with self.path.open("r+b") as file:
                file.truncate(len(whole))
        text = whole.decode("utf-8")
        if self.csv:
            rows = list(csv.reader(io.StringIO(text)))
            if rows and rows[0] != self.columns:
                raise ScoreInputError(f"{self.path}: its columns {rows[0]} are not {self.columns}: another model's?")
            return {row[0] for row in rows[1:] if row}
        try:
            return {str(json.loads(line)[ID]) for line in text.splitlines() if line.strip()}
        except (ValueError, KeyError, TypeError) as error:
            raise ScoreInputError(f"{self.path}: not a results file of grpc-model score: {error}") from None

    def write(self, item_id: str, success: bool, output: dict[str, bytes]) -> None:
        """One item's line; it is written whole and flushed by `flush`."""
        row: dict[str, Any] = {ID: item_id, SUCCESS: success}
        if success:
            row.update({name: self._value(item_id, name, output[name]) for name in self.output_names if name in output})
        else:
            row[ERROR] = one_line(output.get(ERROR, b"").decode("utf-8", "replace"))
        if self.csv:
            self._write_line([_csv_cell(row.get(column)) for column in self.columns])
        else:
            self._file.write(
                json.dumps({column: row.get(column) for column in self.columns}, ensure_ascii=False) + "\n"
            )
        self.done.add(item_id)

    def _value(self, item_id: str, name: str, content: bytes) -> Any:
        """A JSON output parsed, a text output as text, a binary output as the path of a file written for it."""
        try:
            text = content.decode("utf-8")
        except UnicodeDecodeError:
            target = self.files_dir / _safe(item_id) / Path(name).name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)
            return str(target.relative_to(self.path.parent))
        try:
            return json.loads(text) if name.endswith(".json") else text
        except ValueError:
            return text

    def _write_line(self, cells: list[str]) -> None:
        out = io.StringIO()
        csv.writer(out, lineterminator="\n").writerow(cells)
        self._file.write(out.getvalue())

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return one_line(value)
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))  # no newline: one item, one line


def one_line(text: str) -> str:
    """Whitespace runs, newlines included, as one space: every result stays one line, and alike messages group."""
    return " ".join(text.split())


def _safe(item_id: str) -> str:
    """An id as a folder name: never a path outside the results' folder."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", item_id).lstrip(".") or "_"
