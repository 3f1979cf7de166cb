"""Images from clients (`input_image` items): decoded and checked before anything keeps them.

Pillow reads the header first, so a decompression bomb is refused by its pixel count
before it is decoded; EXIF and other metadata are dropped by re-encoding as PNG.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

from PIL import Image

from cadence.errors import ImageError, LimitExceeded


@dataclass(frozen=True)
class ClientImage:
    png: bytes  # re-encoded, metadata-free
    width: int
    height: int


def load_client_image(data: bytes, *, max_bytes: int, max_pixels: int) -> ClientImage:
    """Validate and re-encode an image; raise ImageError / LimitExceeded with what to do."""
    if len(data) > max_bytes:
        raise LimitExceeded(f"image of {len(data)} bytes is over the {max_bytes}-byte limit")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > max_pixels:
                raise LimitExceeded(
                    f"image of {width}x{height} pixels is over the {max_pixels}-pixel limit; "
                    "downscale it"
                )
            image.load()
    except LimitExceeded:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise LimitExceeded(f"image refused as a decompression bomb: {exc}") from None
    except Exception as exc:  # Pillow raises many types for corrupt data
        raise ImageError(
            f"image could not be decoded ({type(exc).__name__}); send PNG or JPEG"
        ) from None
    clean = image if image.mode in ("RGB", "RGBA", "L") else image.convert("RGB")
    buffer = io.BytesIO()
    clean.save(buffer, format="PNG")
    return ClientImage(buffer.getvalue(), width, height)
