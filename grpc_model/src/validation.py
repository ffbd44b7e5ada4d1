"""Checking each input item against the served model.yaml before the model sees it.

A broken item fails alone, with a message that names the file and the rule it breaks;
the model is only ever called with items that have every declared file, within its
declared size, of an accepted media type.
"""

import codecs
import csv
import difflib
import functools
import io
import itertools
import json
import logging
import mimetypes
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import ijson
from ijson.utils import sendable_list

from grpc_model.src.metadata import ModelSpec
from grpc_model.src.metadata.units import parse_size

if TYPE_CHECKING:
    from _csv import Reader as CsvReader

logger = logging.getLogger(__name__)

CHUNK_BYTES = 8 * 1024
"""Content is decoded and parsed this much at a time: memory stays small, and the C parser holds
the GIL for one chunk only (well under a millisecond), so a large file checked on a thread does
not stall the event loop."""

Sniffer = Callable[[bytes], bool]
CheckedItem = tuple[dict[str, bytes], str | None]


def _decoded(content: bytes, encoding: str) -> Iterator[str]:
    """`content` decoded a chunk at a time; raises UnicodeError."""
    decoder = codecs.getincrementaldecoder(encoding)()
    view = memoryview(content)
    for start in range(0, len(view), CHUNK_BYTES):
        yield decoder.decode(view[start : start + CHUNK_BYTES])
    yield decoder.decode(b"", final=True)


def _is_text(content: bytes, encoding: str) -> bool:
    try:
        for _ in _decoded(content, encoding):
            pass
    except UnicodeError:
        return False
    return True


def _utf8_chunks(content: bytes) -> Iterator[bytes]:
    """JSON text as UTF-8, from any encoding json.loads reads: UTF-8 (with or without a BOM), UTF-16, UTF-32."""
    encoding = json.detect_encoding(content[:4])
    if encoding == "utf-8":
        view = memoryview(content)
        for start in range(0, len(view), CHUNK_BYTES):
            yield view[start : start + CHUNK_BYTES].tobytes()
    else:
        for text in _decoded(content, encoding):
            if text:  # an empty chunk would tell the parser that the document ended
                yield text.encode("utf-8")


def _is_json(content: bytes) -> bool:
    """RFC 8259 JSON, parsed as a stream (ijson): nesting of any depth, and memory bounded by a chunk."""
    events = sendable_list()  # the parser's output, dropped after each chunk
    parser = ijson.basic_parse_coro(events, use_float=True)  # floats: validity is the same, Decimals cost more
    try:
        for chunk in _utf8_chunks(content):
            parser.send(chunk)
            events.clear()
            _let_others_run()
        parser.close()
    except (ijson.JSONError, UnicodeError):
        return False
    return True


class ContentError(ValueError):
    """The content is not of the media type, and the message says where: a check that can tell why raises it."""


CSV_DELIMITERS = ",;\t|"
"""The delimiters a table may use (semicolons where the decimal mark is a comma)."""


def _line_blocks(content: bytes, encoding: str) -> Iterator[io.StringIO]:
    """The text in blocks of whole lines, each read a line at a time as csv wants (newline=""), in linear time."""
    tail: list[str] = []
    for text in _decoded(content, encoding):
        end = max(text.rfind("\n"), text.rfind("\r")) + 1
        tail.append(text[:end] if end else text)
        if end:
            yield io.StringIO("".join(tail), newline="")
            tail = [text[end:]]
    if any(tail):
        yield io.StringIO("".join(tail), newline="")


def _csv_records(content: bytes, encoding: str, delimiter: str) -> "CsvReader":
    """The records, blank lines included (as []); quotes as RFC 4180 has them (`strict`: no unterminated quote)."""
    lines = itertools.chain.from_iterable(_line_blocks(content, encoding))
    return csv.reader(lines, delimiter=delimiter, strict=True)


def _first_width(content: bytes, encoding: str, delimiter: str) -> int:
    """How many fields the first record has with `delimiter` (0 when it cannot be read)."""
    try:
        return len(next(filter(None, _csv_records(content, encoding, delimiter)), []))
    except csv.Error:
        return 0


def _csv_problem(content: bytes, encoding: str, delimiter: str) -> tuple[int, str] | None:
    """Where and why the content is not CSV with one field count under `delimiter`; None when it is."""
    records = _csv_records(content, encoding, delimiter)
    try:
        if len(set(map(len, filter(None, records)))) <= 1:  # the common case, at C speed
            return None
        records = _csv_records(content, encoding, delimiter)  # ragged: find the line, now at Python speed
        width, first_line = 0, 0
        for record in filter(None, records):
            if not width:
                width, first_line = len(record), records.line_num
            elif len(record) != width:
                where = f"line {records.line_num} has {len(record)} fields, line {first_line} has {width}"
                return records.line_num, f"{where} (delimiter {delimiter!r})"
    except csv.Error as error:
        if "field limit" in str(error):  # csv's limit of 128 KiB per field (a process-wide setting): cannot tell
            return None
        return records.line_num, f"line {records.line_num}: {error}"
    return None


