"""Client data in error messages, kept short: every message that quotes a request goes through here.

gRPC carries an error message in a trailer, and clients refuse a trailer past 8 KiB with RESOURCE_EXHAUSTED,
which hides the real code (INVALID_ARGUMENT, NOT_FOUND) behind one that says "busy, retry". A 1 MB name, 20,000
unknown tensors or a 50,000-dimension shape must still make a message of a few hundred characters.
"""

from collections.abc import Sequence

MAX_QUOTED_CHARS = 64
MAX_QUOTED = 5
"""A message quotes at most this many values (of at most MAX_QUOTED_CHARS each), then counts the rest."""


def quoted(value: object) -> str:
    """How an error message shows client data: its repr, cut to MAX_QUOTED_CHARS, with the full length."""
    if isinstance(value, str) and len(value) > MAX_QUOTED_CHARS:
        return f"{value[:MAX_QUOTED_CHARS]!r}... ({len(value):,} characters)"
    text = repr(value)
    return text if len(text) <= MAX_QUOTED_CHARS else f"{text[:MAX_QUOTED_CHARS]}... ({len(text):,} characters)"


def quoted_list(values: Sequence[object]) -> str:
    """The first MAX_QUOTED values quoted, then how many more."""
    return first_few([quoted(value) for value in values[:MAX_QUOTED]], len(values))


def first_few(shown: Sequence[str], count: int) -> str:
    """The first MAX_QUOTED of `shown` (descriptions of the first of `count` things), then how many more."""
    text = ", ".join(shown[:MAX_QUOTED])
    return text if count <= MAX_QUOTED else f"{text} and {count - MAX_QUOTED:,} more"
