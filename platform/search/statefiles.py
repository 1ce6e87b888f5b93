"""Tune's saved experiment state on storage: a consistent last-good copy, and its repair on ``--resume``.

Tune writes its state (``experiment_state-*.json``, the searcher's ``searcher-state-*.pkl`` and
``search_gen_state-*.json``, the callbacks' ``callback-states-*.pkl``) into a staging folder on the
driver, atomically and all in one step, then copies that folder to the experiment folder on
storage, file by file and not atomically. A driver SIGKILLed during that copy leaves a truncated
file on storage, and Tune's own restore then fails half-way ("Failed to restore the run state ...
Restarting experiment") with its trials forgotten.

So the state-file callback (:class:`platform.search.bookkeeping.StateFileCallback`), called by
Tune inside that one step, copies the freshly written staging
files (a consistent set) into ``.state.good/`` of the experiment folder, and :func:`repair` puts
that set back before a resume if any state file on storage is damaged. Files are checked without
being loaded: JSON is parsed, pickles are walked opcode by opcode with :mod:`pickletools` (which
runs nothing), so a crafted file is never executed here.
"""

from __future__ import annotations

import json
import logging
import os
import pickletools
import shutil
import uuid
from pathlib import Path

log = logging.getLogger(__name__)

PATTERNS = ("experiment_state-*.json", "search_gen_state-*.json", "searcher-state-*.pkl", "callback-states-*.pkl")
GOOD = ".state.good"
CALLBACKS = "callback-states-"


def newest_state_files(folder: str | Path) -> list[Path]:
    """The newest file of each kind of Tune state in ``folder`` (kinds Tune never wrote are absent)."""
    out = []
    for pattern in PATTERNS:
        files = sorted(Path(folder).glob(pattern), key=lambda p: p.name)
        if files:
            out.append(files[-1])
    return out


def intact(path: Path) -> bool:
    """Whether a state file is complete: JSON that parses, or a pickle whose opcodes run to STOP.
    Tune's ``search_gen_state-*.json`` is in fact a cloudpickle, so the content decides, not the name."""
    try:
        data = path.read_bytes()
    except OSError:
        return False
    if not data:
        return False
    if data[:1] == b"\x80":  # a pickle (protocol >= 2)
        try:
            return any(op.name == "STOP" for op, _, _ in pickletools.genops(data))
        except ValueError:  # truncated or garbled: genops raises on the first bad opcode
            return False
    try:
        json.loads(data)
        return True
    except ValueError:
        return False


def snapshot(staging: str | Path, experiment_path: str | Path) -> bool:
    """Copy the state Tune has just written to ``staging`` into ``experiment_path/.state.good``
    (replaced as a whole: a new folder, then a rename). Returns whether a complete set was saved."""
    files = [f for f in newest_state_files(staging) if not f.name.startswith(CALLBACKS)]
    if not any(f.name.startswith("experiment_state-") for f in files) or not all(intact(f) for f in files):
        return False
    dest = Path(experiment_path)
    tmp = dest / f"{GOOD}.{uuid.uuid4().hex[:8]}.tmp"
    tmp.mkdir(parents=True)
    for f in files:
        shutil.copyfile(f, tmp / f.name)
    good = dest / GOOD
    old = dest / f"{GOOD}.{uuid.uuid4().hex[:8]}.old"
    if good.exists():
        good.rename(old)
    tmp.rename(good)
    shutil.rmtree(old, ignore_errors=True)
    return True


def repair(experiment_path: str | Path) -> bool:
    """Before ``--resume``: if Tune's trial or searcher state on storage is damaged, put back the
    last consistent set; without one, remove that state so that Tune starts the trials afresh
    (their MLflow runs are reconciled by the driver). A damaged callbacks' state alone is dropped.
    Returns whether it changed anything."""
    folder = Path(experiment_path)
    _recover_interrupted_snapshot(folder)
    damaged = [f for f in newest_state_files(folder) if not intact(f)]
    if not damaged:
        return False
    for f in damaged:
        f.unlink()
    if not any(f.name.startswith(CALLBACKS) for f in damaged) or len(damaged) > 1:
        _restore_good_set(folder, [f.name for f in damaged])
    else:
        log.warning("the callbacks' saved state %s was damaged when the search was killed; it is dropped "
                    "(trial runs are found again in MLflow)", damaged[0].name)
    return True


def _restore_good_set(folder: Path, damaged: list[str]) -> None:
    """Replace Tune's trial and searcher state by the last consistent set (or none: a fresh start)."""
    for pattern in PATTERNS:
        if not pattern.startswith(CALLBACKS):
            for f in folder.glob(pattern):
                f.unlink()
    good = folder / GOOD
    kept = sorted(p.name for p in good.glob("*")) if good.is_dir() else []
    for name in kept:
        shutil.copyfile(good / name, folder / name)
    if any(n.startswith("experiment_state-") for n in kept):
        log.warning("Tune's saved state was damaged when the search was killed (%s); restored the last "
                    "consistent state (%s)", ", ".join(damaged), ", ".join(kept))
    else:
        log.warning("Tune's saved state was damaged before any complete save (%s); the trials start afresh",
                    ", ".join(damaged))


def _recover_interrupted_snapshot(folder: Path) -> None:
    """A kill between the two renames of :func:`snapshot` leaves only ``.old``: make it current."""
    good = folder / GOOD
    if not good.is_dir():
        olds = sorted(folder.glob(f"{GOOD}.*.old"), key=os.path.getmtime)
        if olds:
            olds[-1].rename(good)
    for leftover in [*folder.glob(f"{GOOD}.*.tmp"), *folder.glob(f"{GOOD}.*.old")]:
        shutil.rmtree(leftover, ignore_errors=True)