def _is_csv(content: bytes, encoding: str) -> bool:
    """RFC 4180 CSV in `encoding` with one field count throughout; raises ContentError naming the line otherwise.

    The delimiter is one of CSV_DELIMITERS that splits the first record, the most fields first; a table that
    is consistent under one of them passes. Linear: one pass for a good table, a few for a bad one.
    """
    try:
        widths = {delimiter: _first_width(content, encoding, delimiter) for delimiter in CSV_DELIMITERS}
        candidates = sorted((d for d in CSV_DELIMITERS if widths[d] > 1), key=lambda d: -widths[d]) or [","]
        failures = []
        for delimiter in candidates:
            failure = _csv_problem(content, encoding, delimiter)
            if failure is None:
                return True
            failures.append(failure)
    except UnicodeError as error:
        raise ContentError(f"not {encoding} text ({getattr(error, 'reason', error)})") from None
    raise ContentError(max(failures)[1])  # the delimiter that read furthest says what is wrong


def _let_others_run() -> None:
    """Hands the GIL over between two chunks, so that a thread waiting for it (the event loop) takes it now
    rather than after Python's 5 ms switch interval. Without it, checking a 150 MB JSON item made every
    step of the loop wait: health answered in 1-2 s under load (docs/reliability.md)."""
    time.sleep(0)


