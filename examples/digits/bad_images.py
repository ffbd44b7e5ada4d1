"""The bad images the digits example must refuse one by one, made on the fly (tests and memory_check.py).

Each is a few bytes to a few kilobytes, so none needs committing, and each is what a careless
or hostile client could send: not an image, a PNG cut short, a PNG of 0x0 pixels, and a
20000x20000 PNG that compresses to about 50 kB (400 million pixels: a decompression bomb).
"""

import io
import struct
import zlib

from PIL import Image

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header(width: int, height: int, bit_depth: int = 8) -> bytes:
    """A PNG signature and IHDR chunk for a grayscale image of the given size."""
    return PNG_SIGNATURE + _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, bit_depth, 0, 0, 0, 0))


def not_an_image() -> bytes:
    return b"this is a text file, not a picture of a digit\n"


def good_png(side: int = 32) -> bytes:
    """A plain white square with a black bar: a valid image, for the items beside the bad ones."""
    image = Image.new("L", (side, side), 255)
    image.paste(0, (side // 2 - 2, 4, side // 2 + 2, side - 4))
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def largest_png() -> bytes:
    """Not bad: the largest image the model decodes (2048x2048 RGBA, a gradient that compresses to ~60 kB)."""
    gradient = Image.linear_gradient("L").resize((2048, 2048))
    out = io.BytesIO()
    Image.merge("RGBA", [gradient, gradient, gradient, gradient]).save(out, "PNG")
    return out.getvalue()


def truncated_png() -> bytes:
    """A valid 256x256 PNG (a gradient, so its pixel data is long) cut off in the middle of that data."""
    out = io.BytesIO()
    Image.linear_gradient("L").save(out, "PNG")
    whole = out.getvalue()
    return whole[: len(whole) // 2]


def empty_png() -> bytes:
    """A PNG whose header says 0x0 pixels (the PNG format forbids it; a client can still send it)."""
    return png_header(0, 0) + _chunk(b"IDAT", zlib.compress(b"")) + _chunk(b"IEND", b"")


def bomb_png(side: int = 20_000) -> bytes:
    """side x side pixels of 1-bit black, compressed row by row: about 50 kB for 400 million pixels."""
    row = b"\x00" + bytes((side + 7) // 8)  # filter byte, then the packed bits
    compressor = zlib.compressobj(9)
    data = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    return png_header(side, side, bit_depth=1) + _chunk(b"IDAT", data) + _chunk(b"IEND", b"")
