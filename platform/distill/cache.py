"""The teacher-output cache: one file per (teacher version, frame), computed once.

A teacher's output on a frame depends only on the teacher's weights and the frame's pixels, so
an entry is keyed by ``sha256(teacher id, frame shape, dtype, frame bytes)``: every trial of a
distillation search (and every later search with the same teacher and frames) reads the same
file instead of running the teacher per step. Entries are ``safetensors`` files (raw tensors, no
pickle: a cache on shared storage may be written by anyone) holding the output as float16
(C, H, W) in the teacher's network range (logits for segmentation). Writes are atomic (a
temporary name renamed into place), so concurrent trials never read half a file.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from platform.errors import DataError

log = logging.getLogger(__name__)

ENTRY_KEY = "output"


def default_root() -> Path:
    """``$PLATFORM_DISTILL_CACHE``, else ``.cache/distill`` under the working directory."""
    return Path(os.environ.get("PLATFORM_DISTILL_CACHE") or Path(".cache") / "distill").resolve()


def frame_key(teacher_id: str, frame: np.ndarray) -> str:
    """The cache key of ``frame`` under the teacher ``teacher_id`` (content hash, not file name)."""
    h = hashlib.sha256()
    h.update(teacher_id.encode())
    h.update(f"|{frame.shape}|{frame.dtype.str}|".encode())
    h.update(np.ascontiguousarray(frame).tobytes())
    return h.hexdigest()


class TeacherCache:
    """Teacher outputs of ``teacher_id`` (e.g. ``models:/shot/3``) under ``root``.

    ``get(frame, compute)`` returns the cached (C, H, W) float16 output, calling
    ``compute(frame)`` only when the entry is missing; ``computed`` counts those calls.
    """

    def __init__(self, teacher_id: str, root: str | Path | None = None):
        self.teacher_id = teacher_id
        self.root = Path(root).expanduser().resolve() if root else default_root()
        self.computed = 0

    def path(self, frame: np.ndarray) -> Path:
        key = frame_key(self.teacher_id, frame)
        return self.root / key[:2] / f"{key}.safetensors"

    def has(self, frame: np.ndarray) -> bool:
        return self.path(frame).is_file()

    def load(self, frame: np.ndarray) -> np.ndarray | None:
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

        path = self.path(frame)
        if not path.is_file():
            return None
        try:
            return load_file(str(path))[ENTRY_KEY]
        except (SafetensorError, KeyError, OSError) as exc:
            log.warning("teacher cache entry %s is unreadable (%s); computing it again", path, exc)
            return None

    def get(self, frame: np.ndarray, compute: Callable[[np.ndarray], np.ndarray] | None) -> np.ndarray:
        out = self.load(frame)
        if out is not None:
            return out
        if compute is None:
            raise DataError(f"the teacher {self.teacher_id} has no cached output for a {frame.shape[1]}x"
                            f"{frame.shape[0]} training frame in {self.root}. Distillation trials read the "
                            "teacher's outputs that `python -m platform.distill` computes before the search; run "
                            "the search through that command (with the same data and task.unlabelled).")
        out = np.asarray(compute(frame), dtype=np.float16)
        self.computed += 1
        self.save(frame, out)
        return out

    def save(self, frame: np.ndarray, output: np.ndarray) -> Path:
        from safetensors.numpy import save_file

        path = self.path(frame)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".safetensors", dir=path.parent)
        os.close(fd)
        try:
            save_file({ENTRY_KEY: np.ascontiguousarray(output, dtype=np.float16)}, tmp,
                      metadata={"teacher": self.teacher_id})
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return path
