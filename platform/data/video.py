"""Video files and numbered frame folders, in and out, at the precision they were stored with.

Everything goes through imageio-ffmpeg's bundled ffmpeg:

* ``probe(path)`` reads the stream header (codec, pixel format, frame rate, size, colour tags)
  and counts the frames;
* ``read_video(path)`` yields H x W x 3 frames: ``uint8`` for 8-bit sources, ``uint16`` for
  9- to 16-bit ones (10- and 12-bit samples are scaled to the full 16-bit range, no bits are
  dropped). YUV is converted to RGB with the matrix and range the file declares;
* ``iter_frames(path)`` / ``read_frames(path)`` take a video *or* a folder of numbered frames
  (read with :mod:`platform.data.formats`, EXR and 16-bit included, in the order of the *last
  number* in each file name: ``shot.0009.exr`` before ``shot.0010.exr``) and pick frames
  ``start, start + step, ...``; frames come one at a time, so a long sequence never sits in
  memory whole (validation sequences);
* :class:`VideoWriter` writes frames back with a source's size, rate, depth and colour tags:

  - ``.mp4`` (and ``.mkv``/``.m4v``): H.264 (libx264, CRF 12) in 4:4:4 so odd sizes are kept and
    colours are not subsampled; 10-bit and deeper sources as 10-bit 4:4:4 H.264;
  - ``.mov``: 8-bit sources as H.264 like ``.mp4``; deeper sources as ProRes 4444 (10-bit);
  - ``.avi``/``.webm``: whatever ffmpeg's default encoder for them is (8-bit);

* ``write_video`` / ``write_frames`` write plain 8-bit clips and frame folders (examples, tests).

The frame rate is written as an exact fraction: ffmpeg prints rates rounded to two
decimals (23.98), so NTSC rates are snapped back to n x 1000/1001 (24000/1001 etc.).
"""

from __future__ import annotations

import itertools
import logging
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Self

import numpy as np

from platform.data.formats import IMAGE_SUFFIXES, read_array, write_array
from platform.data.limits import check_pixels
from platform.errors import DataError

log = logging.getLogger(__name__)

#: Videos this module reads and writes (``predict`` takes and writes these).
VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".m4v", ".avi", ".webm")
#: Also read (validation sequences), never written.
READ_ONLY_SUFFIXES = (".mpg", ".mpeg", ".gif")
_NUMBER = re.compile(r"(\d+)(?!.*\d)")
_ALPHA = re.compile(r"(yuva|rgba|bgra|argb|abgr|gbrap|ya\d)")
NTSC_BASES = (24, 30, 48, 60, 120, 240)
CRF = "12"  # visually lossless H.264; the network output is the product, so keep it


@dataclass(frozen=True)
class VideoInfo:
    """What a written video must keep of its source."""

    width: int
    height: int
    fps: Fraction
    frames: int
    bit_depth: int = 8  # 8, or 16 for 9- to 16-bit sources (frames as uint16)
    codec: str = ""
    pix_fmt: str = ""
    # Colour description of a YUV source (ffmpeg's names; "" when the file does not say):
    color_range: str = ""      # tv (limited) or pc (full)
    colorspace: str = ""       # the YUV matrix: bt709, smpte170m, bt470bg, bt2020nc, ...
    color_primaries: str = ""
    color_trc: str = ""

    @property
    def size(self) -> tuple[int, int]:
        return self.width, self.height


def is_video_file(path: str | Path) -> bool:
    """Whether ``path`` names a video this module can also write (by its suffix; it need not exist)."""
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def exact_fps(value: float) -> Fraction:
    """The exact rate behind ffmpeg's rounded one: 23.98 -> 24000/1001, 25.0 -> 25."""
    if value <= 0:
        raise ValueError(value)
    for base in NTSC_BASES:
        ntsc = Fraction(base * 1000, 1001)
        if abs(value - float(ntsc)) < 0.006:
            return ntsc
    return Fraction(value).limit_denominator(1001)


def _bit_depth(pix_fmt: str) -> int:
    match = re.search(r"p(9|10|12|14|16)(le|be)", pix_fmt) or re.search(r"(48|64)(le|be)", pix_fmt)
    return 16 if match else 8


#: ffmpeg's colorspace tags -> the matrix names of its scale filter (``out_color_matrix``).
SCALE_MATRIX = {"bt709": "bt709", "smpte170m": "smpte170m", "bt470bg": "bt601", "smpte240m": "smpte240m",
                "bt2020nc": "bt2020", "bt2020c": "bt2020", "fcc": "fcc"}
