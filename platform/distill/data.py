"""Training crops for distillation: labelled pairs and unlabelled frames, each with the teacher's output.

Every item of :class:`DistillCropDataset` is ``(input, {"target", "teacher", "labelled"})``: a
random crop of a frame, the same crop of its ground truth (zeros on an unlabelled frame) and of
the teacher's cached output, and 1/0 for whether the ground truth is real. A crop comes from a
labelled frame with probability ``labelled_fraction`` (frames drawn in proportion to their area
within each group), so a shot with hundreds of ungraded frames does not drown its few graded
ones. Item ``i`` of epoch ``e`` is a pure function of ``(seed, e, i)``, as in
:class:`platform.data.paired.CropDataset`.

Augmentation is written by hand (flips and quarter turns, the task's ``hflip``/``vflip``/``rotate90``
probabilities): albumentations pipelines transform one image and one target, and here three
aligned arrays (input, ground truth, teacher output in (C, H, W)) must move together.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from platform.data.io import to_float
from platform.data.paired import target_to_tensor, to_model_range
from platform.errors import DataError


@dataclass
class DistillItem:
    """A frame: its input (HxWxC, as stored), ground truth (None when unlabelled) and teacher output (C, H, W)."""

    name: str
    input: np.ndarray
    target: np.ndarray | None
    teacher: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        return self.input.shape[:2]


def _flip_probabilities(augment: dict | None) -> tuple[float, float, float]:
    a = augment or {}
    return float(a.get("hflip", 0.5)), float(a.get("vflip", 0.5)), float(a.get("rotate90", 0.5))


def _dihedral(arr: np.ndarray, hf: bool, vf: bool, turns: int, channels_first: bool) -> np.ndarray:
    h, w = (1, 2) if channels_first else (0, 1)
    if hf:
        arr = np.flip(arr, axis=w)
    if vf:
        arr = np.flip(arr, axis=h)
    if turns:
        arr = np.rot90(arr, turns, axes=(h, w))
    return np.ascontiguousarray(arr)


class DistillCropDataset(Dataset):
    """``length`` random crops per epoch from labelled and unlabelled frames (see the module docstring).

    ``target_kind``: ``image`` (img2img), ``alpha`` (matting) or ``mask`` (segmentation labels).
    """

    def __init__(self, labelled: list[DistillItem], unlabelled: list[DistillItem], crop: int, length: int,
                 seed: int = 0, labelled_fraction: float = 0.5, target_kind: str = "image",
                 augment: dict | None = None):
        if not labelled and not unlabelled:
            raise DataError("distillation has no training frames: no labelled pair and no unlabelled frame.")
        for item in [*labelled, *unlabelled]:
            h, w = item.shape
            if h < crop or w < crop:
                raise DataError(f"frame {item.name} is {w}x{h}, smaller than the crop size {crop}; lower task.crop "
                                f"to at most {min(h, w)} or remove the frame.")
            if item.teacher.shape[1:] != item.shape:
                raise DataError(f"frame {item.name}: the teacher's output is {item.teacher.shape[2]}x"
                                f"{item.teacher.shape[1]} but the frame is {w}x{h}.")
        self.groups = [g for g in (labelled, unlabelled) if g]
        self.fractions = ([labelled_fraction, 1.0 - labelled_fraction] if labelled and unlabelled else [1.0])
        self.weights = [self._areas(g) for g in self.groups]
        self.crop, self.length, self.seed = crop, length, seed
        self.target_kind = target_kind
        self.hflip, self.vflip, self.rotate90 = _flip_probabilities(augment)
        self.epoch = 0

    @staticmethod
    def _areas(items: list[DistillItem]) -> np.ndarray:
        areas = np.array([it.shape[0] * it.shape[1] for it in items], dtype=np.float64)
        return areas / areas.sum()

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def plan(self, epoch: int, index: int) -> tuple[DistillItem, int, int, bool, bool, int]:
        """(frame, top, left, hflip, vflip, quarter turns) of item ``index`` in ``epoch``."""
        rng = np.random.default_rng([self.seed, epoch, index])
        g = int(rng.choice(len(self.groups), p=self.fractions))
        item = self.groups[g][int(rng.choice(len(self.groups[g]), p=self.weights[g]))]
        h, w = item.shape
        top, left = int(rng.integers(0, h - self.crop + 1)), int(rng.integers(0, w - self.crop + 1))
        hf, vf = bool(rng.random() < self.hflip), bool(rng.random() < self.vflip)
        turns = int(rng.integers(1, 4)) if rng.random() < self.rotate90 else 0
        return item, top, left, hf, vf, turns

    def __getitem__(self, index: int):
        item, top, left, hf, vf, turns = self.plan(self.epoch, index)
        c = self.crop
        x = _dihedral(to_float(item.input[top:top + c, left:left + c]), hf, vf, turns, channels_first=False)
        t = _dihedral(np.asarray(item.teacher[:, top:top + c, left:left + c], dtype=np.float32), hf, vf, turns,
                      channels_first=True)
        if item.target is not None:
            y = item.target[top:top + c, left:left + c]
            y = _dihedral(y if self.target_kind == "mask" else to_float(y), hf, vf, turns, channels_first=False)
            target = target_to_tensor(y, self.target_kind)
        else:
            target = self._empty_target(x, t)
        labelled = torch.tensor(1.0 if item.target is not None else 0.0)
        return to_model_range(x), {"target": target, "teacher": torch.from_numpy(t), "labelled": labelled}

    def _empty_target(self, x: np.ndarray, t: np.ndarray) -> torch.Tensor:
        """A placeholder ground truth of the right shape and type (never scored: ``labelled`` is 0)."""
        c = self.crop
        if self.target_kind == "mask":
            return torch.zeros(c, c, dtype=torch.int64)
        if self.target_kind == "alpha":
            return torch.zeros(1, c, c)
        return torch.zeros(x.shape[2], c, c)
