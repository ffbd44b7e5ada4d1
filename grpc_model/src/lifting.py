"""Large bytes fields cut out of a gRPC request before protobuf parses it, and read in place afterwards.

grpcio hands a handler the request's bytes and holds them until the call ends. Protobuf's parse copies every
bytes field into memory of its own, and reading a field from the message copies it once more: a 50 MiB file
was in memory three times before the model got it. Here every bytes field of LIFT_FIELD_BYTES or more is cut
out of what protobuf parses and replaced by a token (a nonce drawn for this request, which no client can
guess, and an index); the front end trades each token it reads for a view of the received bytes
(`Lifted.view`), so a file is copied once, into the bytes the model is given.

Protobuf still parses and checks everything else, so a malformed request is refused as before. The walk
only ever reads the fields of messages that can hold bytes fields and gives up (the request is parsed as it
came) past MAX_FIELDS_READ fields, at bytes it cannot read, or when cutting would save little.
"""

import ctypes
import functools
import os
from typing import cast

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from grpc_model.src.security.wire import LENGTH_DELIMITED, MalformedError, read_varint, skip_scalar, write_varint

LIFT_FROM_BYTES = 1024 * 1024
"""Smaller requests are parsed as they came: their copies cost little."""
LIFT_FIELD_BYTES = 64 * 1024
"""Bytes fields from this size on are cut out."""
MAX_FIELDS_READ = 10_000
"""Fields the walk reads before it gives up: a request of many small fields has nothing worth cutting."""
TRIM_FROM_BYTES = 16 * 1024 * 1024
"""From this size on, a request's arrival is followed by `_trim_heap`."""
NONCE_BYTES = 16
TOKEN_BYTES = NONCE_BYTES + 4


_MALLOC_TRIM = getattr(ctypes.CDLL(None), "malloc_trim", None)  # glibc's; other C libraries may lack it


def _trim_heap() -> None:
    """Gives the memory malloc holds free back to the system. grpcio receives a message in slices of tens of
    kilobytes, too small for malloc to map apart, and frees them once it has joined them into the request's
    bytes: without this, 40-50 MB of a 50 MiB request's slices stayed in the process, free but resident,
    through the call. It takes tens of microseconds, and only requests of TRIM_FROM_BYTES or more pay it."""
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


class Lifted:
    """The large bytes fields cut out of one request, as views of its received bytes, each behind a token."""

    def __init__(self) -> None:
        self.nonce = os.urandom(NONCE_BYTES)
        self.views: list[memoryview] = []

    def token(self, view: memoryview) -> bytes:
        self.views.append(view)
        return self.nonce + (len(self.views) - 1).to_bytes(TOKEN_BYTES - NONCE_BYTES, "little")

    def release(self) -> None:
        """Lets go of the views once the call is over, whoever still holds this object."""
        self.views.clear()

    def view(self, value: bytes) -> bytes | memoryview:
        """A bytes field's value as the client sent it: the view its token stands for, else `value` itself."""
        if len(value) == TOKEN_BYTES and value.startswith(self.nonce):
            return self.views[int.from_bytes(value[NONCE_BYTES:], "little")]
        return value


class _GiveUp(Exception):
    pass


def lift(raw: bytes, request_type: type[Message]) -> tuple[bytes, Lifted | None]:
    """What protobuf should parse: `raw` without its large bytes fields, and those fields; else `raw`, None.
    A request of TRIM_FROM_BYTES or more first has the receive buffers grpcio freed given back (`_trim_heap`)."""
    if len(raw) >= TRIM_FROM_BYTES:
        _trim_heap()
    if len(raw) < LIFT_FROM_BYTES:
        return raw, None
    lifted = Lifted()
    descriptor = cast(Descriptor, request_type.DESCRIPTOR)  # upb's Descriptor has the same fields
    try:
        parts = _cut(memoryview(raw), 0, len(raw), descriptor, lifted, [0])
    except (IndexError, MalformedError, _GiveUp):
        return raw, None  # the parser names what is wrong, or there is nothing worth cutting
    if parts is None or 4 * sum(len(part) for part in parts) > len(raw):
        return raw, None  # what stays would be a large copy of its own
    return b"".join(parts), lifted


def _cut(
    buffer: memoryview, position: int, end: int, descriptor: Descriptor, lifted: Lifted, fields_read: list[int]
) -> list[bytes | memoryview] | None:
    """The message between `position` and `end` with its large bytes fields replaced by tokens, in parts to
    join; None when nothing in it is cut (its bytes stay as they came)."""
    parts: list[bytes | memoryview] = []
    kept = position  # where the bytes not yet in `parts` begin
    while position < end:
        fields_read[0] += 1
        if fields_read[0] > MAX_FIELDS_READ:
            raise _GiveUp
        key, position = read_varint(buffer, position)
        if key & 7 != LENGTH_DELIMITED:
            position = skip_scalar(buffer, position, key & 7)
            continue
        tag_end = position
        length, position = read_varint(buffer, position)
        value_end = position + length
        if value_end > end:
            raise MalformedError
        field = descriptor.fields_by_number.get(key >> 3)
        nested = field.message_type if field is not None and field.type == FieldDescriptor.TYPE_MESSAGE else None
        replacement: list[bytes | memoryview] | None = None  # None: the field stays as it came
        if field is not None and field.type == FieldDescriptor.TYPE_BYTES and length >= LIFT_FIELD_BYTES:
            replacement = [lifted.token(buffer[position:value_end])]
        elif nested is not None and _may_hold_bytes(nested):
            replacement = _cut(buffer, position, value_end, nested, lifted, fields_read)
        if replacement is not None:
            parts += [buffer[kept:tag_end], write_varint(sum(len(part) for part in replacement)), *replacement]
            kept = value_end
        position = value_end
    if position != end:
        raise MalformedError
    if not parts:
        return None
    parts.append(buffer[kept:end])
    return parts


@functools.cache
def _may_hold_bytes(descriptor: Descriptor, within: frozenset[str] = frozenset()) -> bool:
    """Whether a message of this type can hold a bytes field, itself or in messages it holds."""
    if descriptor.full_name in within:
        return False  # a recursive type: its own fields are being asked about already
    inside = within | {descriptor.full_name}
    return any(
        field.type == FieldDescriptor.TYPE_BYTES
        or (field.type == FieldDescriptor.TYPE_MESSAGE and _may_hold_bytes(field.message_type, inside))
        for field in descriptor.fields
    )
