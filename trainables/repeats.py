"""Few-shot noise: score one trial by the mean over k seeds or k folds, in lockstep.

With 5-15 frames, one validation score is noisy: a lucky seed or an easy held-out frame can
win a search. ``search.repeat: {over: fold, k: 3}`` (or ``over: seed``) runs k copies of the
common trainer inside the one Tune trial, each in a thread with its own session, and reports
to Tune once per epoch the *mean* of their metrics (plus ``<metric>_std``). Because the k
trainers advance in lockstep (each blocks in ``report`` until all k have finished the same
epoch), ASHA sees per-epoch means and compares trials on equal footing at every rung.

Threads rather than processes: one Tune trial owns its resources (GPU share included), the
trainers spend their time in PyTorch kernels that release the GIL, and nothing in the trainer
needs changing. The combined checkpoint holds each replica's checkpoint in ``rep<i>/`` (a
resumed trial resumes every replica from its own) and, at its root, replica 0's files with
the mean metrics, so registration and image logging work as for a single trainer.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any

from platform.train.session import Session

log = logging.getLogger(__name__)


def replica_config(config: dict, index: int, k: int, over: str) -> dict:
    cfg = copy.deepcopy(config)
    if over == "seed":
        cfg["train"]["seed"] = int(cfg["train"].get("seed", 0)) + 1000 * index
    elif over == "fold":
        cfg["task"]["folds"] = int(k)
        cfg["task"]["fold"] = int(index)
    else:
        raise ValueError(f"repeat over {over!r}")
    return cfg


def mean_metrics(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean of every numeric key over the replicas (+ ``_std`` of the validation metrics)."""
    out: dict[str, Any] = {}
    for key, first in reports[0].items():
        values = [r.get(key) for r in reports]
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            mean = sum(float(v) for v in values) / len(values)
            out[key] = int(first) if key == "epoch" else mean
            if key.startswith("val_"):
                var = sum((float(v) - mean) ** 2 for v in values) / len(values)
                out[f"{key}_std"] = math.sqrt(var)
        else:
            out[key] = first
    out["repeats"] = len(reports)
    return out


class _Stop(Exception):
    """Raised in a replica's thread when the trial is being torn down."""


class _Lockstep:
    def __init__(self, k: int):
        self.k = k
        self.cond = threading.Condition()
        self.deposits: dict[int, tuple[dict, str | None]] = {}
        self.released = 0  # number of epochs released
        self.finished: set[int] = set()
        self.error: BaseException | None = None
        self.stop = False

    def deposit(self, index: int, metrics: dict, ckpt: str | None) -> None:
        with self.cond:
            epoch_no = self.released
            self.deposits[index] = (dict(metrics), ckpt)
            self.cond.notify_all()
            # Wait until the coordinator has consumed this epoch (it copies the checkpoint folder,
            # which the trainer deletes as soon as report returns).
            while self.released == epoch_no and not self.stop:
                self.cond.wait()
            if self.stop:
                raise _Stop()


class _ReplicaSession(Session):
    def __init__(self, index: int, lockstep: _Lockstep, resume: Path | None, device):
        self.index, self.lockstep, self._resume, self._device = index, lockstep, resume, device
        self.reports = []

    def device(self):
        return self._device

    def get_checkpoint_dir(self):
        return self._resume

    def report(self, metrics, checkpoint_dir):
        self.lockstep.deposit(self.index, metrics, checkpoint_dir)


def run_lockstep(config: dict, k: int, over: str, session: Session, train_fn=None) -> dict[str, Any]:
    """Run k trainers in lockstep and report their per-epoch means to ``session``."""
    from platform.train.loop import train_loop

    train_fn = train_fn or train_loop
    lock = _Lockstep(k)
    resume_root = session.get_checkpoint_dir()
    device = session.device()
    last: dict[str, Any] = {}

    def worker(i: int) -> None:
        resume = Path(resume_root) / f"rep{i}" if resume_root and (Path(resume_root) / f"rep{i}").is_dir() else None
        try:
            train_fn(replica_config(config, i, k, over), _ReplicaSession(i, lock, resume, device))
        except _Stop:
            pass
        except BaseException as exc:  # handed to the coordinator, which re-raises it
            with lock.cond:
                if lock.error is None:
                    lock.error = exc
                lock.cond.notify_all()
        finally:
            with lock.cond:
                lock.finished.add(i)
                lock.cond.notify_all()

    threads = [threading.Thread(target=worker, args=(i,), name=f"repeat-{i}", daemon=True) for i in range(k)]
    for t in threads:
        t.start()
    try:
        while True:
            with lock.cond:
                while True:
                    if lock.error is not None:
                        raise lock.error
                    live = set(range(k)) - lock.finished
                    if not live:
                        break
                    if live <= set(lock.deposits):
                        break
                    lock.cond.wait(timeout=1.0)
                if not lock.deposits:
                    break  # every replica finished its epochs
                if len(lock.deposits) < k:
                    raise RuntimeError(f"repeat: only {len(lock.deposits)} of {k} replicas reached this epoch")
                reports = [lock.deposits[i][0] for i in range(k)]
                ckpts = [lock.deposits[i][1] for i in range(k)]
                mean = mean_metrics(reports)
                with tempfile.TemporaryDirectory(prefix="ckpt-repeat-") as tmp:
                    combined = None
                    if all(ckpts):
                        combined = Path(tmp)
                        for i, c in enumerate(ckpts):
                            shutil.copytree(c, combined / f"rep{i}")
                        for f in Path(ckpts[0]).iterdir():
                            if f.is_file() and f.name != "metrics.json":
                                shutil.copy2(f, combined / f.name)
                        (combined / "metrics.json").write_text(json.dumps(mean, indent=1, default=float))
                    session.report(mean, str(combined) if combined else None)
                last = mean
                lock.deposits.clear()
                lock.released += 1
                lock.cond.notify_all()
    finally:
        with lock.cond:
            if lock.error is not None or lock.finished != set(range(k)):
                lock.stop = True
            lock.cond.notify_all()
    for t in threads:
        t.join(timeout=5)
    return last
