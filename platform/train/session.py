"""Where a training loop reports to: Ray Train workers, a Tune trial's own process, or nothing.

The common trainer (:mod:`platform.train.loop`) talks only to a :class:`Session`, so the very
same loop runs as a multi-worker Ray Train DDP job, inside a single-worker Tune trial (no
second process to start) or in a plain process (benchmarks, tests).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch


class Session:
    """Plain-process session: keeps reports in memory and checkpoints in a folder."""

    rank = 0
    world_size = 1

    def __init__(self, checkpoint_root: str | Path | None = None, resume_from: str | Path | None = None):
        self.reports: list[dict[str, Any]] = []
        self.checkpoints: list[Path] = []
        self._root = Path(checkpoint_root) if checkpoint_root else Path(tempfile.mkdtemp(prefix="ckpt-"))
        self._resume_from = Path(resume_from) if resume_from else None

    def device(self) -> torch.device:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        return model.to(self.device())

    def get_checkpoint_dir(self) -> Path | None:
        return self._resume_from

    def report(self, metrics: dict[str, Any], checkpoint_dir: str | None) -> None:
        self.reports.append(dict(metrics))
        if checkpoint_dir:
            dest = self._root / f"checkpoint_{len(self.reports):06d}"
            shutil.copytree(checkpoint_dir, dest)
            self.checkpoints.append(dest)

    def should_stop(self) -> bool:
        return False


class TuneSession(Session):
    """A single-worker trial run inside the Tune trial's own process (no TorchTrainer)."""

    def __init__(self):  # no local folders
        self.reports = []

    def get_checkpoint_dir(self) -> Path | None:
        import ray.tune

        ckpt = ray.tune.get_checkpoint()
        return Path(ckpt.to_directory()) if ckpt else None

    def report(self, metrics, checkpoint_dir):
        import ray.tune

        checkpoint = ray.tune.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
        ray.tune.report(metrics, checkpoint=checkpoint)


class RayTrainSession(Session):
    """A Ray Train worker (one of ``world_size`` DDP processes)."""

    def __init__(self):
        import ray.train

        ctx = ray.train.get_context()
        self.rank = ctx.get_world_rank()
        self.world_size = ctx.get_world_size()
        self.reports = []

    def device(self) -> torch.device:
        import ray.train.torch

        return ray.train.torch.get_device()

    def prepare_model(self, model):
        import ray.train.torch

        return ray.train.torch.prepare_model(model)

    def get_checkpoint_dir(self):
        import ray.train

        ckpt = ray.train.get_checkpoint()
        return Path(ckpt.to_directory()) if ckpt else None

    def report(self, metrics, checkpoint_dir):
        import ray.train

        # Only rank 0 hands over a checkpoint; every rank must call report (it is a barrier).
        checkpoint = ray.train.Checkpoint.from_directory(checkpoint_dir) if (checkpoint_dir and self.rank == 0) else None
        ray.train.report(metrics, checkpoint=checkpoint)


def distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    if distributed():
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.SUM)
    return t


def cpu_count_hint() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
