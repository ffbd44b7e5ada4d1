"""What model.yaml's file names and media types may be: the rules the schema, `init` (and later `new`) share.

A file name becomes a file on disk (the scorer's outputs, test cases), a key in model.yaml and a
string in generated code; a media type travels in Status and in HTTP headers. Both are refused
here, with the reason, before any of that happens.
"""

import re
import unicodedata

MAX_FILE_NAME_BYTES = 255
"""The longest file name most file systems take (ext4, APFS, NTFS), in UTF-8 bytes."""
MAX_MEDIA_TYPE_CHARS = 255

_NAME = r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}"  # RFC 6838 section 4.2, restricted-name
_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"  # RFC 9110 section 5.6.2
_QUOTED = r'"(?:[\t !#-\[\]-~]|\\[\t -~])*"'  # RFC 9110 section 5.6.4, ASCII only
_PARAMETERS = rf"(?:[ \t]*;[ \t]*{_TOKEN}=(?:{_TOKEN}|{_QUOTED}))*"
_MEDIA_TYPE = re.compile(rf"{_NAME}/{_NAME}{_PARAMETERS}")
_MEDIA_RANGE = re.compile(rf"(?:\*/\*|{_NAME}/\*|{_NAME}/{_NAME}){_PARAMETERS}")
_UNPRINTABLE = frozenset({"Cc", "Cs", "Zl", "Zp"})  # controls, surrogates, line and paragraph separators


def file_name_problem(name: str) -> str | None:
    """Why `name` is not a plain file name (one path segment, printable, not too long), or None."""
    if not name.strip():
        return "is blank"
    if name in (".", ".."):
        return "is a directory's name, not a file name"
    if "/" in name or "\\" in name:
        return "must be a plain file name, without '/' or '\\'"
    if name != name.strip():
        return "must not begin or end with a space"
    if any(unicodedata.category(character) in _UNPRINTABLE for character in name):
        return "must not hold control characters, line breaks or lone surrogates"
    if len(name.encode()) > MAX_FILE_NAME_BYTES:
        return f"is longer than {MAX_FILE_NAME_BYTES} bytes"
    return None


def media_type_problem(text: str, families: bool = False) -> str | None:
    """Why `text` is not an RFC 6838 `type/subtype` with optional `; name=value` parameters, or None.

    `families` also allows `type/*` and `*/*` (what an input accepts; an output has one type).
    """
    pattern = _MEDIA_RANGE if families else _MEDIA_TYPE
    if len(text) > MAX_MEDIA_TYPE_CHARS or not pattern.fullmatch(text):
        example = "image/png, text/plain; charset=utf-8" + (", image/*" if families else "")
        return f"is not a media type (type/subtype, e.g. {example}), at most {MAX_MEDIA_TYPE_CHARS} characters"
    return None
