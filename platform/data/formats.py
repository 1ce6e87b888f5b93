"""Exact reading and writing of image files, format by format.

``read_array`` returns the pixels as stored (``uint8``, ``uint16``, ``float16``/``float32``),
always ``H x W x C`` in R, G, B(, A) order; ``write_array`` writes such an array back so that
reading it again gives the very same values (JPEG excepted: it is lossy by design).

Which library reads what, and why (each chosen for a failure of the others):

=================  =========================================================================
PNG                OpenCV: 8- and 16-bit gray/RGB/RGBA. (Pillow, imageio's default, silently
                   drops 16-bit RGB(A) PNGs to 8 bits.) Gray+alpha PNGs go through Pillow,
                   because OpenCV expands them to four channels.
JPEG               Pillow (through imageio): it refuses a truncated file, where OpenCV
                   returns a half-grey picture with only a warning.
TIFF               OpenCV (8/16-bit, float32), then tifffile for what OpenCV cannot open;
                   an empty result (tifffile's answer to a truncated file) is an error.
OpenEXR            OpenCV when it was built with OpenEXR (read only if
                   ``OPENCV_IO_ENABLE_OPENEXR=1`` was set before cv2 was imported, which this
                   module does), else the ``OpenEXR`` package (``pip install openexr``). The
                   opencv-python 5.0 wheels are built without OpenEXR, so on them EXR needs
                   the ``OpenEXR`` package.
BMP, WebP          OpenCV.
=================  =========================================================================

Every failure is a :class:`~platform.errors.DataError` naming the file.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

# Must be set before the first ``import cv2`` anywhere in the process for OpenCV's EXR codec.
os.environ.setdefault("OPENCV_IO_ENABLE_OPENEXR", "1")

import numpy as np

from platform.data.limits import check_image_file
from platform.errors import DataError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp", ".exr")
FLOAT_SUFFIXES = (".tif", ".tiff", ".exr")
SUPPORTED_DTYPES = ("uint8", "uint16", "float16", "float32")


def _cv2():
    import cv2

    return cv2


def _bgr_to_rgb(arr: np.ndarray) -> np.ndarray:
    if arr.ndim == 3 and arr.shape[2] == 3:
        return arr[:, :, ::-1]
    if arr.ndim == 3 and arr.shape[2] == 4:
        return arr[:, :, [2, 1, 0, 3]]
    return arr


_rgb_to_bgr = _bgr_to_rgb  # the same channel swap


def _as_hwc(arr: np.ndarray, path: Path) -> np.ndarray:
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 2, 3, 4) or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise DataError(f"cannot use image {path}: unexpected array shape {arr.shape} (expected H x W x 1..4 "
                        "channels: gray, gray+alpha, RGB or RGBA).")
    return np.ascontiguousarray(arr)


def _unreadable(path: Path, why: str) -> DataError:
    return DataError(f"cannot read image {path}: {why}. Check that the file is a complete PNG/JPEG/TIFF/EXR "
                     "image (re-export it) or remove it from the folder.")


def _png_colour_type(path: Path) -> int | None:
    """The IHDR colour type of a PNG (0 gray, 2 RGB, 3 palette, 4 gray+alpha, 6 RGBA)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(26)
    except OSError:
        return None
    if len(head) < 26 or head[:8] != b"\x89PNG\r\n\x1a\n":
        return None
    return head[25]


def _read_cv2(path: Path) -> np.ndarray | None:
    cv2 = _cv2()
    try:
        buf = np.fromfile(str(path), dtype=np.uint8)  # imdecode: any path, no locale issues
    except OSError as exc:
        raise _unreadable(path, f"{type(exc).__name__}: {exc}") from None
    if buf.size == 0:
        raise _unreadable(path, "the file is empty")
    arr = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    if arr is None:
        return None
    return _bgr_to_rgb(arr)


def _read_imageio(path: Path, **kwargs) -> np.ndarray:
    import imageio.v3 as iio

    try:
        return np.asarray(iio.imread(path, **kwargs))
    except Exception as exc:  # imageio raises many types for corrupt or unknown files
        raise _unreadable(path, f"{type(exc).__name__}: {exc}") from None


def exr_backend() -> str | None:
    """"opencv" or "openexr" (the library that will read/write EXR here), or None."""
    cv2 = _cv2()
    if hasattr(cv2, "haveImageWriter") and cv2.haveImageWriter("x.exr"):
        return "opencv"
    try:
        import OpenEXR  # noqa: F401
    except ImportError:
        return None
    return "openexr"


def _no_exr(path: Path) -> DataError:
    return DataError(f"cannot read or write OpenEXR file {path}: this OpenCV build has no OpenEXR codec and the "
                     "OpenEXR package is not installed. Install it with `pip install openexr` (or convert the "
                     "frames to 16-bit or float TIFF).")


