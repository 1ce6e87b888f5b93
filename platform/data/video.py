"""Frame sequences for validation: a video file, or a folder of numbered frames.

``iter_frames(path)`` yields the frames one at a time (stored dtype, HxWxC RGB(A)), so a long
sequence never sits in memory whole. Video files are decoded with imageio's FFMPEG plugin
(the ``imageio-ffmpeg`` binary); frame folders are read with :mod:`platform.data.formats`
(any supported image format, EXR and 16-bit included) in the order of the *last number* in
each file name (``shot.0009.exr`` before ``shot.0010.exr``, whatever the zero padding).
"""

from __future__ import annotations

import itertools
import logging
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from platform.data.formats import IMAGE_SUFFIXES, read_array
from platform.errors import DataError

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".gif")
_NUMBER = re.compile(r"(\d+)(?!.*\d)")


def is_video_file(path: str | Path) -> bool:
    path = Path(path)
    return path.is_file() and path.suffix.lower() in VIDEO_SUFFIXES


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


def _check_source(path: Path) -> None:
    if not path.exists():
        raise DataError(f"sequence {path} does not exist; give a video file ({', '.join(VIDEO_SUFFIXES)}) or a folder "
                        "of numbered frames.")
    if path.is_file() and path.suffix.lower() not in VIDEO_SUFFIXES:
        raise DataError(f"sequence {path} is not a video file (known: {', '.join(VIDEO_SUFFIXES)}); give a video or a "
                        "folder of numbered frames.")


def iter_frames(path: str | Path, start: int = 0, step: int = 1, max_frames: int | None = None) -> Iterator[np.ndarray]:
    """Frames ``start, start + step, ...`` (at most ``max_frames``) of a video or frame folder."""
    path = Path(path)
    _check_source(path)
    if step < 1 or start < 0:
        raise DataError(f"sequence {path}: start must be >= 0 and step >= 1 (got start={start}, step={step}).")
    wanted = 0
    if path.is_dir():
        files = frame_files(path)[start::step]
        for p in files[:max_frames] if max_frames else files:
            arr = read_array(p)
            yield arr
        return
    import imageio.v3 as iio

    try:
        for i, frame in enumerate(iio.imiter(path, plugin="FFMPEG")):
            if i < start or (i - start) % step:
                continue
            yield np.ascontiguousarray(frame)
            wanted += 1
            if max_frames and wanted >= max_frames:
                break
    except DataError:
        raise
    except Exception as exc:  # imageio/ffmpeg raise OSError/RuntimeError/IndexError for bad files
        raise DataError(f"cannot decode video {path}: {type(exc).__name__}: {exc}. Re-encode it (e.g. H.264/FFV1) or "
                        "export it as numbered frames.") from None
    if wanted == 0 and path.is_file():
        raise DataError(f"video {path} has no frames from frame {start} on.")


def read_frames(path: str | Path, start: int = 0, step: int = 1, max_frames: int | None = None) -> list[np.ndarray]:
    """All selected frames as a list (see :func:`iter_frames`)."""
    return list(iter_frames(path, start, step, max_frames))


def write_video(path: str | Path, frames: Iterable[np.ndarray], fps: float = 24.0, lossless: bool = False) -> Path:
    """Write uint8 RGB frames as a video (``lossless``: FFV1 in Matroska, exact; else H.264)."""
    import imageio

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    kwargs = dict(codec="ffv1", pixelformat="bgr0") if lossless else dict(codec="libx264", quality=8)
    writer = imageio.get_writer(path, format="FFMPEG", fps=fps, macro_block_size=1, **kwargs)
    try:
        for frame in frames:
            frame = np.asarray(frame)
            if frame.dtype != np.uint8:
                raise DataError(f"cannot write video {path}: frames must be uint8 RGB, got {frame.dtype}.")
            writer.append_data(frame[:, :, :3] if frame.ndim == 3 else frame)
    finally:
        writer.close()
    return path


def write_frames(folder: str | Path, frames: Iterable[np.ndarray], pattern: str = "frame.{:04d}.png",
                 first: int = 1) -> list[Path]:
    """Write frames (any dtype :func:`platform.data.formats.write_array` takes) as numbered files."""
    from platform.data.formats import write_array

    folder = Path(folder)
    return [write_array(folder / pattern.format(first + i), f) for i, f in enumerate(frames)]
