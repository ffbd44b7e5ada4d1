"""Turning one image file into the model's input: 64 ink values on sklearn's digits scale (0..16).

The training images (`sklearn.datasets.load_digits`) are 8x8 grids where 0 is paper and 16
is full ink, each cell the ink count of a 4x4 block of a 32x32 bitmap. Any image is brought to
that form the same way: grayscale (transparent pixels over white paper), dark-on-light
inverted so ink is high, padded to a square with paper, area-averaged down to 8x8, scaled to
0..16. The pixel count is checked from the header, before anything is decoded, so a
decompression bomb costs a few bytes of memory, not gigabytes.
"""

import io
import struct

import numpy as np
from numpy.typing import NDArray
from PIL import Image, UnidentifiedImageError

SIDE = 8
"""The model sees SIDE x SIDE cells."""
INK_SCALE = 16.0
"""Full ink on the training data's scale."""
MAX_PIXELS = 2048 * 2048
"""The largest image decoded (width x height): at most 16 MiB of RGBA pixels, plus a few 16 MiB
arrays of 32-bit floats while it is converted. Larger images are refused from their header alone."""
FORMATS = ("PNG", "JPEG")
"""What model.yaml accepts (image/png, image/jpeg)."""

# Our own check (MAX_PIXELS, a clear per-item error) is stricter than Pillow's warning at 89 M
# pixels, which the server would only log and tests turn into errors: switch Pillow's off.
Image.MAX_IMAGE_PIXELS = None


class ImageError(ValueError):
    """The input is not an image this model can read; the message says what is wrong."""


def ink_grid(name: str, content: bytes) -> NDArray[np.float64]:
    """The SIDE*SIDE ink values (0..16, row by row) of the image file `name` holding `content`."""
    image = _open(name, content)
    gray = _grayscale(name, image)
    return _downsample(_ink(gray))


def _open(name: str, content: bytes) -> Image.Image:
    try:
        image = Image.open(io.BytesIO(content), formats=FORMATS)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:  # Pillow's errors for a bad header
        size = _png_header_size(content)
        if size is not None and 0 in size:  # Pillow refuses such a PNG without saying why
            raise ImageError(f"{name}: the image is {size[0]}x{size[1]} pixels; it needs at least 1x1") from None
        if isinstance(error, UnidentifiedImageError):
            raise ImageError(f"{name}: not a PNG or JPEG image ({len(content)} bytes)") from None
        raise ImageError(f"{name}: not a readable PNG or JPEG image: {error}") from None
    width, height = image.size
    if width < 1 or height < 1:
        raise ImageError(f"{name}: the image is {width}x{height} pixels; it needs at least 1x1")
    if width * height > MAX_PIXELS:
        raise ImageError(
            f"{name}: the image is {width}x{height} pixels ({width * height:,}); this model reads at most "
            f"{MAX_PIXELS:,} pixels (e.g. 2048x2048): scale it down first"
        )
    image.draft("L", (SIDE * 4, SIDE * 4))  # JPEG only: decode at a reduced scale, cheaper and smaller
    try:
        image.load()
    except (OSError, SyntaxError, ValueError) as error:  # truncated or corrupt pixel data
        raise ImageError(f"{name}: the image data is damaged and cannot be decoded: {error}") from None
    return image


def _png_header_size(content: bytes) -> tuple[int, int] | None:
    """Width and height from a PNG's IHDR chunk, or None when `content` does not start like a PNG."""
    if content[:8] != b"\x89PNG\r\n\x1a\n" or content[12:16] != b"IHDR" or len(content) < 24:
        return None
    width, height = struct.unpack(">II", content[16:24])
    return int(width), int(height)


def _grayscale(name: str, image: Image.Image) -> NDArray[np.float32]:
    """0 (black) .. 255 (white), as 32-bit floats (half the memory of 64); transparent pixels count as white paper."""
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        paper = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(paper, image.convert("RGBA"))
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):  # 16-bit or float grayscale: scale to 0..255
        values = np.asarray(image, dtype=np.float32)
        top = float(values.max())
        return values * np.float32(255.0 / top) if top > 0 else values
    try:
        return np.asarray(image.convert("L"), dtype=np.float32)
    except (OSError, ValueError) as error:
        raise ImageError(f"{name}: cannot convert its {image.mode} pixels to grayscale: {error}") from None


def _ink(gray: NDArray[np.float32]) -> NDArray[np.float32]:
    """Ink as 0..255 on a square of paper: dark-on-light images (paper brighter than 128 at the border) inverted."""
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    ink = np.float32(255.0) - gray if border.mean() >= 128 else gray
    height, width = ink.shape
    side = max(height, width)
    square = np.zeros((side, side), dtype=np.float32)
    top, left = (side - height) // 2, (side - width) // 2
    square[top : top + height, left : left + width] = ink
    return square


def _downsample(square: NDArray[np.float32]) -> NDArray[np.float64]:
    """Area average to SIDE x SIDE (Pillow's box filter on 32-bit floats), then the 0..16 scale."""
    cells = Image.fromarray(square).resize((SIDE, SIDE), Image.Resampling.BOX)
    return np.asarray(cells, dtype=np.float64).reshape(-1) * (INK_SCALE / 255.0)
