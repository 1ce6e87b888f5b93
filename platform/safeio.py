"""Reading and writing model files without running code from them.

A ``state.pt`` or ``weights.pt`` may come from anyone (``predict --model``, a checkpoint on
shared storage another node wrote, a registry artifact). ``torch.load`` with
``weights_only=False`` unpickles arbitrary objects, and unpickling can run any code, so every
load here is ``weights_only=True``: tensors, numbers, strings, lists, tuples and dicts only.
The trainer therefore stores its trial config as JSON text and its RNG states as tensors and
lists (see :func:`platform.train.loop._save_checkpoint`).

Writes go to a temporary name in the destination folder and are renamed into place, so a
reader (or a crash) never sees half a file.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from platform.errors import DataError


class UnsafeFileError(DataError):
    """A model file holds pickled Python objects (which could run code) and was not loaded."""


def load_tensors(path: str | os.PathLike, what: str = "checkpoint") -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU, with a user error for foreign files.

    Raises :class:`UnsafeFileError` when the file holds anything but tensors and plain
    containers (nothing in it has run), :class:`DataError` when it is no torch file at all.
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))
        if found:
            raise UnsafeFileError(
                f"{what} {path} was refused: it contains pickled Python objects ({found.group(1)}) besides tensors, "
                "and loading them could run code. Only files written by this platform's trainer or export (tensors, "
                "numbers, JSON text) are loaded; if this is an older platform checkpoint, re-export it from a "
                "trusted copy.") from None
        raise _unreadable(path, what, exc) from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise _unreadable(path, what, exc) from None


def _unreadable(path, what: str, exc: Exception) -> DataError:
    text = str(exc).strip()
    detail = re.search(r"WeightsUnpickler error:\s*(.+)", text)
    first = (detail.group(1) if detail else text.splitlines()[0] if text else "")[:200]
    return DataError(f"cannot read {what} {path} ({type(exc).__name__}: {first}); it is no torch file this "
                     "platform wrote. Give a state.pt written by the trainer or a weights.pt of a logged model.")


def load_state(path: str | os.PathLike, what: str = "checkpoint") -> dict:
    """A trainer checkpoint or exported weights file, with ``config`` as a dict again."""
    state = load_tensors(path, what)
    if isinstance(state, dict) and isinstance(state.get("config"), str):
        try:
            state["config"] = json.loads(state["config"])
        except ValueError:
            raise DataError(f"{what} {path}: its config is not valid JSON; the file is damaged.") from None
    return state


def to_json_text(config: Any) -> str:
    """A trial config as JSON text (numpy scalars as numbers; anything else exotic as text)."""
    def default(value):
        item = getattr(value, "item", None)
        return item() if callable(item) else str(value)

    return json.dumps(config, default=default)


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside ``dest``; renamed onto ``dest`` when the block succeeds."""
    dest = Path(dest)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, dest)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def save_atomic(obj: Any, dest: str | os.PathLike) -> Path:
    """``torch.save(obj, dest)`` through a temporary file and a rename."""
    with atomic_path(dest) as tmp:
        torch.save(obj, tmp)
    return Path(dest)
