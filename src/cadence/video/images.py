"""The image contract at the input seam: decode safely, orient, strip metadata, record resizes.

Every image that enters cadence goes through `decode_image` (size and pixel caps before any
pixel is decoded, EXIF orientation applied, nothing else kept); every resize is a `Resize`.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from cadence.errors import ImageError

DEFAULT_MAX_IMAGE_BYTES = 20 * 1024 * 1024
DEFAULT_MAX_IMAGE_PX = 40_000_000  # 40 MP: above any camera frame or screenshot we expect
ALLOWED_FORMATS = frozenset({"PNG", "JPEG", "WEBP", "GIF", "BMP"})
_DATA_URL = re.compile(r"^data:(image/[a-z0-9.+-]+)?(;[a-z0-9=.+-]+)*;base64,", re.IGNORECASE)


@dataclass(frozen=True)
class Resize:
    """A recorded resize decision: which frame, from what size to what size, and why."""

    frame: str  # the frame's short digest
    from_size: tuple[int, int]  # (width, height)
    to_size: tuple[int, int]
    reason: str

    def __str__(self) -> str:
        (fw, fh), (tw, th) = self.from_size, self.to_size
        return f"{self.frame}: {fw}x{fh} -> {tw}x{th} ({self.reason})"


def decode_image(
    data: bytes, *, max_bytes: int = DEFAULT_MAX_IMAGE_BYTES, max_pixels: int = DEFAULT_MAX_IMAGE_PX
) -> np.ndarray:
    """Encoded bytes → upright RGB uint8 pixels (H×W×3), or `ImageError` saying what is wrong.

    The pixel cap is checked from the header, before decoding, so a small file that claims
    20000×20000 (a decompression bomb) costs nothing. EXIF orientation is applied and then
    all metadata (EXIF, GPS, ICC, text chunks) is left behind: only pixels come out.
    """
    if not data:
        raise ImageError("the image is empty (0 bytes)")
    if len(data) > max_bytes:
        raise ImageError(
            f"the image is {len(data) / 1e6:.1f} MB, over the {max_bytes / 1e6:.0f} MB limit; "
            "send a smaller or more compressed image"
        )
    try:
        with warnings.catch_warnings():
            # Pillow warns (then raises) on bombs by its own global limit; ours comes first.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            fmt = img.format or "unknown"
            if fmt not in ALLOWED_FORMATS:
                raise ImageError(
                    f"unsupported image format {fmt}; send PNG, JPEG, WebP, GIF or BMP"
                )
            width, height = img.size
            if width < 1 or height < 1:
                raise ImageError(f"the image has no pixels ({width}x{height})")
            if width * height > max_pixels:
                raise ImageError(
                    f"the image claims {width}x{height} pixels ({width * height / 1e6:.0f} MP), "
                    f"over the {max_pixels / 1e6:.0f} MP limit (a decompression bomb or a "
                    "very large image); send a smaller image"
                )
            img.load()  # truncated or corrupt data fails here, not later
            upright = ImageOps.exif_transpose(img)
            rgb = upright.convert("RGB")
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(
            f"the image claims too many pixels (a decompression bomb or a very large image: "
            f"{exc}); send a smaller image"
        ) from None
    except UnidentifiedImageError:
        raise ImageError("the data is not a readable image (unknown or corrupt header)") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageError(f"the image is corrupt or truncated ({exc})") from None
    return np.ascontiguousarray(np.asarray(rgb, dtype=np.uint8))


def parse_data_url(url: str) -> tuple[str, bytes]:
    """`data:image/png;base64,...` (a Realtime `input_image`) → (mime, bytes)."""
    match = _DATA_URL.match(url[:200])
    if match is None:
        raise ImageError("an image URL must be a base64 data URL (data:image/...;base64,...)")
    try:
        raw = base64.b64decode(url[match.end():], validate=True)
    except (binascii.Error, ValueError):
        raise ImageError("the image data URL is not valid base64") from None
    return (match.group(1) or "image/png").lower(), raw


def encode_png(pixels: np.ndarray) -> bytes:
    """Pixels → PNG bytes. A fresh image from an array: no metadata can ride along."""
    buf = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def encode_jpeg(pixels: np.ndarray, quality: int = 90) -> bytes:
    """Pixels → JPEG bytes (smaller over the network; PNG stays the default for OCR)."""
    buf = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def to_data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def resize_pixels(pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize to (width, height) with a quality filter; callers record the `Resize`."""
    height, width = pixels.shape[:2]
    if (width, height) == size:
        return pixels
    shrinking = size[0] * size[1] < width * height
    method = Image.Resampling.LANCZOS if shrinking else Image.Resampling.BICUBIC
    out = Image.fromarray(pixels, "RGB").resize(size, method)
    return np.asarray(out, dtype=np.uint8)
