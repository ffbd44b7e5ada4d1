"""`grpc-model score`'s inputs: the items it reads, and the names it lets a server (or model) declare.

Inputs are a folder, a JSONL file or a CSV file; each item gets an id (its file or folder
name, or its line number) that is also the key for resuming (score_results.py). A scorer
reads only regular files inside the inputs folder, or inside the JSONL or CSV file's folder,
after resolving links, unless its user allows paths outside on purpose: a value in a file,
or a name a hostile server declares, never picks a file elsewhere.
"""

import csv
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grpc_model.src.metadata.names import file_name_problem

ID = "id"
SUCCESS = "success"
ERROR = "error"
OUTSIDE_HINT = "--allow-paths-outside reads it anyway"


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


def check_declared(who: str, kind: str, names: Sequence[str], reserved: Sequence[str] = ()) -> None:
    """Refuses input or output names that are not plain file names, that differ only in case (a file
    system that folds case would read or write one file for both), or that are `reserved`, before
    anything is read or written."""
    for name in names:
        why = f"it is one of the results' own columns ({', '.join(reserved)})" if name in reserved else None
        why = why or (f"it {problem}" if (problem := file_name_problem(name)) else None)
        if why is not None:
            raise ScoreInputError(
                f"{who} declares an {kind} named {name!r}, which cannot be used ({why}): "
                "nothing was read, sent or written"
            )
    seen: dict[str, str] = {}
    for name in names:
        other = seen.get(name.casefold())
        if other is not None:
            raise ScoreInputError(
                f"{who} declares an {kind} named {other!r} and another named {name!r}, which a file system that "
                "ignores case cannot hold apart: nothing was read, sent or written"
            )
        seen[name.casefold()] = name


def read_items(path: Path, input_names: Sequence[str], outside: bool = False) -> list[Item]:
    """Every item of a folder, a .jsonl or a .csv file, in a stable order, for a model with these inputs;
    files outside the folder (after links) are refused unless `outside`."""
    if path.is_dir():
        return _folder_items(path, input_names, outside)
    if not path.is_file():
        raise ScoreInputError(f"{path}: no such file or folder")
    read = {".jsonl": _jsonl_items, ".csv": _csv_items}.get(path.suffix.lower())
    if read is not None:
        try:
            return read(path, input_names, outside)
        except UnicodeDecodeError as error:
            raise ScoreInputError(f"{path}: not UTF-8 text: {error}") from None
    raise ScoreInputError(f"{path}: inputs must be a folder, a .jsonl file or a .csv file")


def _inside(root: Path, path: Path) -> bool:
    """Whether `path`, its links resolved, is in `root` (itself resolved)."""
    return path.resolve().is_relative_to(root)


def _folder_items(folder: Path, input_names: Sequence[str], outside: bool) -> list[Item]:
    """One file per item when the model has one input, else one subfolder per item holding its files."""
    root = folder.resolve()

    def kept(item_id: str, file: Path) -> Path:
        if not outside and not _inside(root, file):
            raise ScoreInputError(
                f"{folder}: item {item_id}: {file.relative_to(folder)} leads outside the inputs folder, "
                f"to {file.resolve()}; {OUTSIDE_HINT}"
            )
        return file

    entries = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    if len(input_names) == 1 and not any(p.is_dir() for p in entries):
        return _unique(folder, [Item(p.name, {input_names[0]: kept(p.name, p)}) for p in entries if p.is_file()])
    items = []
    for sub in (p for p in entries if p.is_dir()):
        files = {name: sub / name for name in input_names if (sub / name).is_file()}
        items.append(Item(sub.name, {name: kept(sub.name, file) for name, file in files.items()}))
    if not items:
        raise ScoreInputError(
            f"{folder}: expected one subfolder per item holding {', '.join(input_names)}"
            + (" (or, for this one-input model, one file per item)" if len(input_names) == 1 else "")
        )
    return _unique(folder, items)


class _Values:
    """How the values of a JSONL or CSV file are read: paths relative to its folder, and only inside it."""

    def __init__(self, inputs: Path, outside: bool) -> None:
        self.base, self.root, self.outside = inputs.parent, inputs.parent.resolve(), outside

    def value(self, where: str, name: str, value: Any) -> Path | str:
        """A path to a file (relative to the inputs file's folder) when one exists there, else inline text."""
        if not isinstance(value, str):
            raise ScoreInputError(f"{where}: {name} must be a path or text, got {type(value).__name__}")
        if not _unicode(value):
            raise ScoreInputError(f"{where}: {name}: {value!r} is not valid UTF-8 (it holds a lone surrogate)")
        candidate = self.base / value
        if not (value and len(value) < 4096 and "\n" not in value and candidate.is_file()):
            return value
        if not self.outside and not _inside(self.root, candidate):
            raise ScoreInputError(
                f"{where}: {name}: {value!r} is a file outside {self.base}, the folder of the inputs file; "
                f"{OUTSIDE_HINT}"
            )
        return candidate

    def sources(self, where: str, record: dict[str, Any], input_names: Sequence[str]) -> dict[str, Path | str]:
        unknown = sorted(set(record) - set(input_names) - {ID})
        if unknown:
            raise ScoreInputError(
                f"{where}: {', '.join(unknown)}: not an input of the model ({', '.join(input_names)})"
            )
        return {name: self.value(where, name, record[name]) for name in input_names if name in record}


def _jsonl_items(path: Path, input_names: Sequence[str], outside: bool) -> list[Item]:
    values = _Values(path, outside)
    items = []
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                record = json.loads(line)
            except (ValueError, RecursionError) as error:
                raise ScoreInputError(f"{where}: not a JSON object: {error}") from None
            if not isinstance(record, dict):
                raise ScoreInputError(f"{where}: expected a JSON object of input name to path or text")
            item_id = str(record.get(ID, number))
            items.append(Item(item_id, values.sources(where, record, input_names)))
    return _unique(path, items)


def _csv_items(path: Path, input_names: Sequence[str], outside: bool) -> list[Item]:
    values = _Values(path, outside)
    items = []
    with path.open(encoding="utf-8", newline="") as rows:
        reader = csv.DictReader(rows)
        for number, row in enumerate(reader, start=1):
            where = f"{path}: row {number}"
            record = {key: value for key, value in row.items() if key is not None and value is not None}
            item_id = record.get(ID) or str(number)
            items.append(Item(item_id, values.sources(where, record, input_names)))
    return _unique(path, items)


def _unicode(text: str) -> bool:
    """Whether `text` can be written as UTF-8: a file name in another encoding, or a JSON string's lone
    surrogate, cannot (and would end the run at its first result line)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _unique(path: Path, items: list[Item]) -> list[Item]:
    """Every id once (they are how a run resumes), and each one writable in the UTF-8 results."""
    seen: set[str] = set()
    for item in items:
        if not _unicode(item.id):
            raise ScoreInputError(
                f"{path}: id {item.id!r} is not valid UTF-8 (a file name in another encoding, or a lone "
                "surrogate): the results are UTF-8; rename it"
            )
        if item.id in seen:
            raise ScoreInputError(f"{path}: id {item.id!r} appears twice; ids must be unique to resume")
        seen.add(item.id)
    return items


def one_line(text: str) -> str:
    """Whitespace runs, newlines included, as one space: every result stays one line, and alike messages group."""
    return " ".join(text.split())