# Media type -> does the content look like it? Types not listed here are not checked, except
# text/plain and text/csv, which are checked in their declared charset (see `sniffer`).
SNIFFERS: dict[str, Sniffer] = {
    "application/json": _is_json,
    "text/csv": functools.partial(_is_text, encoding="utf-8"),  # RFC 7111's default charset; a runtime's rows
    "image/png": lambda b: b.startswith(b"\x89PNG\r\n\x1a\n"),
    "image/jpeg": lambda b: b.startswith(b"\xff\xd8\xff"),
    "image/gif": lambda b: b.startswith((b"GIF87a", b"GIF89a")),
    "image/tiff": lambda b: b.startswith((b"II*\x00", b"MM\x00*")),
    "image/bmp": lambda b: b.startswith(b"BM"),
    "application/pdf": lambda b: b.startswith(b"%PDF-"),
    "audio/wav": lambda b: b.startswith(b"RIFF") and b[8:12] == b"WAVE",
    "application/zip": lambda b: b.startswith((b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08")),
    "application/octet-stream": lambda b: True,
    "*/*": lambda b: True,
}
ALIASES = {
    "audio/x-wav": "audio/wav",
    "audio/wave": "audio/wav",
    "image/jpg": "image/jpeg",
    "text/json": "application/json",
}


TEXT_CHECKS: dict[str, Callable[[bytes, str], bool]] = {"text/plain": _is_text, "text/csv": _is_csv}
"""Text types, checked in the charset their media type declares (UTF-8 when none)."""
ANY_CONTENT = frozenset({"application/octet-stream", "*/*"})
"""Types any content passes: an input that accepts one of them has no content to check."""


def canonical(media_type: str) -> str:
    """`Text/Plain; charset=utf-8` -> `text/plain`."""
    base = media_type.split(";", 1)[0].strip().lower()
    return ALIASES.get(base, base)


def _charset(media_type: str) -> str | None:
    """`text/plain; charset="iso-8859-1"` -> `iso-8859-1`."""
    for parameter in media_type.split(";")[1:]:
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "charset":
            return value.strip().strip('"')
    return None


def sniffer(media_type: str) -> Sniffer | None:
    """How to tell whether content is of `media_type`; None when the server cannot tell.

    A family such as image/* is never checked: it has members no sniffer knows (WebP, SVG,
    MP3, FLAC, ...), so no content can be ruled out.
    """
    kind = canonical(media_type)
    if kind not in TEXT_CHECKS:
        return SNIFFERS.get(kind)
    encoding = _charset(media_type) or "utf-8"
    check = TEXT_CHECKS[kind]
    return (lambda content: check(content, encoding)) if _decodes_text(encoding) else None


def _decodes_text(encoding: str) -> bool:
    """Whether `encoding` names a codec from bytes to text: not unknown, nor base64, rot13, zlib and the like."""
    try:
        return isinstance(codecs.decode(b"", encoding), str)
    except Exception:  # LookupError when unknown; codecs that are not bytes-to-text raise what they like
        return False


def _why_unchecked(media_type: str) -> tuple[int, str]:
    """Why a type has no check, and how loud to say it: a warning only for what the author can fix
    (a charset that is no text encoding, a type that is probably misspelt), INFO for what just is."""
    kind = canonical(media_type)
    if kind in TEXT_CHECKS:
        return logging.WARNING, f"charset {_charset(media_type)!r} is not a text encoding Python knows"
    if kind.endswith("/*"):
        return logging.INFO, "a family of media types, with members no check knows"
    known = _known_media_types()
    if kind not in known:
        close = difflib.get_close_matches(kind, known, n=1)
        return logging.WARNING, "not a media type Python knows" + (f"; did you mean {close[0]}?" if close else "")
    return logging.INFO, "no content check for this media type"


@functools.cache
def _known_media_types() -> list[str]:
    """Python's own table of media types (not the machine's files, so the answer is the same everywhere)."""
    table = mimetypes.MimeTypes()
    return sorted({*table.types_map[True].values(), *table.types_map[False].values(), *SNIFFERS, *TEXT_CHECKS})


@dataclass(frozen=True)
class _InputRule:
    max_bytes: int
    max_size_text: str
    media_types: tuple[str, ...]
    sniffers: tuple[tuple[str, Sniffer], ...]  # empty when some accepted type cannot be checked


class InputValidator:
    def __init__(self, spec: ModelSpec, reject_undeclared: bool = True) -> None:
        self.reject_undeclared = reject_undeclared
        self.rules: dict[str, _InputRule] = {}
        for name, declared in spec.inputs.items():
            types = tuple(declared.acceptedMediaTypes)
            sniffers = {media_type: sniffer(media_type) for media_type in types}
            unknown = [media_type for media_type, check in sniffers.items() if check is None]
            for media_type in unknown:
                level, reason = _why_unchecked(media_type)
                logger.log(
                    level, "input %s: %s: %s; the content of input %s is not checked", name, media_type, reason, name
                )
            accepts_any = bool(unknown) or any(canonical(media_type) in ANY_CONTENT for media_type in types)
            self.rules[name] = _InputRule(
                max_bytes=parse_size(declared.maxSize),
                max_size_text=declared.maxSize,
                media_types=types,
                sniffers=() if accepts_any else tuple((t, check) for t, check in sniffers.items() if check is not None),
            )

    def check_all(self, items: Sequence[Mapping[str, bytes]]) -> list[CheckedItem]:
        """`check` for each item: one call to hand to a thread when the items are large."""
        return [self.check(item) for item in items]

    def check(self, item: Mapping[str, bytes]) -> CheckedItem:
        """The item to give the model (undeclared files dropped when ignored), or an error naming the problem."""
        # One copy of each file out of the request message, used for everything below; iterating the keys is
        # C code, where dict() of a protobuf map goes through the Mapping mixin's Python.
        files = {name: item[name] for name in item}
        problems: list[str] = []
        undeclared: list[str] = []
        if files.keys() != self.rules.keys():  # else every declared file is there, and only those
            undeclared = sorted(files.keys() - self.rules.keys())
            if undeclared and self.reject_undeclared:
                problems.append(
                    f"{', '.join(undeclared)}: not an input of this model (its inputs: {', '.join(self.rules)})"
                )
            missing = [name for name in self.rules if name not in files]
            if missing:
                problems.append(f"{', '.join(missing)}: missing; this model needs {', '.join(self.rules)}")
        for name, rule in self.rules.items():
            content = files.get(name)
            if content is None:
                continue
            if len(content) > rule.max_bytes:
                problems.append(
                    f"{name}: {len(content)} bytes is larger than its maxSize "
                    f"{rule.max_size_text} ({rule.max_bytes} bytes)"
                )
            elif rule.sniffers and (problem := _content_problem(name, rule, content)):
                problems.append(problem)
        if problems:
            return {}, "; ".join(problems)
        return ({name: files[name] for name in self.rules} if undeclared else files), None


def _content_problem(name: str, rule: _InputRule, content: bytes) -> str | None:
    """Why `content` is none of the accepted types; a sniffer that raises fails this file, not the call."""
    failure = None
    for media_type, check in rule.sniffers:
        try:
            if check(content):
                return None
        except ContentError as error:
            failure = failure or f"{name}: content is not {media_type}: {error}"
        except Exception as error:
            failure = (
                failure or f"{name}: content could not be checked as {media_type}: {type(error).__name__}: {error}"
            )
    return failure or f"{name}: content is not {' or '.join(rule.media_types)}"
