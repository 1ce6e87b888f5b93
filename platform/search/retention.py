"""Checkpoint retention: per trial keep the best N and the latest, delete the rest.

Disk stays bounded however long a search runs: after every new checkpoint of a trial the
retention callback (:class:`platform.search.bookkeeping.RetentionCallback`) calls
:func:`prune_trial`, and at the end of a search :func:`sweep` goes
over every trial folder of the experiment (Ray Train runs of DDP trials included). "Best" is
the search metric stored in each checkpoint's ``metrics.json`` (written by the common
trainer); "latest" is the highest ``checkpoint_NNNNNN`` index. A checkpoint that a
registered model version refers to (its ``source_checkpoint`` tag, set when the search
registers its best model) is never deleted.

Tune's own ``num_to_keep`` would also keep "best N + latest", but it knows nothing of the
registry and runs inside Tune's bookkeeping; deleting here keeps one policy for in-process
and DDP trials and for sweeps of old experiments.
"""

from __future__ import annotations

import json
import logging
import math
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

_CKPT = re.compile(r"^checkpoint_(\d+)$")


@dataclass(frozen=True)
class Ckpt:
    path: str
    index: int
    value: float | None


def list_checkpoints(trial_dir: str | Path, metric: str) -> list[Ckpt]:
    out = []
    for p in Path(trial_dir).iterdir() if Path(trial_dir).is_dir() else []:
        m = _CKPT.match(p.name)
        if not (m and p.is_dir()):
            continue
        value = None
        mfile = p / "metrics.json"
        if mfile.is_file():
            try:
                v = json.loads(mfile.read_text()).get(metric)
                value = float(v) if isinstance(v, (int, float)) and math.isfinite(v) else None  # NaN is never "best"
            except (OSError, ValueError):
                value = None
        out.append(Ckpt(str(p.resolve()), int(m.group(1)), value))
    return sorted(out, key=lambda c: c.index)


def select_deletions(ckpts: list[Ckpt], keep_best: int, mode: str, protected: set[str] | frozenset = frozenset()
                     ) -> list[Ckpt]:
    """Checkpoints to delete: all but the best ``keep_best`` (by value), the latest and protected ones."""
    if not ckpts:
        return []
    latest = max(ckpts, key=lambda c: c.index)
    scored = [c for c in ckpts if c.value is not None]
    scored.sort(key=lambda c: (c.value, c.index), reverse=(mode == "max"))
    if mode == "min":
        scored.sort(key=lambda c: (c.value, -c.index))
    keep = {c.path for c in scored[:keep_best]} | {latest.path}
    prot = {str(Path(p).resolve()) for p in protected}
    return [c for c in ckpts if c.path not in keep and c.path not in prot]


def prune_trial(trial_dir: str | Path, metric: str, mode: str, keep_best: int,
                protected: set[str] | frozenset = frozenset()) -> list[str]:
    """Apply the policy to one trial folder; returns the deleted paths."""
    deleted = []
    for c in select_deletions(list_checkpoints(trial_dir, metric), keep_best, mode, protected):
        shutil.rmtree(c.path, ignore_errors=True)
        deleted.append(c.path)
    if deleted:
        log.debug("retention: deleted %d checkpoint(s) of %s", len(deleted), trial_dir)
    return deleted


def sweep(root: str | Path, metric: str, mode: str, keep_best: int,
          protected: set[str] | frozenset = frozenset()) -> dict[str, list[str]]:
    """Prune every folder under ``root`` that holds ``checkpoint_*`` folders."""
    root = Path(root)
    out: dict[str, list[str]] = {}
    if not root.is_dir():
        return out
    parents = {p.parent for p in root.rglob("checkpoint_*") if p.is_dir() and _CKPT.match(p.name)}
    for parent in sorted(parents):
        deleted = prune_trial(parent, metric, mode, keep_best, protected)
        if deleted:
            out[str(parent)] = deleted
    return out


def protected_checkpoints(client, model_name: str | None = None) -> set[str]:
    """Checkpoint folders that registered model versions were made from (never deleted)."""
    try:
        versions = client.search_model_versions(f"name='{model_name}'" if model_name else "")
    except Exception:  # no registry (e.g. a fresh store): nothing to protect
        return set()
    out = set()
    for v in versions:
        src = (v.tags or {}).get("source_checkpoint")
        if src:
            out.add(str(Path(src).resolve()) if "://" not in src else src)
    return out


# --------------------------------------------------------------------------- deletions Tune agrees with
def saved_latest_checkpoints(experiment_path: str | Path) -> dict[str, int] | None:
    """{trial_id: index of its latest checkpoint} in Tune's newest saved experiment state (the
    file ``--resume`` restores from); {} before the first save, None while it is unreadable
    (being written)."""
    files = sorted(Path(experiment_path).glob("experiment_state-*.json"), key=lambda p: p.name)
    if not files:
        return {}
    try:
        text = files[-1].read_text()
        refs = latest_checkpoints(json.loads(text))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return refs


def latest_checkpoints(state: dict) -> dict[str, int]:
    out = {}
    for trial_json, meta_json in state["trial_data"]:
        trial, meta = json.loads(trial_json), json.loads(meta_json)
        last = meta.get("last_result") or {}
        last = json.loads(last) if isinstance(last, str) else last
        m = _CKPT.match(str(last.get("checkpoint_dir_name") or ""))
        if m:
            out[str(trial["trial_id"])] = int(m.group(1))
    return out


class DeferredDeletions:
    """Checkpoints the policy dropped, deleted only once Tune's saved state no longer needs them.

    Tune saves its experiment state every few seconds; ``--resume`` restarts each unfinished
    trial from the latest checkpoint that state names. Deleting at once could remove that
    checkpoint (the trial has saved a newer one since, but the state on storage is older), and a
    resumed trial would fail: "checkpoint ... does not exist on storage anymore". So a dropped
    checkpoint waits until the saved state's last result names a checkpoint two or more later
    (Tune records the result before it registers that result's checkpoint).
    """

    def __init__(self, experiment_path: str | Path):
        self.experiment_path = str(experiment_path)
        self.queued: dict[str, Ckpt] = {}

    def queue(self, trial_dir: str | Path, metric: str, mode: str, keep_best: int,
              protected: set[str] | frozenset = frozenset()) -> None:
        for c in select_deletions(list_checkpoints(trial_dir, metric), keep_best, mode, protected):
            self.queued.setdefault(c.path, c)

    def flush(self) -> list[str]:
        """Delete the queued checkpoints the saved state no longer refers to; returns them."""
        saved = saved_latest_checkpoints(self.experiment_path)
        if saved is None:
            return []
        deleted = []
        for path, c in list(self.queued.items()):
            trial_id = Path(path).parent.name.removeprefix("trial_")
            # Tune may save a result (naming checkpoint n) before it registers checkpoint n: the state
            # can still restore from n - 1, so only checkpoints older than that go.
            if trial_id in saved and c.index < saved[trial_id] - 1:
                shutil.rmtree(path, ignore_errors=True)
                deleted.append(path)
                del self.queued[path]
        if deleted:
            log.debug("retention: deleted %d checkpoint(s) Tune's saved state no longer needs", len(deleted))
        return deleted
