"""Training crops cut on the accelerator from frames held in its memory.

A few-shot set (5-15 frames, even at 4K) fits in GPU memory many times over, so on a GPU the
trainer can skip the host pipeline of :class:`platform.data.paired.CropDataset` (a Python call,
an albumentations pass and a host-to-device copy per crop, serialised with the training step
because the loader runs in the trainer's process): :class:`DeviceCrops` keeps every training
frame on the device as stored (8/16-bit integers or float32, channels first) and cuts each batch
there, converting only the crops to float.

Crop positions are those of the dataset: item ``i`` of epoch ``e`` draws its frame and corner
from the same ``(seed, e, i)`` generator, so the DDP shards stay disjoint and their union is what
one worker would see. The flips and the 90° rotation are drawn from the seed the dataset would
hand to albumentations, with the same probabilities (the same distribution, not the same draws).
Only geometric flip/rotate augmentation of image targets is supported; any other augmentation
(photometric, blur, noise, affine, extra albumentations transforms) keeps the host pipeline.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
import torch

from platform.data.io import native_max
from platform.errors import ConfigError


def unsupported_reason(dataset) -> str | None:
    """Why ``dataset`` cannot be cut on the device, or None when it can."""
    from platform.data.paired import CropDataset

    if type(dataset) is not CropDataset:
        return f"the task's training set is a {type(dataset).__name__}, not paired image crops"
    if dataset.target_kind != "image" or dataset.target_transform is not None:
        return f"the targets are {dataset.target_kind}s"
    if dataset.augment.flip_probabilities() is None:
        return "task.augment uses more than flips and 90° rotations"
    return None


class DeviceCrops:
    """Batches of paired crops of a :class:`CropDataset`, cut on ``device``."""

    def __init__(self, dataset, device: torch.device):
        reason = unsupported_reason(dataset)
        if reason:
            raise ConfigError(f"train.device_crops: {reason}; set train.device_crops to auto or off.")
        self.dataset, self.device = dataset, device
        self.hflip, self.vflip, self.rotate90 = dataset.augment.flip_probabilities()
        self.frames = [(self._to_device(p.input), self._to_device(p.target)) for p in dataset.pairs]

    def _to_device(self, arr: np.ndarray) -> tuple[torch.Tensor, float]:
        if arr.ndim == 2:
            arr = arr[:, :, None]
        scale = 1.0 if arr.dtype.kind == "f" else float(native_max(arr.dtype))
        if arr.dtype == np.uint16:  # torch has no uint16 arithmetic on every device: hold it as int32
            arr = arr.astype(np.int32)
        t = torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1))).to(self.device)
        return t, scale

    def item_plan(self, epoch: int, index: int) -> tuple[int, int, int, bool, bool, int]:
        """(frame, top, left, hflip, vflip, quarter turns) of item ``index`` in ``epoch``."""
        k, top, left, aug_seed = self.dataset.crop_plan(epoch, index)  # the dataset's own frame and corner
        aug = np.random.default_rng(aug_seed)
        hf, vf = bool(aug.random() < self.hflip), bool(aug.random() < self.vflip)
        turns = int(aug.integers(0, 4)) if aug.random() < self.rotate90 else 0
        return k, top, left, hf, vf, turns

    def _crop(self, frame: tuple[torch.Tensor, float], top: int, left: int, hf: bool, vf: bool,
              turns: int) -> torch.Tensor:
        data, scale = frame
        c = self.dataset.crop
        x = data[:, top:top + c, left:left + c].float()
        if scale != 1.0:
            x = x / scale
        if hf:
            x = x.flip(-1)
        if vf:
            x = x.flip(-2)
        if turns:
            x = torch.rot90(x, turns, dims=(-2, -1))
        return x * 2.0 - 1.0

    def batches(self, epoch: int, indices: Iterable[int], batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """``(inputs, targets)`` in [-1, 1], NCHW on the device; the last partial batch is dropped."""
        indices = list(indices)
        for start in range(0, len(indices) - batch_size + 1, batch_size):
            xs, ys = [], []
            for index in indices[start:start + batch_size]:
                k, top, left, hf, vf, turns = self.item_plan(epoch, index)
                xs.append(self._crop(self.frames[k][0], top, left, hf, vf, turns))
                ys.append(self._crop(self.frames[k][1], top, left, hf, vf, turns))
            yield torch.stack(xs), torch.stack(ys)


def make_device_crops(dataset, device: torch.device, mode: str) -> DeviceCrops | None:
    """``train.device_crops``: ``auto`` (on CUDA when the data allows), ``on`` (required), ``off``."""
    if mode == "off" or (mode == "auto" and (device.type != "cuda" or unsupported_reason(dataset))):
        return None
    return DeviceCrops(dataset, device)
