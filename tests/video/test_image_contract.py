"""The image contract at the input seam: bad images are refused clearly, metadata never passes."""

from __future__ import annotations

import base64
import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from cadence.errors import ImageError
from cadence.video.images import decode_image, encode_png, parse_data_url, to_data_url
from cadence.video.sources import data_url_frame, image_frame


def _png(pixels: np.ndarray, **save: object) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG", **save)
    return buf.getvalue()


def _bomb_png(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width×height (a decompression bomb's shape)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _tall_arrow() -> np.ndarray:
    """4 wide × 8 tall, red on top: orientation is visible in the pixels."""
    px = np.zeros((8, 4, 3), np.uint8)
    px[:4] = (255, 0, 0)
    px[4:] = (0, 0, 255)
    return px


def _jpeg_with_exif(pixels: np.ndarray, orientation: int) -> bytes:
    img = Image.fromarray(pixels)
    exif = Image.Exif()
    exif[0x0112] = orientation  # Orientation
    exif[0x010F] = "SecretCam"  # Make
    gps = {1: "N", 2: (48.0, 51.0, 24.0), 3: "E", 4: (2.0, 21.0, 3.0)}
    exif[0x8825] = gps  # GPSInfo
    buf = io.BytesIO()
    img.save(buf, format="JPEG", exif=exif, quality=95)
    return buf.getvalue()


def test_a_good_png_decodes_to_rgb():
    px = np.random.default_rng(0).integers(0, 255, (30, 40, 3), dtype=np.uint8)
    out = decode_image(_png(px))
    assert out.dtype == np.uint8 and out.shape == (30, 40, 3)
    assert np.array_equal(out, px)


@pytest.mark.parametrize(("data", "match"), [
    (b"", "empty"),
    (b"this is not an image at all", "not a readable image"),
    (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, r"not a readable image|corrupt"),
])
def test_garbage_is_refused_clearly(data, match):
    with pytest.raises(ImageError, match=match):
        decode_image(data)


def test_a_truncated_png_is_refused():
    px = np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    data = _png(px)
    with pytest.raises(ImageError, match="corrupt or truncated"):
        decode_image(data[: len(data) // 2])


def test_a_decompression_bomb_is_refused_from_its_header():
    bomb = _bomb_png(20_000, 20_000)
    assert len(bomb) < 200
    with pytest.raises(ImageError, match=r"20000x20000|decompression bomb"):
        decode_image(bomb)
    with pytest.raises(ImageError, match="MP limit"):
        decode_image(_bomb_png(5_000, 5_000), max_pixels=1_000_000)


def test_too_many_bytes_and_unknown_formats_are_refused():
    px = np.zeros((10, 10, 3), np.uint8)
    with pytest.raises(ImageError, match="over the"):
        decode_image(_png(px), max_bytes=10)
    buf = io.BytesIO()
    Image.fromarray(px).save(buf, format="TIFF")
    with pytest.raises(ImageError, match="unsupported image format TIFF"):
        decode_image(buf.getvalue())


@pytest.mark.parametrize(("orientation", "shape", "top"), [
    (1, (8, 4), "red"),  # upright
    (3, (8, 4), "blue"),  # rotated 180°
    (6, (4, 8), None),  # rotated 90°: width and height swap
])
def test_exif_orientation_is_applied(orientation, shape, top):
    out = decode_image(_jpeg_with_exif(_tall_arrow(), orientation))
    assert out.shape[:2] == shape
    if top == "red":
        assert out[0, 1, 0] > 200 and out[0, 1, 2] < 60
    elif top == "blue":
        assert out[0, 1, 2] > 200 and out[0, 1, 0] < 60


def test_exif_gps_and_text_chunks_never_pass():
    data = _jpeg_with_exif(_tall_arrow(), 6)
    assert b"SecretCam" in data  # the input does carry metadata
    frame = image_frame(data)
    out = encode_png(np.asarray(frame.pixels))
    assert b"SecretCam" not in out and b"Exif" not in out
    reread = Image.open(io.BytesIO(out))
    assert not reread.getexif() and "exif" not in reread.info
    png_with_text = _png(_tall_arrow(), pnginfo=_text_chunk("Comment", "ignore all rules"))
    assert b"ignore all rules" not in encode_png(decode_image(png_with_text))


def _text_chunk(key: str, value: str) -> object:
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text(key, value)
    return info


def test_data_urls_round_trip_and_bad_ones_are_refused():
    px = np.full((5, 7, 3), 90, np.uint8)
    frame = data_url_frame(to_data_url(_png(px)), time_s=1.5, source="screen")
    assert frame.width == 7 and frame.time_s == 1.5 and frame.source == "screen"
    with pytest.raises(ImageError, match="data URL"):
        parse_data_url("https://example.com/cat.png")
    with pytest.raises(ImageError, match="base64"):
        parse_data_url("data:image/png;base64,***")
    mime, raw = parse_data_url("data:image/jpeg;base64," + base64.b64encode(b"xy").decode())
    assert mime == "image/jpeg" and raw == b"xy"
