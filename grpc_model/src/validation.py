"""Checking each input item against the served model.yaml before the model sees it.

A broken item fails alone, with a message that names the file and the rule it breaks;
the model is only ever called with items that have every declared file, within its
declared size, of an accepted media type.
"""

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from grpc_model.src.metadata import ModelSpec
from grpc_model.src.metadata.units import parse_size

logger = logging.getLogger(__name__)


def _is_utf8(content: bytes) -> bool:
    try:
        content.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _is_json(content: bytes) -> bool:
    try:
        json.loads(content)
    except ValueError:
        return False
    return True


# Media type -> does the content look like it? Types not listed here are not checked.
SNIFFERS: dict[str, Callable[[bytes], bool]] = {
    "text/plain": _is_utf8,
    "application/json": _is_json,
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


def canonical(media_type: str) -> str:
    """`Text/Plain; charset=utf-8` -> `text/plain`."""
    base = media_type.split(";", 1)[0].strip().lower()
    return ALIASES.get(base, base)


def matches(media_type: str, content: bytes) -> bool | None:
    """Whether `content` looks like `media_type`; None when the type is not one we can check."""
    kind = canonical(media_type)
    if kind in SNIFFERS:
        return SNIFFERS[kind](content)
    if kind.endswith("/*"):  # a family such as image/*: any checkable member will do
        family = [check for name, check in SNIFFERS.items() if name.startswith(kind[:-1])]
        return any(check(content) for check in family) if family else None
    return None


@dataclass(frozen=True)
class _InputRule:
    max_bytes: int
    max_size_text: str
    media_types: tuple[str, ...]
    checkable: bool  # every accepted type can be sniffed; otherwise content is not checked at all


class InputValidator:
    def __init__(self, spec: ModelSpec, reject_undeclared: bool = True) -> None:
        self.reject_undeclared = reject_undeclared
        self.rules: dict[str, _InputRule] = {}
        for name, declared in spec.inputs.items():
            types = tuple(declared.acceptedMediaTypes)
            unknown = [t for t in types if matches(t, b"") is None]
            if unknown:
                logger.warning(
                    "input %s: media type(s) %s cannot be checked; their content is not checked", name, unknown
                )
            self.rules[name] = _InputRule(
                max_bytes=parse_size(declared.maxSize),
                max_size_text=declared.maxSize,
                media_types=types,
                checkable=len(unknown) == 0,
            )

    def check(self, item: Mapping[str, bytes]) -> tuple[dict[str, bytes], str | None]:
        """The item to give the model (undeclared files dropped when ignored), or an error naming the problem."""
        files = dict(item)  # one copy of each file out of the request message, used for everything below
        problems: list[str] = []
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
            elif rule.checkable and not any(matches(t, content) for t in rule.media_types):
                problems.append(f"{name}: content is not {' or '.join(rule.media_types)}")
        if problems:
            return {}, "; ".join(problems)
        return ({name: files[name] for name in self.rules} if undeclared else files), None