#: ffmpeg's colorspace tags -> colour-science's YCbCr weights, for the 9- to 16-bit YUV that is
#: converted here (untagged: BT.601, as ffmpeg assumes). Other matrices (e.g. constant-luminance
#: BT.2020) are left to ffmpeg's scaler.
YCBCR_WEIGHTS = {"": "ITU-R BT.601", "bt470bg": "ITU-R BT.601", "smpte170m": "ITU-R BT.601",
                 "bt709": "ITU-R BT.709", "bt2020nc": "ITU-R BT.2020", "smpte240m": "SMPTE-240M"}
_SCAN = {"progressive", "top first", "bottom first", "top coded first (swapped)", "bottom coded first (swapped)"}


def colour_description(pix_fmt: str) -> dict[str, str]:
    """Range and colour tags from ffmpeg's stream description, e.g. ``yuv420p(tv, bt709, progressive)``
    or ``yuv420p10le(tv, bt2020nc/bt2020/arib-std-b67)``; "unknown" tags are left out."""
    match = re.search(r"\((.*)\)", pix_fmt)
    out: dict[str, str] = {}
    for token in (t.strip() for t in (match.group(1).split(",") if match else [])):
        if token in ("tv", "pc"):
            out["color_range"] = token
        elif token and token not in _SCAN:
            parts = token.split("/")
            space, primaries, trc = parts if len(parts) == 3 else (token, token, token)
            for key, value in (("colorspace", space), ("color_primaries", primaries), ("color_trc", trc)):
                if value and value != "unknown":
                    out[key] = value
    return out


def _header(path: Path) -> dict:
    """imageio-ffmpeg's stream header (size, fps, codec, pix_fmt) without decoding a frame."""
    import imageio_ffmpeg

    gen = imageio_ffmpeg.read_frames(str(path))
    try:
        return next(gen)
    finally:
        gen.close()


def _cannot_read(path: Path, exc: Exception) -> DataError:
    return DataError(f"cannot read video {path}: {type(exc).__name__}: {str(exc).strip().splitlines()[-1:]}. "
                     "Check that it is a complete video file ffmpeg can decode (re-export it, e.g. as H.264/FFV1, "
                     "or as numbered frames).")


def probe(path: str | Path, count_frames: bool = True) -> VideoInfo:
    """Header (and, unless ``count_frames`` is false, frame count) of a video; a :class:`DataError`
    if ffmpeg cannot read it. Counting decodes the whole file; without it ``frames`` is 0."""
    import imageio_ffmpeg

    path = Path(path)
    try:
        meta = _header(path)
        check_pixels(path, int(meta["size"][0] or 0), int(meta["size"][1] or 0), "video")  # before decoding
        frames = imageio_ffmpeg.count_frames_and_secs(str(path))[0] if count_frames else None
    except DataError:
        raise
    except Exception as exc:  # imageio-ffmpeg raises IOError/RuntimeError/StopIteration
        raise _cannot_read(path, exc) from None
    width, height = meta["size"]
    if frames == 0 or not width or not height:
        raise DataError(f"video {path} has no decodable frames (size {width}x{height}, {frames} frames).")
    fps = meta.get("fps") or 0
    if fps <= 0:
        log.warning("video %s does not state its frame rate; writing 24 frames/s", path)
        fps = 24
    full = str(meta.get("pix_fmt", ""))
    pix_fmt = full.split("(")[0]
    return VideoInfo(width=int(width), height=int(height), fps=exact_fps(float(fps)), frames=int(frames or 0),
                     bit_depth=_bit_depth(pix_fmt), codec=str(meta.get("codec", "")), pix_fmt=pix_fmt,
                     **colour_description(full))


def converts_yuv_here(info: VideoInfo) -> bool:
    """Whether a deep YUV stream's colour conversion is done here rather than by ffmpeg's scaler.

    ffmpeg's scaler (9.0, the bundled one) uses the tagged matrix but puts limited-range
    10-bit white (940) at 65283 instead of 65535 in 16-bit RGB, and its writer maps 65535
    back to 943: a 0.4% gain, more error than 8-bit decoding has. So 9- to 16-bit YUV travels
    as 16-bit YUV samples, and the matrix is applied here (colour-science's coefficients).
    """
    return info.bit_depth > 8 and info.pix_fmt.startswith("yuv") and info.colorspace in YCBCR_WEIGHTS


