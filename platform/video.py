"""Video files in and out through imageio-ffmpeg, keeping frame rate, frame count, size and depth.

``probe(path)`` reads the stream header (codec, pixel format, frame rate, size) and counts
the frames; ``read_frames(path)`` yields H x W x 3 frames (``uint8``, or ``uint16`` for 10-,
12- and 16-bit sources); :class:`VideoWriter` writes frames back:

* ``.mp4`` (and ``.mkv``/``.m4v``): H.264 (libx264, CRF 12) in 4:4:4 so odd sizes are kept and
  colours are not subsampled; 10-bit and deeper sources as 10-bit 4:4:4 H.264;
* ``.mov``: 8-bit sources as H.264 like ``.mp4``; deeper sources as ProRes 4444 (10-bit);
* ``.avi``/``.webm``: whatever ffmpeg's default encoder for them is (8-bit).

The frame rate is written as an exact fraction: ffmpeg prints rates rounded to two
decimals (23.98), so NTSC rates are snapped back to n x 1000/1001 (24000/1001 etc.).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Self

import numpy as np

from platform.data.limits import check_pixels
from platform.errors import DataError

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".m4v", ".avi", ".webm")
NTSC_BASES = (24, 30, 48, 60, 120, 240)
CRF = "12"  # visually lossless H.264; the network output is the product, so keep it


@dataclass(frozen=True)
class VideoInfo:
    """What a written video must keep of its source."""

    width: int
    height: int
    fps: Fraction
    frames: int
    bit_depth: int = 8  # 8, or 16 for 10/12/16-bit sources (frames as uint16)
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


def probe(path: str | Path) -> VideoInfo:
    """Header and frame count of a video; a :class:`DataError` if ffmpeg cannot read it."""
    import imageio_ffmpeg

    path = Path(path)
    try:
        gen = imageio_ffmpeg.read_frames(str(path))
        meta = next(gen)  # the header only
        gen.close()
        check_pixels(path, int(meta["size"][0] or 0), int(meta["size"][1] or 0), "video")  # before decoding
        frames, _ = imageio_ffmpeg.count_frames_and_secs(str(path))
    except DataError:
        raise
    except Exception as exc:  # imageio-ffmpeg raises IOError/RuntimeError/StopIteration
        raise DataError(f"cannot read video {path}: {type(exc).__name__}: {str(exc).strip().splitlines()[-1:]}. "
                        "Check that it is a complete video file ffmpeg can decode (re-export it).") from None
    width, height = meta["size"]
    if not frames or not width or not height:
        raise DataError(f"video {path} has no decodable frames (size {width}x{height}, {frames} frames).")
    fps = meta.get("fps") or 0
    if fps <= 0:
        log.warning("video %s does not state its frame rate; writing 24 frames/s", path)
        fps = 24
    full = str(meta.get("pix_fmt", ""))
    pix_fmt = full.split("(")[0]
    return VideoInfo(width=int(width), height=int(height), fps=exact_fps(float(fps)), frames=int(frames),
                     bit_depth=_bit_depth(pix_fmt), codec=str(meta.get("codec", "")), pix_fmt=pix_fmt,
                     **colour_description(full))


def read_frames(path: str | Path, info: VideoInfo | None = None) -> Iterator[np.ndarray]:
    """Frames of a video as H x W x 3 ``uint8`` (``uint16`` for deeper sources)."""
    import imageio_ffmpeg

    info = info or probe(path)
    if re.match(r"(yuva|rgba|bgra|argb|abgr|gbrap|ya\d)", info.pix_fmt):
        # Decoding to RGB would drop the alpha without a word.
        raise DataError(f"video {path} has an alpha channel ({info.pix_fmt}); video alpha is not carried through. "
                        "Export the shot as an image sequence (PNG/EXR/TIFF frames keep alpha) and pass the folder.")
    deep = info.bit_depth > 8
    gen = imageio_ffmpeg.read_frames(str(path), pix_fmt="rgb48le" if deep else "rgb24",
                                     bits_per_pixel=48 if deep else 24)
    next(gen)
    dtype = np.dtype("<u2") if deep else np.uint8
    try:
        for raw in gen:
            yield np.frombuffer(raw, dtype=dtype).reshape(info.height, info.width, 3).astype(
                np.uint16 if deep else np.uint8, copy=False)
    finally:
        gen.close()


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
        if "codec" in params:
            params["output_params"] = params["output_params"] + self._colour_params()
        return params

    def _colour_params(self) -> list[str]:
        """Encode with the source's YUV matrix and range and tag the file like the source (ffmpeg
        would otherwise convert RGB with BT.601 and write no tags: a BT.709 plate would shift)."""
        info, out = self.info, []
        matrix = SCALE_MATRIX.get(info.colorspace)
        if matrix or info.color_range:
            scale = [f"out_color_matrix={matrix}"] if matrix else []
            scale += [f"out_range={info.color_range}"] if info.color_range else []
            out += ["-vf", "scale=" + ":".join(scale)]
        for flag, value in (("-colorspace", info.colorspace), ("-color_primaries", info.color_primaries),
                            ("-color_trc", info.color_trc), ("-color_range", info.color_range)):
            if value:
                out += [flag, value]
        return out

    def __enter__(self) -> Self:
        import imageio_ffmpeg

        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._gen = imageio_ffmpeg.write_frames(str(self.path), self.info.size, fps=self.info.fps,
                                                ffmpeg_log_level="error", **self._params())
        self._gen.send(None)
        return self

    def write(self, frame: np.ndarray) -> None:
        deep = self.info.bit_depth > 8
        want = np.uint16 if deep else np.uint8
        if frame.dtype != want or frame.shape != (self.info.height, self.info.width, 3):
            raise ValueError(f"frame {frame.shape} {frame.dtype} does not match the video "
                             f"({self.info.height}, {self.info.width}, 3) {np.dtype(want)}")
        self._gen.send(np.ascontiguousarray(frame.astype("<u2") if deep else frame).tobytes())
        self.count += 1

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._gen is not None:
            self._gen.close()
        if exc_type is None and self.count != self.info.frames:
            log.warning("wrote %d frames to %s, the source has %d", self.count, self.path, self.info.frames)
