"""A task that also learns from a teacher: the hook the common trainer calls for ``distill.teacher``.

:func:`with_teacher` wraps a built task (img2img, matting or segmentation): everything is the
task's own (validation, metrics, model kwargs, floors) except

* ``train_dataset()``: crops of the labelled training pairs *and* of the unlabelled frames
  (``task.unlabelled``), each with the teacher's output (:mod:`platform.distill.data`), read
  from the teacher cache (:mod:`platform.distill.cache`) that ``python -m platform.distill``
  filled before the search: a trial never runs the teacher;
* ``create_loss(spec)``: the task's loss on the labelled crops + ``distill.weight`` x the
  distillation loss (``distill_output`` for images and mattes, ``distill_kl`` at
  ``distill.temperature`` for segmentation; :mod:`platform.losses.distill`).

This module never loads a teacher (that would import the model loader, which imports the
trainer): :func:`frames` lists the exact arrays whose outputs the cache holds, and
:mod:`platform.distill.teacher` computes them.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from platform.distill.cache import TeacherCache
from platform.distill.data import DistillCropDataset, DistillItem
from platform.distill.frames import read_unlabelled
from platform.errors import ConfigError

log = logging.getLogger(__name__)

#: task kind -> the ground truth's kind in the crop dataset
TARGET_KINDS = {"img2img": "image", "matting": "alpha", "segmentation": "mask"}


def _plain(value: Any) -> Any:
    from platform.data.augment import concrete

    return concrete(value)


class DistillTask:
    """``task`` plus a teacher's outputs (see the module docstring); other attributes are the task's."""

    def __init__(self, task, config: dict):
        kind = getattr(task, "kind", "img2img")
        if kind not in TARGET_KINDS:
            raise ConfigError(f"distillation supports the tasks {', '.join(TARGET_KINDS)}; task "
                              f"{config['task'].get('name')!r} has output kind {kind!r}.")
        self._task = task
        self.distill_config = dict(config["distill"])
        self.task_config = dict(config["task"])
        self.cache = TeacherCache(self.distill_config["teacher"], self.distill_config.get("cache"))

    def __getattr__(self, name: str) -> Any:  # everything else is the wrapped task's
        return getattr(self.__dict__["_task"], name)

    @property
    def wrapped(self):
        return self._task

    def frames(self) -> tuple[list[tuple[str, np.ndarray, np.ndarray]], list[tuple[str, np.ndarray]]]:
        """``(labelled [(name, input, target)], unlabelled [(name, input)])``: the training frames as
        the network's input encodes them (the cache is keyed by these exact arrays)."""
        items = getattr(self._task, "train_pairs", None) or getattr(self._task, "train_items", [])
        labelled = [(p.name, p.input, p.target) for p in items if "~" not in p.name]  # no offline copies
        raw = read_unlabelled(self.task_config.get("unlabelled"), getattr(self._task, "folder", None),
                              alpha=_plain(self.task_config.get("alpha", "error")),
                              max_frames=self.task_config.get("unlabelled_max_frames"))
        return labelled, [(name, self.encode_input(arr)) for name, arr in raw]

    def encode_input(self, arr: np.ndarray) -> np.ndarray:
        """An unlabelled frame as the task stores its inputs (img2img's transfer function on float data)."""
        transfer = getattr(self._task, "transfer", None)
        if transfer is None or (transfer.name == "identity" and arr.dtype.kind != "f"):
            return arr
        from platform.data.io import to_float

        return transfer.encode(to_float(arr)).astype(np.float32)

    def train_dataset(self) -> DistillCropDataset:
        labelled, unlabelled = self.frames()
        get = self.cache.get
        lab = [DistillItem(n, x, y, get(x, None)) for n, x, y in labelled]
        unl = [DistillItem(n, x, None, get(x, None)) for n, x in unlabelled]
        cfg = self.task_config
        log.info("distillation data: %d labelled and %d unlabelled frame(s), teacher %s", len(lab), len(unl),
                 self.cache.teacher_id)
        return DistillCropDataset(lab, unl, crop=int(_plain(cfg["crop"])), length=int(_plain(cfg["crops_per_epoch"])),
                                  seed=self._task.seed, labelled_fraction=float(self.distill_config["labelled_fraction"]),
                                  target_kind=TARGET_KINDS[self._task.kind],
                                  augment={k: _plain(v) for k, v in (cfg.get("augment") or {}).items()})

    def create_loss(self, spec: dict | None = None, allow_unavailable: bool = True):
        from platform import losses
        from platform.losses.distill import OutputDistillation, SoftTargetKL, TeacherStudentLoss

        if hasattr(self._task, "create_loss"):
            base = self._task.create_loss(spec, allow_unavailable=allow_unavailable)
        else:
            base = losses.create(spec or self._task.default_loss(), allow_unavailable=allow_unavailable)
        d = self.distill_config
        if self._task.kind == "segmentation":
            term = SoftTargetKL(float(d["temperature"]))
        else:
            term = OutputDistillation(str(d.get("output_loss", "l1")))
        return TeacherStudentLoss(base, term, float(d["weight"]))


def with_teacher(task, config: dict):
    """``task`` wrapped as a :class:`DistillTask` when ``config["distill"]["teacher"]`` is set, else ``task``."""
    if not (config.get("distill") or {}).get("teacher"):
        return task
    return DistillTask(task, config)