def ycbcr_matrix(info: VideoInfo) -> tuple[np.ndarray, np.ndarray]:
    """(3x3 matrix, offsets) taking 16-bit Y'CbCr codes to RGB in [0, 1]: ``(yuv - offsets) @ M.T``."""
    from colour import WEIGHTS_YCBCR
    from colour.models.rgb.ycbcr import matrix_YCbCr, offset_YCbCr

    weights, legal = WEIGHTS_YCBCR[YCBCR_WEIGHTS[info.colorspace]], info.color_range != "pc"
    return (np.asarray(matrix_YCbCr(K=weights, bits=16, is_legal=legal, is_int=True), np.float64),
            np.asarray(offset_YCbCr(bits=16, is_legal=legal, is_int=True), np.float64))


def yuv16_to_rgb16(planes: np.ndarray, info: VideoInfo) -> np.ndarray:
    """3 x H x W 16-bit Y'CbCr codes -> H x W x 3 ``uint16`` RGB (full range)."""
    matrix, offsets = ycbcr_matrix(info)
    rgb = (planes.transpose(1, 2, 0).astype(np.float32) - offsets.astype(np.float32)) @ matrix.T.astype(np.float32)
    return np.round(np.clip(rgb, 0.0, 1.0) * 65535.0).astype(np.uint16)


def rgb16_to_yuv16(frame: np.ndarray, info: VideoInfo) -> np.ndarray:
    """H x W x 3 ``uint16`` RGB -> 3 x H x W 16-bit Y'CbCr codes (the inverse of :func:`yuv16_to_rgb16`)."""
    matrix, offsets = ycbcr_matrix(info)
    yuv = (frame.astype(np.float32) / 65535.0) @ np.linalg.inv(matrix).T.astype(np.float32) + offsets.astype(np.float32)
    return np.round(np.clip(yuv, 0, 65535)).astype(np.uint16).transpose(2, 0, 1)


def _decode_format(info: VideoInfo, alpha: bool) -> tuple[str, int]:
    """ffmpeg's output pixel format and bits per pixel for RGB(A) at the source's depth.

    Deep YUV comes as 16-bit Y'CbCr (ffmpeg only upsamples the chroma and shifts the bits;
    see :func:`converts_yuv_here`); the rest is converted by ffmpeg's scaler with the stream's
    matrix and range tags (BT.601 when untagged). The tags stay in :class:`VideoInfo` for the
    writer.
    """
    deep = info.bit_depth > 8
    if deep and not alpha and converts_yuv_here(info):
        return "yuv444p16le", 48
    pix_fmt = ("rgba64le" if alpha else "rgb48le") if deep else ("rgba" if alpha else "rgb24")
    return pix_fmt, (4 if alpha else 3) * (16 if deep else 8)


def read_video(path: str | Path, info: VideoInfo | None = None, keep_alpha: bool = False) -> Iterator[np.ndarray]:
    """Frames of a video as H x W x 3 ``uint8`` (``uint16`` for 9- to 16-bit sources).

    A source with an alpha channel is refused unless ``keep_alpha`` (then H x W x 4 frames):
    decoding it to RGB would drop the alpha without a word.
    """
    import imageio_ffmpeg

    path = Path(path)
    info = info or probe(path, count_frames=False)
    alpha = bool(_ALPHA.match(info.pix_fmt))
    if alpha and not keep_alpha:
        raise DataError(f"video {path} has an alpha channel ({info.pix_fmt}); video alpha is not carried through. "
                        "Export the shot as an image sequence (PNG/EXR/TIFF frames keep alpha) and pass the folder.")
    pix_fmt, bits = _decode_format(info, alpha)
    planar = pix_fmt.startswith("yuv")
    shape = (3, info.height, info.width) if planar else (info.height, info.width, 4 if alpha else 3)
    deep = info.bit_depth > 8
    dtype = np.dtype("<u2") if deep else np.dtype(np.uint8)
    gen = imageio_ffmpeg.read_frames(str(path), pix_fmt=pix_fmt, bits_per_pixel=bits)
    try:
        next(gen)
        for raw in gen:
            frame = np.frombuffer(raw, dtype=dtype).reshape(shape)
            yield yuv16_to_rgb16(frame, info) if planar else frame.astype(np.uint16 if deep else np.uint8, copy=False)
    except Exception as exc:  # a file that breaks off: ffmpeg's error as a DataError naming it
        raise _cannot_read(path, exc) from None
    finally:
        gen.close()


