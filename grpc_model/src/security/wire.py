"""Counting a protobuf request's nested messages from its bytes, before protobuf parses them.

Parsing runs on the event loop in one C call that cannot be cut short, and its cost grows faster than
the number of entries: a 3.8 MB RunRequest whose `input` map held 300,000 entries kept health waiting for
0.7-3.4 s. No real request holds that many messages (items, map entries, tensors), so counting them first,
with a budget on the work the count itself may do, refuses such a request for the price of a bounded scan.
Malformed bytes are left to the parser, which names what is wrong with them.
"""

import functools
from typing import cast

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

SCAN_FROM_BYTES = 256 * 1024
"""Smaller requests are parsed without a count: they cannot hold enough entries to matter (0.1 s at worst)."""
MAX_MESSAGES = 50_000
"""Nested messages a request may hold: a Run of 5,000 items of 9 files each, or V2's 1,000 tensors, fit."""
MAX_FIELDS_READ = 400_000
"""Fields the count may read in the messages that hold messages, however they are padded (a few tenths of a
second of Python at worst)."""


class TooManyMessagesError(ValueError):
    """The request holds more nested messages, or more fields around them, than a request may."""


class _Budget:
    def __init__(self) -> None:
        self.messages = 0
        self.fields = 0


def check_message_count(raw: bytes, request_type: type[Message]) -> None:
    """Raises TooManyMessagesError when `raw` holds more than MAX_MESSAGES nested messages of `request_type`,
    or needs more than MAX_FIELDS_READ fields read to tell; returns at the first malformed byte."""
    if len(raw) < SCAN_FROM_BYTES:
        return
    descriptor = cast(Descriptor, request_type.DESCRIPTOR)  # upb's Descriptor has the same fields
    try:
        _walk(memoryview(raw), 0, len(raw), descriptor, _Budget())
    except (IndexError, MalformedError):
        return  # the parser answers it


class MalformedError(Exception):
    """The bytes are no protobuf message; the parser names why."""


@functools.cache
def _holds_messages(descriptor: Descriptor) -> bool:
    """Asked once per message walked: cached per message type, of which a schema has a handful."""
    return any(field.type == FieldDescriptor.TYPE_MESSAGE for field in descriptor.fields)


def _walk(buffer: memoryview, position: int, end: int, descriptor: Descriptor, budget: _Budget) -> None:
    """Counts the messages between `position` and `end`; only messages that hold messages are read field by field,
    the others (map entries of scalars, tensor contents) are skipped by their length."""
    while position < end:
        budget.fields += 1
        if budget.fields > MAX_FIELDS_READ:
            raise TooManyMessagesError(
                f"the request holds more than {MAX_FIELDS_READ} fields around its nested messages"
            )
        key, position = read_varint(buffer, position)
        if key & 7 != LENGTH_DELIMITED:
            position = skip_scalar(buffer, position, key & 7)
            continue
        length, position = read_varint(buffer, position)
        field = descriptor.fields_by_number.get(key >> 3)
        if field is not None and field.type == FieldDescriptor.TYPE_MESSAGE:
            budget.messages += 1
            if budget.messages > MAX_MESSAGES:
                raise TooManyMessagesError(
                    f"the request holds more than {MAX_MESSAGES} nested messages (items, map entries, "
                    "tensors): send fewer per call"
                )
            nested = field.message_type
            if nested is not None and _holds_messages(nested):
                _walk(buffer, position, min(position + length, end), nested, budget)
        position += length
    if position > end:
        raise MalformedError


LENGTH_DELIMITED = 2
"""The wire type of bytes, strings and nested messages: a varint length, then that many bytes."""


def skip_scalar(buffer: memoryview, position: int, wire_type: int) -> int:
    """The position after a value of wire type 0 (varint), 1 (64-bit) or 5 (32-bit); raises MalformedError for
    groups (3, 4) and unknown wire types, which the parser then names."""
    if wire_type == 0:
        return read_varint(buffer, position)[1]
    if wire_type == 1:
        return position + 8
    if wire_type == 5:
        return position + 4
    raise MalformedError


def read_varint(buffer: memoryview, position: int) -> tuple[int, int]:
    """The varint at `position` and the position after it; raises MalformedError past 64 bits, IndexError at the end."""
    result = shift = 0
    while True:
        byte = buffer[position]
        position += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, position
        shift += 7
        if shift > 63:
            raise MalformedError


def write_varint(value: int) -> bytes:
    """`value` (not negative) as a varint, as `read_varint` reads it."""
    encoded = bytearray()
    while value > 0x7F:
        encoded.append(value & 0x7F | 0x80)
        value >>= 7
    encoded.append(value)
    return bytes(encoded)
