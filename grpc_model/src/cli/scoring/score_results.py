"""`grpc-model score`'s results file, written resumably, and the files of its binary outputs.

Results are JSONL or CSV, one line per item, appended and flushed as answers arrive, so a run
killed at any moment leaves only whole lines (and at most one torn last line, which the next
run cuts off): every line is an item answered once, every item not on a line is scored again.
A file that is not such a results file is refused as it is, never cut or appended to.
"""

import csv
import hashlib
import io
import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, TextIO

from grpc_model.src.cli.scoring.score_io import ERROR, ID, SUCCESS, ScoreInputError, one_line

RESULT_FORMATS = (".jsonl", ".csv")
JSONL_START = '{"id": '  # how every line `ResultWriter` writes to a .jsonl file begins
NOT_OURS = "not a results file of grpc-model score"
UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
READABLE_PART = 64  # characters of an escaped id kept in its folder's name, before the hash


class ResultWriter:
    """Appends one line per answered item to a .jsonl or .csv file; knows which ids it already holds.

    Everything about an existing file is checked before anything is cut, created or written."""

    def __init__(self, path: Path, output_names: Sequence[str], ids: Iterable[str]) -> None:
        if path.suffix.lower() not in RESULT_FORMATS:
            raise ScoreInputError(f"{path}: results must be a .jsonl or a .csv file")
        self.path = path
        self.csv = path.suffix.lower() == ".csv"
        self.output_names = list(output_names)
        self.files_dir = path.with_name(path.name + ".files")  # binary outputs, one folder per item
        self.columns = [ID, SUCCESS, *self.output_names, ERROR]
        self.done, whole = self._resume()
        if self.files_dir.exists() and not self.files_dir.is_dir():
            raise ScoreInputError(f"{self.files_dir}: is not a folder, so binary outputs cannot be written in it")
        self.folders = OutputFolders([*ids, *self.done])
        try:
            if whole is not None:
                with path.open("r+b") as file:
                    file.truncate(whole)
            path.parent.mkdir(parents=True, exist_ok=True)
            self._file: TextIO = path.open("a", encoding="utf-8", newline="")
        except OSError as error:
            raise ScoreInputError(f"{path}: cannot write it: {error.strerror}") from None
        if self.csv and path.stat().st_size == 0:
            self._write_line(self.columns)

    def _resume(self) -> tuple[set[str], int | None]:
        """The ids already answered, and where to cut a torn last line (a kill mid-write), if there is one."""
        try:
            content = self.path.read_bytes()
        except FileNotFoundError:
            return set(), None
        except IsADirectoryError:
            raise ScoreInputError(f"{self.path}: is a folder, not a results file") from None
        except OSError as error:
            raise ScoreInputError(f"{self.path}: cannot read it: {error.strerror}") from None
        whole = content.rfind(b"\n") + 1
        try:
            lines = content[:whole].decode("utf-8").split("\n")[:-1]  # not splitlines: U+2028 is inside a line
        except UnicodeDecodeError as error:
            line = content.count(b"\n", 0, error.start) + 1
            raise ScoreInputError(f"{self.path}: line {line} is not UTF-8 text: {NOT_OURS}") from None
        done = self._csv_ids(lines) if self.csv else self._jsonl_ids(lines)
        torn = content[whole:]
        if torn:
            start = (_csv_line(self.columns) if self.csv and not lines else "" if self.csv else JSONL_START).encode()
            if not (torn.startswith(start) or start.startswith(torn)):
                raise ScoreInputError(
                    f"{self.path}: line {len(lines) + 1} is not a line of grpc-model score, nor one cut short by "
                    f"a kill (it has no newline at its end): {NOT_OURS}"
                )
        return done, (whole if torn else None)

    def _jsonl_ids(self, lines: list[str]) -> set[str]:
        done = set()
        for number, line in enumerate(lines, start=1):
            try:
                record = json.loads(line)
            except RecursionError:
                raise ScoreInputError(f"{self.path}: line {number}: nested too deeply: {NOT_OURS}") from None
            except ValueError as error:
                raise ScoreInputError(f"{self.path}: line {number}: not JSON ({error}): {NOT_OURS}") from None
            if not isinstance(record, dict) or not isinstance(record.get(ID), str):
                raise ScoreInputError(f"{self.path}: line {number}: not a JSON object with an id: {NOT_OURS}")
            done.add(record[ID])
        return done

    def _csv_ids(self, lines: list[str]) -> set[str]:
        rows = csv.reader(lines)
        done = set()
        try:
            for row in rows:
                number = rows.line_num
                if number == 1 and row != self.columns:
                    raise ScoreInputError(
                        f"{self.path}: its columns {row} are not {self.columns}: another model's results, or {NOT_OURS}"
                    )
                if len(row) != len(self.columns):
                    raise ScoreInputError(
                        f"{self.path}: line {number}: {len(row)} cells, not {len(self.columns)}: {NOT_OURS}"
                    )
                if number > 1:
                    done.add(row[0])
        except csv.Error as error:
            raise ScoreInputError(f"{self.path}: {error}: {NOT_OURS}") from None
        return done

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
        """A JSON output parsed, a text output as text, a binary output as the path of a file written for it
        (`name` is a plain file name: run_score checked every declared name)."""
        try:
            text = content.decode("utf-8")
        except UnicodeDecodeError:
            target = self.files_dir / self.folders.name(item_id) / name
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(content)
            except OSError as error:
                raise ScoreInputError(f"{target}: cannot write item {item_id}'s {name}: {error.strerror}") from None
            return str(target.relative_to(self.path.parent))
        try:
            return json.loads(text) if name.endswith(".json") else text
        except ValueError:
            return text

    def _write_line(self, cells: list[str]) -> None:
        self._file.write(_csv_line(cells))

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        self._file.close()


class OutputFolders:
    """Each item's folder of binary outputs, one-to-one with ids even where a file system folds case.

    An id of letters, digits, `.`, `_` and `-` (not starting with `.`) is its own folder's name, unless
    another id differs from it only in case; any other id is escaped (the rest as `_`, cut to 64
    characters) and followed by `~` and 12 hex digits of its SHA-256, which no plain id holds."""

    def __init__(self, ids: Iterable[str]) -> None:
        folded = Counter(item_id.casefold() for item_id in set(ids) if _plain(item_id))
        self.clashing = {name for name, count in folded.items() if count > 1}

    def name(self, item_id: str) -> str:
        if _plain(item_id) and item_id.casefold() not in self.clashing:
            return item_id
        digest = hashlib.sha256(item_id.encode("utf-8", "surrogatepass")).hexdigest()[:12]
        return f"{UNSAFE.sub('_', item_id)[:READABLE_PART]}~{digest}"


def _plain(item_id: str) -> bool:
    return 0 < len(item_id) <= READABLE_PART and not item_id.startswith(".") and not UNSAFE.search(item_id)


def _csv_line(cells: list[str]) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerow(cells)
    return out.getvalue()


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return one_line(value)
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))  # no newline: one item, one line