def frame_files(folder: str | Path) -> list[Path]:
    """The numbered image files of ``folder`` in frame order (errors name the folder)."""
    folder = Path(folder)
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
             and not p.name.startswith(".")]
    if not files:
        raise DataError(f"frame folder {folder} contains no images (looked for {', '.join(IMAGE_SUFFIXES)}).")
    numbered, unnumbered = [], []
    for p in files:
        m = _NUMBER.search(p.stem)
        (numbered if m else unnumbered).append((int(m.group(1)) if m else -1, p))
    if unnumbered:
        raise DataError(f"frame folder {folder}: {', '.join(sorted(p.name for _, p in unnumbered))} carry no frame "
                        "number; name frames like shot.0001.png so that their order is known.")
    numbered.sort(key=lambda t: (t[0], t[1].name))
    numbers = [n for n, _ in numbered]
    if len(set(numbers)) != len(numbers):
        dup = sorted({n for n in numbers if numbers.count(n) > 1})
        raise DataError(f"frame folder {folder} has several files for frame number(s) {dup[:10]}; keep one per frame.")
    gaps = [(a, b) for a, b in itertools.pairwise(numbers) if b != a + 1]
    if gaps:
        log.warning("frame folder %s skips frame numbers (e.g. %d -> %d)", folder, *gaps[0])
    return [p for _, p in numbered]


def _check_sequence(path: Path, start: int, step: int) -> None:
    known = ", ".join(VIDEO_SUFFIXES + READ_ONLY_SUFFIXES)
    if not path.exists():
        raise DataError(f"sequence {path} does not exist; give a video file ({known}) or a folder of numbered frames.")
    if path.is_file() and path.suffix.lower() not in VIDEO_SUFFIXES + READ_ONLY_SUFFIXES:
        raise DataError(f"sequence {path} is not a video file (known: {known}); give a video or a folder of "
                        "numbered frames.")
    if step < 1 or start < 0:
        raise DataError(f"sequence {path}: start must be >= 0 and step >= 1 (got start={start}, step={step}).")


def iter_frames(path: str | Path, start: int = 0, step: int = 1, max_frames: int | None = None) -> Iterator[np.ndarray]:
    """Frames ``start, start + step, ...`` (at most ``max_frames``) of a video or frame folder, as
    stored (H x W x C; ``uint16`` for deep videos, RGBA where the source has alpha)."""
    path = Path(path)
    _check_sequence(path, start, step)
    if path.is_dir():
        frames: Iterable[np.ndarray] = map(read_array, frame_files(path)[start::step])
    else:
        frames = itertools.islice(read_video(path, keep_alpha=True), start, None, step)
    wanted = 0
    for frame in itertools.islice(frames, max_frames or None):
        wanted += 1
        yield frame
    if wanted == 0:
        raise DataError(f"sequence {path} has no frames from frame {start} on.")


def read_frames(path: str | Path, start: int = 0, step: int = 1, max_frames: int | None = None) -> list[np.ndarray]:
    """All selected frames as a list (see :func:`iter_frames`)."""
    return list(iter_frames(path, start, step, max_frames))


def frame_to_float(frame: np.ndarray) -> np.ndarray:
    """uint8/uint16 H x W x C -> float32 [0, 1]."""
    scale = 65535.0 if frame.dtype == np.uint16 else 255.0
    return frame.astype(np.float32) / scale


def float_to_frame(img: np.ndarray, bit_depth: int) -> np.ndarray:
    """float [0, 1] H x W x C (1 or 3 channels) -> uint8/uint16 RGB."""
    img = np.asarray(img, dtype=np.float32)
    if img.ndim == 2:
        img = img[:, :, None]
    if img.shape[2] == 1:
        img = np.repeat(img, 3, axis=2)
    img = img[:, :, :3]
    if bit_depth > 8:
        return np.round(np.clip(img, 0, 1) * 65535.0).astype(np.uint16)
    return np.round(np.clip(img, 0, 1) * 255.0).astype(np.uint8)


