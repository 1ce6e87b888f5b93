"""Reading and writing images.

``read_image`` returns float32 HxWxC arrays in [0, 1] (display-referred data) together with
what is needed to write a result back in the input's own format (bit depth, alpha).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from platform.errors import DataError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp", ".exr")


@dataclass
class ImageInfo:
    dtype: str  # "uint8", "uint16", "float32"
    channels: int
    has_alpha: bool


def is_image_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def read_image(path: str | Path, with_info: bool = False):
    """Read an image as float32 HxWxC in [0, 1] (integers are scaled by their maximum)."""
    import imageio.v3 as iio

    path = Path(path)
    try:
        arr = np.asarray(iio.imread(path))
    except Exception as exc:  # imageio raises many types for corrupt or unknown files
        raise DataError(
            f"cannot read image {path}: {type(exc).__name__}: {exc}. Check that the file is a complete "
            f"PNG/JPEG/TIFF/EXR image (re-export it) or remove it from the folder."
        ) from None
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 2, 3, 4) or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise DataError(f"cannot use image {path}: unexpected array shape {arr.shape} (expected H x W x 1..4).")
    info = ImageInfo(dtype=str(arr.dtype), channels=arr.shape[2], has_alpha=arr.shape[2] in (2, 4))
    if arr.dtype == np.uint8:
        out = arr.astype(np.float32) / 255.0
    elif arr.dtype == np.uint16:
        out = arr.astype(np.float32) / 65535.0
    elif np.issubdtype(arr.dtype, np.floating):
        out = arr.astype(np.float32)
    elif arr.dtype == bool:
        out = arr.astype(np.float32)
    else:
        raise DataError(f"cannot use image {path}: unsupported pixel type {arr.dtype}.")
    return (out, info) if with_info else out


def to_rgb(arr: np.ndarray, path: Path | str = "") -> np.ndarray:
    """Grayscale -> RGB by repetition; RGBA with an opaque alpha -> RGB.

    A non-trivial alpha channel is never silently dropped: it is an error for a task that
    expects RGB (tasks that use alpha read it explicitly).
    """
    c = arr.shape[2]
    if c == 1:
        return np.repeat(arr, 3, axis=2)
    if c in (2, 4):
        alpha = arr[:, :, -1]
        if float(alpha.min()) < 1.0:
            raise DataError(
                f"image {path} has a non-opaque alpha channel; this task expects RGB. Flatten it onto a "
                "background, or use a task that takes alpha (matting)."
            )
        return to_rgb(arr[:, :, :-1], path)
    return arr


def write_image(path: str | Path, arr: np.ndarray, dtype: str = "uint8") -> Path:
    """Write a float [0, 1] HxWxC array as 8- or 16-bit (or float for EXR/TIFF)."""
    import imageio.v3 as iio

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.asarray(arr)
    if dtype == "uint8":
        out = np.round(np.clip(arr, 0, 1) * 255.0).astype(np.uint8)
    elif dtype == "uint16":
        out = np.round(np.clip(arr, 0, 1) * 65535.0).astype(np.uint16)
    else:
        out = arr.astype(np.float32)
    if out.ndim == 3 and out.shape[2] == 1:
        out = out[:, :, 0]
    iio.imwrite(path, out)
    return path
