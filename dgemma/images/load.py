"""Reading an image a caller sent, with every size bounded before any pixel is decoded.

Accepted: a PIL image, a path, raw bytes, or a `data:image/...;base64,` URL. Remote URLs are
refused (dgemma never fetches from the network). Limits, checked in this order:

    MAX_IMAGE_BYTES   the encoded file (a data URL's base64 is checked before decoding it)
    MAX_IMAGE_PIXELS  width x height as the file's header declares them, before decoding
    MAX_IMAGE_SIDE    the longer side, likewise

A file that is not an image, is truncated or is damaged is an `ImageError` (a ValueError) saying
so in one line; so is any limit passed.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

MAX_IMAGE_BYTES = 20 * 1024 * 1024
MAX_IMAGE_PIXELS = 40_000_000
MAX_IMAGE_SIDE = 16_384
_DATA_URL = re.compile(r"^data:(image/[A-Za-z0-9.+-]+)?(;[^,]*)?,", re.IGNORECASE)


class ImageError(ValueError):
    """An image that cannot be used: not an image, damaged, too large, or out of reach."""


def open_image(source: Any, what: str = "image") -> Image.Image:
    """A fully decoded RGB-or-other-mode PIL image from `source` (see the module docstring)."""
    if isinstance(source, Image.Image):
        _check_size(source.width, source.height, what)
        return source
    if isinstance(source, bytes | bytearray):
        return _decode(bytes(source), what)
    if isinstance(source, str) and source.startswith(("http://", "https://", "ftp://")):
        raise ImageError(
            f"{what}: remote URLs are not fetched (dgemma makes no network requests); "
            "send the image inline as a data:image/...;base64 URL"
        )
    if isinstance(source, str) and source[:5].lower() == "data:":
        return _decode(_data_url_bytes(source, what), what)
    if isinstance(source, str | Path):
        path = Path(source)
        if not path.is_file():
            raise ImageError(f"{what}: no image file at {str(path)[:200]}")
        if path.stat().st_size > MAX_IMAGE_BYTES:
            raise ImageError(f"{what}: {path.stat().st_size} bytes; the limit is {MAX_IMAGE_BYTES}")
        return _decode(path.read_bytes(), what)
    raise ImageError(
        f"{what}: expected a PIL image, a path, bytes or a data URL, got {type(source).__name__}"
    )


def _data_url_bytes(url: str, what: str) -> bytes:
    match = _DATA_URL.match(url)
    if match is None or not (match.group(2) or "").lower().endswith(";base64"):
        raise ImageError(f"{what}: a data URL must look like data:image/png;base64,<data>")
    payload = url[match.end() :]
    if len(payload) > MAX_IMAGE_BYTES * 4 // 3 + 4:
        raise ImageError(f"{what}: the data URL holds more than {MAX_IMAGE_BYTES} bytes")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise ImageError(f"{what}: the data URL is not valid base64") from None


def _decode(data: bytes, what: str) -> Image.Image:
    if len(data) > MAX_IMAGE_BYTES:
        raise ImageError(f"{what}: {len(data)} bytes; the limit is {MAX_IMAGE_BYTES}")
    if not data:
        raise ImageError(f"{what}: empty file")
    try:
        image = Image.open(io.BytesIO(data))  # reads the header only
    except UnidentifiedImageError:
        raise ImageError(f"{what}: not an image file Pillow can read") from None
    except Image.DecompressionBombError:
        raise ImageError(f"{what}: the image declares more than {MAX_IMAGE_PIXELS} pixels") from None
    except (OSError, ValueError, SyntaxError) as err:  # damaged headers
        raise ImageError(f"{what}: unreadable image ({str(err)[:120]})") from None
    _check_size(image.width, image.height, what)
    try:
        image.load()
    except (OSError, ValueError, SyntaxError, EOFError) as err:
        raise ImageError(f"{what}: the image data is damaged or truncated ({str(err)[:120]})") from None
    return image


def _check_size(width: int, height: int, what: str) -> None:
    if width < 1 or height < 1:
        raise ImageError(f"{what}: the image has no pixels ({width}x{height})")
    if max(width, height) > MAX_IMAGE_SIDE:
        raise ImageError(f"{what}: {width}x{height}; each side may be at most {MAX_IMAGE_SIDE} pixels")
    if width * height > MAX_IMAGE_PIXELS:
        raise ImageError(f"{what}: {width}x{height} pixels; the limit is {MAX_IMAGE_PIXELS} pixels")