def _read_exr(path: Path) -> np.ndarray:
    backend = exr_backend()
    if backend == "opencv":
        arr = _read_cv2(path)
        if arr is not None:
            return arr
    try:
        import OpenEXR
    except ImportError:
        if backend == "opencv":
            raise _unreadable(path, "OpenCV could not decode this OpenEXR file") from None
        raise _no_exr(path) from None

    try:
        with OpenEXR.File(str(path), separate_channels=True) as f:
            channels = {name: np.asarray(ch.pixels) for name, ch in f.channels().items()}
    except Exception as exc:  # the binding raises RuntimeError/OSError for damaged files
        raise _unreadable(path, f"{type(exc).__name__}: {exc}") from None
    names = set(channels)
    alpha = ["A"] if "A" in names else []
    if {"R", "G", "B"} <= names:
        order = ["R", "G", "B"] + alpha
    elif "Y" in names:
        order = ["Y"] + alpha
    elif len(names) == 1:
        order = list(names)
    else:
        raise DataError(f"cannot use OpenEXR file {path}: channels {sorted(names)}; expected R,G,B(,A) or Y(,A). "
                        "Export the beauty pass as RGB(A).")
    chosen = [channels[c] for c in order]
    extra = names - {"R", "G", "B", "A", "Y"}
    if extra and len(chosen) > 1:
        log.warning("%s: ignoring extra EXR channels %s", path, sorted(extra))
    return np.stack(chosen, axis=-1)


def read_array(path: str | Path) -> np.ndarray:
    """Pixels as stored: ``H x W x C`` (C = 1..4, RGB(A) order), dtype uint8/uint16/float16/float32."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"image {path} does not exist.")
    check_image_file(path)  # from the header, before a byte of pixels is decoded
    suffix = path.suffix.lower()
    if suffix == ".exr":
        arr = _read_exr(path)
    elif suffix in (".jpg", ".jpeg"):
        arr = _read_imageio(path)
        if arr.ndim == 3 and arr.shape[2] == 4:  # CMYK JPEG: let Pillow convert it
            arr = _read_imageio(path, mode="RGB")
    elif suffix == ".png" and _png_colour_type(path) == 4:
        arr = _read_imageio(path)  # gray+alpha: Pillow keeps two channels (OpenCV would expand to four)
    elif suffix == ".png" and _png_colour_type(path) == 3:
        arr = _read_imageio(path, mode="RGBA")  # palette: the colours (read_mask gives the indices)
        if arr[:, :, 3].min() == 255:
            arr = arr[:, :, :3]
    else:
        arr = _read_cv2(path)
        if arr is None:
            if suffix in (".tif", ".tiff"):
                arr = _read_imageio(path)
                if arr.size == 0:
                    raise _unreadable(path, "the TIFF holds no pixels (truncated?)")
            else:
                raise _unreadable(path, "the decoder could not decode it (truncated or not an image)")
    if arr.dtype == bool:
        arr = arr.astype(np.uint8) * 255
    elif arr.dtype == np.float64:
        arr = arr.astype(np.float32)
    elif arr.dtype == np.int16 or arr.dtype == np.int32:
        raise DataError(f"cannot use image {path}: signed integer pixels ({arr.dtype}); save it as unsigned 8/16-bit "
                        "or float.")
    if str(arr.dtype) not in SUPPORTED_DTYPES:
        raise DataError(f"cannot use image {path}: unsupported pixel type {arr.dtype} (supported: "
                        f"{', '.join(SUPPORTED_DTYPES)}).")
    return _as_hwc(arr, path)


def _write_exr(path: Path, arr: np.ndarray) -> None:
    backend = exr_backend()
    if arr.dtype not in (np.float16, np.float32):
        arr = arr.astype(np.float32)
    if backend == "opencv" and arr.dtype == np.float32:
        cv2 = _cv2()
        if not cv2.imwrite(str(path), _rgb_to_bgr(arr)):
            raise DataError(f"could not write {path} with OpenCV.")
        return
    if backend is None:
        raise _no_exr(path)
    import OpenEXR

    names = {1: ["Y"], 2: ["Y", "A"], 3: ["R", "G", "B"], 4: ["R", "G", "B", "A"]}[arr.shape[2]]
    channels = {n: np.ascontiguousarray(arr[:, :, i]) for i, n in enumerate(names)}
    header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
    with OpenEXR.File(header, channels) as f:
        f.write(str(path))


def write_array(path: str | Path, arr: np.ndarray, quality: int = 95) -> Path:
    """Write pixels exactly as given (dtype and channels kept; JPEG is lossy, ``quality``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.asarray(arr)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.dtype == np.float64:
        arr = arr.astype(np.float32)
    if arr.ndim != 3 or arr.shape[2] not in (1, 2, 3, 4):
        raise DataError(f"cannot write {path}: array shape {arr.shape} is not H x W x 1..4.")
    if str(arr.dtype) not in SUPPORTED_DTYPES:
        raise DataError(f"cannot write {path}: pixel type {arr.dtype} (supported: {', '.join(SUPPORTED_DTYPES)}).")
    suffix = path.suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        raise DataError(f"cannot write {path}: unknown image extension {suffix!r} (use one of "
                        f"{', '.join(IMAGE_SUFFIXES)}).")
    is_float = arr.dtype.kind == "f"
    if is_float and suffix not in FLOAT_SUFFIXES:
        raise DataError(f"cannot write float pixels to {path}: {suffix} holds integers only; use .tif or .exr, "
                        "or convert to 8/16-bit first.")
    if suffix == ".exr":
        _write_exr(path, arr)
        return path
    if suffix in (".jpg", ".jpeg") and (arr.dtype != np.uint8 or arr.shape[2] in (2, 4)):
        raise DataError(f"cannot write {path}: JPEG holds 8-bit gray or RGB only (got {arr.dtype}, "
                        f"{arr.shape[2]} channels).")
    if arr.shape[2] == 2 or (suffix in (".tif", ".tiff") and arr.dtype == np.float16):
        # OpenCV writes 1, 3 or 4 channels only, and no float16 TIFF: imageio (Pillow / tifffile).
        if suffix == ".png" and arr.dtype != np.uint8:
            raise DataError(f"cannot write {path}: a 16-bit gray+alpha PNG is not supported; write RGBA or TIFF.")
        import imageio.v3 as iio

        iio.imwrite(path, arr)
        return path
    cv2 = _cv2()
    params: list[int] = []
    if suffix in (".jpg", ".jpeg"):
        params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)]
    out = arr[:, :, 0] if arr.shape[2] == 1 else _rgb_to_bgr(arr)
    if not cv2.imwrite(str(path), np.ascontiguousarray(out), params):
        raise DataError(f"could not write {path} (OpenCV refused {arr.dtype} x {arr.shape[2]} channels for {suffix}).")
    return path


