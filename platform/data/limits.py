"""How large an image or video frame may be, checked from its header before anything is decoded.

A crafted or mistaken file (a PNG that claims 100000 x 100000 pixels, a "4K" plate that is
really 32K) would otherwise make the decoder allocate tens of gigabytes on the driver, a
worker or a serving host. ``PLATFORM_MAX_PIXELS`` (width x height of one frame) defaults to
8192 x 8192 = 67,108,864: every 8K format (8K UHD 7680 x 4320, 8K DCI 8192 x 4320) fits.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

from platform.errors import ConfigError, DataError

DEFAULT_MAX_PIXELS = 8192 * 8192


def max_pixels() -> int:
    raw = os.environ.get("PLATFORM_MAX_PIXELS", "").strip()
    if not raw:
        return DEFAULT_MAX_PIXELS
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value <= 0:
        raise ConfigError(f"PLATFORM_MAX_PIXELS is {raw!r}; give a positive whole number of pixels per frame "
                          f"(default {DEFAULT_MAX_PIXELS} = 8192 x 8192).")
    return value


def check_pixels(path: str | Path, width: int, height: int, what: str = "image") -> None:
    """A :class:`DataError` when a ``width`` x ``height`` frame is over the limit."""
    _check(path, width * height, f"{width} x {height} = {width * height:,} pixels", what)


def _check(path, pixels: int, description: str, what: str) -> None:
    limit = max_pixels()
    if pixels > limit:
        raise DataError(f"{what} {path} is {description}, more than the limit of {limit:,} (PLATFORM_MAX_PIXELS). "
                        "It was not decoded. Resize or crop it, or raise PLATFORM_MAX_PIXELS if the machine has "
                        "the memory for frames this large.")


def check_image_file(path: str | Path, what: str = "image") -> None:
    """Check an image file's size from its header (Pillow's formats and EXR); unknown formats pass
    (their decoder reports what is wrong)."""
    path = Path(path)
    if path.suffix.lower() == ".exr":
        size = _exr_size(path)
        if size is not None:
            check_pixels(path, size[0], size[1], what)
        return
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                width, height = im.size
    except Image.DecompressionBombError as exc:  # Pillow's own ceiling, far above ours
        claimed = re.search(r"\((\d+) pixels\)", str(exc))  # "Image size (N pixels) exceeds limit ..."
        pixels = int(claimed.group(1)) if claimed else max_pixels() + 1
        _check(path, pixels, f"{pixels:,} pixels (by its header)", what)
        return
    except Exception:  # not a format Pillow knows, or damaged: the decoder says what is wrong
        return
    check_pixels(path, width, height, what)


def _exr_size(path: Path) -> tuple[int, int] | None:
    try:
        import OpenEXR

        with OpenEXR.File(str(path), header_only=True) as f:
            (xmin, ymin), (xmax, ymax) = f.header()["dataWindow"]
    except Exception:  # no binding, or a damaged file: the decoder reports it
        return None
    return int(xmax) - int(xmin) + 1, int(ymax) - int(ymin) + 1
