"""Few-shot paired image-to-image task (VFX looks, restoration)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from platform.data.paired import CropDataset, from_model_range, load_pairs, split_pairs, to_model_range
from platform.data.samples import resolve_data
from platform.inference import predict_image
from platform.tasks import register_task

log = logging.getLogger(__name__)


@dataclass
class ValResult:
    sums: dict[str, float]
    count: int
    grid: np.ndarray | None  # uint8 HxWx3 (input | output | target) of the first item, or None


def _downscale(img: np.ndarray, max_side: int) -> np.ndarray:
    h, w = img.shape[:2]
    s = max(h, w)
    if s <= max_side:
        return img
    step = int(np.ceil(s / max_side))
    return img[::step, ::step]


def make_grid(panels: list[np.ndarray], max_side: int = 512) -> np.ndarray:
    """Side-by-side panels ([0, 1] HxWx3) as uint8, each downscaled to at most ``max_side``."""
    panels = [_downscale(p, max_side) for p in panels]
    h = min(p.shape[0] for p in panels)
    sep = np.ones((h, 4, 3), dtype=np.float32)
    row = []
    for i, p in enumerate(panels):
        if i:
            row.append(sep)
        row.append(p[:h])
    return (np.clip(np.concatenate(row, axis=1), 0, 1) * 255 + 0.5).astype(np.uint8)


@register_task("img2img", kind="img2img", metric="val_psnr", mode="max")
class Img2ImgTask:
    """Paired input/target folders; random crops for training, whole frames for validation."""

    kind = "img2img"
    primary_metric = "val_psnr"
    mode = "max"
    metric_names = ("val_psnr", "val_ssim")

    def __init__(self, config: dict, seed: int = 0):
        self.config = config
        self.seed = seed
        self.folder = resolve_data(config["data"])
        pairs = load_pairs(self.folder)
        self.train_pairs, self.val_pairs = split_pairs(pairs, config.get("val_holdout", 2))
        if not self.val_pairs:
            # No hold-out (e.g. 1-2 pairs): validate on the training frames; say so.
            log.warning("no validation pairs held out: validating on the training frames")
            self.val_pairs = self.train_pairs

    @classmethod
    def model_kwargs(cls) -> dict:
        return {"in_channels": 3, "out_channels": 3}

    def default_loss(self) -> dict:
        return {"l1": 1.0}

    def train_dataset(self) -> CropDataset:
        aug = self.config.get("augment", {})
        return CropDataset(self.train_pairs, crop=self.config["crop"], length=self.config["crops_per_epoch"],
                           seed=self.seed, hflip=aug.get("hflip", 0.5), vflip=aug.get("vflip", 0.5),
                           rotate90=aug.get("rotate90", 0.5))

    def val_items(self):
        max_side = self.config.get("val_max_side")
        for p in self.val_pairs:
            x, y = p.input, p.target
            if max_side:
                x, y = _downscale(x, max_side), _downscale(y, max_side)
            yield p.name, x, y

    @torch.no_grad()
    def validate(self, model: torch.nn.Module, device: torch.device, precision: str = "fp32",
                 rank: int = 0, world_size: int = 1, want_grid: bool = False, lpips_fn=None) -> ValResult:
        """Whole-frame validation of this worker's share of the held-out pairs.

        Returns metric *sums* and a count so that the caller can reduce across workers.
        """
        from platform import metrics

        was_training = model.training
        model.eval()
        sums = {name: 0.0 for name in self.metric_names}
        if lpips_fn is not None:
            sums["val_lpips"] = 0.0
        count, grid = 0, None
        for i, (name, x_np, y_np) in enumerate(self.val_items()):
            if i % world_size != rank:
                continue
            x = to_model_range(x_np)[None].to(device)
            y = to_model_range(y_np)[None].to(device)
            out = predict_image(model, x, precision)
            sums["val_psnr"] += float(metrics.psnr(out, y, data_range=2.0))
            sums["val_ssim"] += float(metrics.ssim(out, y, data_range=2.0))
            if lpips_fn is not None:
                sums["val_lpips"] += float(lpips_fn(out, y).mean())
            count += 1
            if want_grid and grid is None:
                grid = make_grid([x_np, from_model_range(out[0]), y_np])
        model.train(was_training)
        return ValResult(sums, count, grid)