def read_mask(path: str | Path) -> np.ndarray:
    """A label mask as an ``H x W`` integer array (index/palette PNG, 8/16-bit gray, TIFF).

    Palette PNGs give their indices (not the palette colours). An RGB(A) mask is accepted only
    when its colour channels are equal (a gray mask saved as RGB); a colour-coded mask is an
    error, since the colour-to-class mapping is not known.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"mask {path} does not exist.")
    check_image_file(path, "mask")
    if path.suffix.lower() == ".png":
        from PIL import Image

        try:
            with Image.open(path) as im:
                im.load()
                mode = im.mode
                arr = np.asarray(im)
        except Exception as exc:  # Pillow raises OSError/SyntaxError/ValueError for damaged files
            raise DataError(f"cannot read mask {path}: {type(exc).__name__}: {exc}. Re-export it as an index PNG.") from None
        if mode.startswith("I;16") or mode == "I":
            arr = arr.astype(np.int64)
    elif path.suffix.lower() in (".jpg", ".jpeg"):
        raise DataError(f"mask {path} is a JPEG: lossy compression changes class indices at edges. Save masks as "
                        "index PNGs.")
    else:
        arr = read_array(path)
        if arr.dtype.kind == "f":
            if not np.array_equal(arr, np.round(arr)):
                raise DataError(f"mask {path} holds non-integer values; masks must hold class indices.")
            arr = arr.astype(np.int64)
    if arr.ndim == 3:
        if arr.shape[2] in (2, 4):
            arr = arr[:, :, :-1]
        if arr.shape[2] > 1 and not all(np.array_equal(arr[:, :, 0], arr[:, :, c]) for c in range(1, arr.shape[2])):
            raise DataError(f"mask {path} is a colour image; masks must be single-channel class indices (an index/"
                            "palette PNG or 8-bit gray PNG whose pixel values are the class numbers).")
        arr = arr[:, :, 0]
    if arr.ndim != 2 or arr.size == 0:
        raise DataError(f"cannot use mask {path}: unexpected shape {arr.shape}.")
    return np.ascontiguousarray(arr)


def write_mask(path: str | Path, mask: np.ndarray, palette: list[tuple[int, int, int]] | None = None) -> Path:
    """Write an ``H x W`` label mask as an index PNG (palette PNG when ``palette`` is given)."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mask = np.asarray(mask)
    if mask.max(initial=0) > 255 or mask.min(initial=0) < 0:
        if palette is not None:
            raise DataError(f"cannot write {path}: a palette PNG holds indices 0..255 only.")
        Image.fromarray(mask.astype(np.uint16)).save(path)
        return path
    im = Image.fromarray(mask.astype(np.uint8))
    if palette is not None:
        flat = [int(c) for rgb in palette for c in rgb]
        im.putpalette(flat + [0] * (768 - len(flat)))  # an L image with a palette becomes a P image
    im.save(path)
    return path