class VideoWriter:
    """Write frames (``uint8``/``uint16`` H x W x 3) with a source's size, rate and depth.

    Use as a context manager; the frame count written is checked on close.
    """

    def __init__(self, path: str | Path, info: VideoInfo):
        self.path = Path(path)
        self.info = info
        self.count = 0
        self._gen = None
        self._yuv_input = False

    def _params(self) -> dict:
        suffix = self.path.suffix.lower()
        deep = self.info.bit_depth > 8
        params: dict = dict(macro_block_size=1, quality=None)
        if suffix == ".mov" and deep:
            params.update(codec="prores_ks", pix_fmt_out="yuv444p10le", output_params=["-profile:v", "4"])
        elif suffix in (".mp4", ".mov", ".mkv", ".m4v"):
            params.update(codec="libx264", pix_fmt_out="yuv444p10le" if deep else "yuv444p",
                          output_params=["-crf", CRF, "-preset", "medium"])
        else:
            params.update(quality=8)
        params["pix_fmt_in"] = "rgb48le" if deep else "rgb24"
        if "codec" in params and self._yuv_here:
            params["pix_fmt_in"] = "yuv444p16le"  # converted in write(); ffmpeg only shifts to 10 bits
            params["input_params"] = self._tags()  # so that ffmpeg does not convert it again
            params["output_params"] = params["output_params"] + self._tags()
        elif "codec" in params:
            params["output_params"] = params["output_params"] + self._colour_params()
        return params

    @property
    def _yuv_here(self) -> bool:
        """Deep output is written as 16-bit Y'CbCr converted here (see :func:`converts_yuv_here`)."""
        return self.info.bit_depth > 8 and self.info.colorspace in YCBCR_WEIGHTS

    def _tags(self) -> list[str]:
        out = []
        for flag, value in (("-colorspace", self.info.colorspace), ("-color_primaries", self.info.color_primaries),
                            ("-color_trc", self.info.color_trc), ("-color_range", self.info.color_range)):
            if value:
                out += [flag, value]
        return out

    def _colour_params(self) -> list[str]:
        """Encode with the source's YUV matrix and range and tag the file like the source (ffmpeg
        would otherwise convert RGB with BT.601 and write no tags: a BT.709 plate would shift)."""
        info, out = self.info, []
        matrix = SCALE_MATRIX.get(info.colorspace)
        if matrix or info.color_range:
            scale = [f"out_color_matrix={matrix}"] if matrix else []
            scale += [f"out_range={info.color_range}"] if info.color_range else []
            out += ["-vf", "scale=" + ":".join(scale)]
        return out + self._tags()

    def __enter__(self) -> Self:
        import imageio_ffmpeg

        self.path.parent.mkdir(parents=True, exist_ok=True)
        params = self._params()
        self._yuv_input = params["pix_fmt_in"] == "yuv444p16le"
        self._gen = imageio_ffmpeg.write_frames(str(self.path), self.info.size, fps=self.info.fps,
                                                ffmpeg_log_level="error", **params)
        self._gen.send(None)
        return self

    def write(self, frame: np.ndarray) -> None:
        deep = self.info.bit_depth > 8
        want = np.uint16 if deep else np.uint8
        if frame.dtype != want or frame.shape != (self.info.height, self.info.width, 3):
            raise ValueError(f"frame {frame.shape} {frame.dtype} does not match the video "
                             f"({self.info.height}, {self.info.width}, 3) {np.dtype(want)}")
        if self._yuv_input:
            frame = rgb16_to_yuv16(frame, self.info)
        self._gen.send(np.ascontiguousarray(frame.astype("<u2") if deep else frame).tobytes())
        self.count += 1

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._gen is not None:
            self._gen.close()
        if exc_type is None and self.count != self.info.frames:
            log.warning("wrote %d frames to %s, the source has %d", self.count, self.path, self.info.frames)


def write_video(path: str | Path, frames: Iterable[np.ndarray], fps: float = 24.0, lossless: bool = False) -> Path:
    """Write 8-bit RGB frames as a clip (``lossless``: FFV1 in Matroska, exact; else H.264).

    For examples and tests; :class:`VideoWriter` keeps a source's depth and colour tags.
    """
    import imageio_ffmpeg

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    codec = dict(codec="ffv1", pix_fmt_out="bgr0", quality=None) if lossless else dict(codec="libx264", quality=8)
    gen = None
    try:
        for frame in frames:
            frame = np.asarray(frame)
            if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] < 3:
                raise DataError(f"cannot write video {path}: frames must be H x W x 3 uint8 RGB, got "
                                f"{frame.shape} {frame.dtype}.")
            if gen is None:
                gen = imageio_ffmpeg.write_frames(str(path), (frame.shape[1], frame.shape[0]), fps=fps,
                                                  macro_block_size=1, ffmpeg_log_level="error", **codec)
                gen.send(None)
            gen.send(np.ascontiguousarray(frame[:, :, :3]).tobytes())
    finally:
        if gen is not None:
            gen.close()
    return path


def write_frames(folder: str | Path, frames: Iterable[np.ndarray], pattern: str = "frame.{:04d}.png",
                 first: int = 1) -> list[Path]:
    """Write frames (any dtype :func:`platform.data.formats.write_array` takes) as numbered files."""
    folder = Path(folder)
    return [write_array(folder / pattern.format(first + i), f) for i, f in enumerate(frames)]
