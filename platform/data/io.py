"""Reading and writing images.

``read_image`` returns float32 HxWxC arrays in [0, 1] for integer files (display-referred
data; 8/16-bit values are divided by 255/65535, so writing them back at the same depth
restores every value exactly) and the stored values for float files (EXR/float TIFF,
scene-linear data is *not* clipped or re-encoded: a task maps it to the network range with
its declared transfer function, see :mod:`platform.data.transfer`), together with what is
needed to write a result back in the input's own format (bit depth, alpha).

The byte-exact, format-by-format layer is :mod:`platform.data.formats`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from platform.data.formats import IMAGE_SUFFIXES, read_array, write_array
from platform.errors import DataError

log = logging.getLogger(__name__)

__all__ = [
    "ALPHA_POLICIES", "IMAGE_SUFFIXES", "ImageInfo", "apply_alpha", "is_image_file", "read_image", "read_native",
    "to_float", "to_rgb", "write_image",
]

#: What a task does with an alpha channel (``task.alpha``); alpha is never dropped silently.
ALPHA_POLICIES = ("error", "drop", "composite", "keep")


@dataclass
class ImageInfo:
    dtype: str  # "uint8", "uint16", "float16", "float32"
    channels: int
    has_alpha: bool


def is_image_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def native_max(dtype) -> float:
    """The value that means "full" for a pixel type: 255, 65535, or 1.0 for floats."""
    dtype = np.dtype(dtype)
    if dtype == np.uint8:
        return 255.0
    if dtype == np.uint16:
        return 65535.0
    return 1.0


def to_float(arr: np.ndarray) -> np.ndarray:
    """Native pixels -> float32: integers scaled by their maximum, floats as they are."""
    if arr.dtype.kind == "f":
        return arr.astype(np.float32, copy=False)
    return arr.astype(np.float32) / np.float32(native_max(arr.dtype))


def read_native(path: str | Path) -> np.ndarray:
    """The stored pixels (uint8/uint16/float) as HxWxC, RGB(A) order. Alias of ``formats.read_array``."""
    return read_array(path)


def read_image(path: str | Path, with_info: bool = False):
    """Read an image as float32 HxWxC (integers scaled to [0, 1], floats kept as stored)."""
    arr = read_array(path)
    info = ImageInfo(dtype=str(arr.dtype), channels=arr.shape[2], has_alpha=arr.shape[2] in (2, 4))
    out = to_float(arr)
    return (out, info) if with_info else out


def apply_alpha(arr: np.ndarray, policy: str = "error", path: Path | str = "") -> np.ndarray:
    """Gray -> RGB; an alpha channel is handled by ``policy`` (works on native or float arrays).

    * ``error``: an opaque alpha is removed, a non-opaque one is an error naming the file;
    * ``drop``: the alpha channel is removed (the user asked for it);
    * ``composite``: RGB is premultiplied by alpha (composited over black);
    * ``keep``: RGBA out (4 channels; an image without alpha gets an opaque one).
    """
    if policy not in ALPHA_POLICIES:
        raise DataError(f"task.alpha is {policy!r}; allowed: {', '.join(ALPHA_POLICIES)}.")
    c = arr.shape[2]
    has_alpha = c in (2, 4)
    colour = arr[:, :, :-1] if has_alpha else arr
    if colour.shape[2] == 1:
        colour = np.repeat(colour, 3, axis=2)
    full = native_max(arr.dtype)
    if not has_alpha:
        if policy == "keep":
            return np.concatenate([colour, np.full(colour.shape[:2] + (1,), full, dtype=arr.dtype)], axis=2)
        return colour
    alpha = arr[:, :, -1:]
    if policy == "keep":
        return np.concatenate([colour, alpha], axis=2)
    if policy == "drop":
        return colour
    if policy == "composite":
        if arr.dtype.kind == "f":
            return (colour * alpha).astype(arr.dtype)
        out = np.round(colour.astype(np.float64) * alpha.astype(np.float64) / full)
        return out.astype(arr.dtype)
    if float(alpha.min()) < full:
        raise DataError(
            f"image {path} has a non-opaque alpha channel; this task expects RGB. Flatten it onto a "
            "background, set task.alpha to composite / drop / keep, or use a task that takes alpha (matting)."
        )
    return colour


def to_rgb(arr: np.ndarray, path: Path | str = "") -> np.ndarray:
    """Grayscale -> RGB by repetition; RGBA with an opaque alpha -> RGB.

    A non-trivial alpha channel is never silently dropped: it is an error for a task that
    expects RGB (tasks that use alpha read it explicitly).
    """
    return apply_alpha(arr, "error", path)


def write_image(path: str | Path, arr: np.ndarray, dtype: str = "uint8") -> Path:
    """Write a float HxWxC array as 8- or 16-bit ([0, 1] scaled and rounded) or as float (TIFF/EXR)."""
    path = Path(path)
    arr = np.asarray(arr)
    if dtype == "uint8":
        out = np.round(np.clip(arr, 0, 1) * 255.0).astype(np.uint8)
    elif dtype == "uint16":
        out = np.round(np.clip(arr, 0, 1) * 65535.0).astype(np.uint16)
    elif dtype in ("float32", "float16", "float"):
        out = arr.astype(np.float16 if dtype == "float16" else np.float32)
    else:
        raise DataError(f"cannot write {path}: dtype {dtype!r}; use uint8, uint16, float16 or float32.")
    return write_array(path, out)
