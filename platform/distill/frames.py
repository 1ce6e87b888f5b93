"""Unlabelled frames of a shot (``task.unlabelled``): a folder of images or a video.

A folder is read image by image in file-name order (any names; numbered frames need not be
contiguous), a video frame by frame through :func:`platform.data.video.iter_frames`. Frames keep
their stored values (8/16-bit integers stay integers: they are hashed as stored and converted to
float per crop) and go through the task's alpha policy like the labelled inputs.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from platform.errors import ConfigError

log = logging.getLogger(__name__)


def resolve(value: str, data_folder: str | Path | None = None) -> Path:
    """``task.unlabelled`` as an existing path (relative: the data folder first, then the working directory)."""
    p = Path(str(value)).expanduser()
    if not p.is_absolute() and data_folder is not None and (Path(data_folder) / p).exists():
        p = Path(data_folder) / p
    p = p.resolve()
    if not p.exists():
        raise ConfigError(f"task.unlabelled is {value!r}, which does not exist (looked in the data folder {data_folder} "
                          f"and in {Path.cwd()}). Give a folder of ungraded frames of the shot or a video file "
                          "(--unlabelled DIR), or leave it out to distil on the labelled frames only.")
    return p


def read_unlabelled(value: str | None, data_folder: str | Path | None = None, alpha: str = "error",
                    max_frames: int | None = None) -> list[tuple[str, np.ndarray]]:
    """``[(name, HxWxC array)]`` of the unlabelled frames (empty when ``value`` is None)."""
    if not value:
        return []
    from platform.data.io import apply_alpha, is_image_file, read_array
    from platform.data.video import is_video_file, iter_frames

    path = resolve(value, data_folder)
    out: list[tuple[str, np.ndarray]] = []
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if is_image_file(p))
        if not files:
            raise ConfigError(f"task.unlabelled: {path} holds no images (looked for .png, .jpg, .tif, .exr ...); "
                              "give a folder of frames or a video file.")
        for p in files[:max_frames] if max_frames else files:
            out.append((p.stem, apply_alpha(read_array(p), alpha, p)))
    elif is_video_file(path):
        for i, frame in enumerate(iter_frames(path, max_frames=max_frames)):
            out.append((f"{path.stem}.{i:05d}", apply_alpha(frame, alpha, path)))
    else:
        raise ConfigError(f"task.unlabelled: {path} is neither a folder nor a video file; give a folder of ungraded "
                          "frames of the shot or a video (.mp4, .mov, ...).")
    log.info("unlabelled frames: %d from %s", len(out), path)
    return out
