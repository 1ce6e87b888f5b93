"""Alpha matting: an image in, its alpha matte out (one channel in the trainer's [-1, 1]).

Data: ``images/`` + ``alpha/`` matched by name (:func:`platform.data.segmentation.load_mattes`;
an RGBA file in ``alpha/`` gives its alpha channel). Metrics per validation image, on the [0, 1]
alpha scale: ``val_sad`` (sum of absolute differences / 1000, the Composition-1k convention;
primary, lower is better), ``val_mse``, ``val_grad`` (gradient error / 1000) and
``val_sad_unknown`` (SAD / 1000 inside the trimap's unknown band made from the true alpha).
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from platform.data.augment import PairedAugment
from platform.data.grids import downscale, make_grid
from platform.data.io import to_float
from platform.data.paired import CropDataset, from_model_range, to_model_range
from platform.data.samples import resolve_data
from platform.data.segmentation import load_mattes
from platform.tasks.base import (
    ValResult,
    option,
    predict_full,
    require_rgb_display_images,
    split_items,
    with_offline_copies,
)
from platform.tasks.registry import register_task

log = logging.getLogger(__name__)


@register_task("matting", kind="matting", metric="val_sad", mode="min")
class MattingTask:
    kind = "matting"
    primary_metric = "val_sad"
    mode = "min"
    metric_names = ("val_sad", "val_mse", "val_grad", "val_sad_unknown")

    def __init__(self, config: dict, seed: int = 0):
        require_rgb_display_images(config, "matting")
        self.config = config
        self.seed = seed
        self.folder = resolve_data(config["data"])
        items = load_mattes(self.folder)
        self.train_items, self.val_items_ = split_items(items, config)

    def model_kwargs(self) -> dict:
        return {"in_channels": 3, "out_channels": 1}

    def default_loss(self) -> dict:
        return {"l1": 1.0, "laplacian": 0.5}

    def train_dataset(self) -> CropDataset:
        aug = PairedAugment(self.config.get("augment"), target_kind="alpha", default_photometric_on="input")
        items = with_offline_copies(self.train_items, aug.config["offline_copies"])
        return CropDataset(items, crop=int(option(self.config, "crop")), length=int(option(self.config, "crops_per_epoch")),
                           seed=self.seed, augment=aug, target_kind="alpha", where=self.folder)

    def example_input(self) -> np.ndarray:
        return to_float(self.val_items_[0].input[:64, :64])[None].astype(np.float32)

    def val_items(self):
        max_side = option(self.config, "val_max_side")
        for p in self.val_items_:
            x, y = to_float(p.input), to_float(p.target)
            if max_side:
                x, y = downscale(x, max_side), downscale(y, max_side)
            yield p.name, x, y

    @torch.no_grad()
    def validate(self, model: torch.nn.Module, device: torch.device, precision: str = "fp32",
                 rank: int = 0, world_size: int = 1, want_grid: bool = False, lpips_fn=None) -> ValResult:
        from platform import metrics

        was_training = model.training
        model.eval()
        sums = {name: 0.0 for name in self.metric_names}
        count, grid = 0, None
        width = int(option(self.config, "trimap_width", 10) or 10)
        for i, (_, x_np, y_np) in enumerate(self.val_items()):
            if i % world_size != rank:
                continue
            x = to_model_range(x_np)[None].to(device)
            out = predict_full(model, x, precision, self.config, clamp=True)
            pred = (out[:, -1:] + 1.0) / 2.0  # [0, 1] alpha
            true = torch.from_numpy(np.ascontiguousarray(y_np.transpose(2, 0, 1)))[None].to(device)
            sums["val_sad"] += float(metrics.sad(pred, true)) / 1000.0
            sums["val_mse"] += float(metrics.mse(pred, true))
            sums["val_grad"] += float(metrics.gradient_error(pred, true)) / 1000.0
            unknown = metrics.unknown_region(metrics.make_trimap(true, width=width))
            sums["val_sad_unknown"] += float(metrics.sad(pred, true, region=unknown)) / 1000.0
            count += 1
            if want_grid and grid is None:
                grid = make_grid([x_np, from_model_range(out[0, -1:]), y_np])
        model.train(was_training)
        return ValResult(sums, count, grid)
