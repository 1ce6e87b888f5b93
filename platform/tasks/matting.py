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

from platform.data.paired import from_model_range
from platform.data.samples import resolve_data
from platform.data.segmentation import load_mattes
from platform.tasks.base import Task, option, require_rgb_display_images, split_items
from platform.tasks.registry import register_task

log = logging.getLogger(__name__)


@register_task("matting", kind="matting", metric="val_sad", mode="min")
class MattingTask(Task):
    kind = "matting"
    primary_metric = "val_sad"
    mode = "min"
    metric_names = ("val_sad", "val_mse", "val_grad", "val_sad_unknown")
    augment_target = "alpha"

    def load(self) -> None:
        require_rgb_display_images(self.config, "matting")
        self.folder = resolve_data(self.config["data"])
        items = load_mattes(self.folder)
        self.train_items, self.val_items_ = split_items(items, self.config)

    def model_kwargs(self) -> dict:
        return {"in_channels": 3, "out_channels": 1}

    def default_loss(self) -> dict:
        return {"l1": 1.0, "laplacian": 0.5}

    def floors(self) -> list:
        from platform.floors import matting_floors

        return matting_floors(self)

    def score(self, out, x_np, y_np, device, lpips_fn=None) -> dict:
        from platform import metrics

        width = int(option(self.config, "trimap_width", 10) or 10)
        pred = (out[:, -1:] + 1.0) / 2.0  # [0, 1] alpha
        true = torch.from_numpy(np.ascontiguousarray(y_np.transpose(2, 0, 1)))[None].to(device)
        unknown = metrics.unknown_region(metrics.make_trimap(true, width=width))
        return {"val_sad": float(metrics.sad(pred, true)) / 1000.0,
                "val_mse": float(metrics.mse(pred, true)),
                "val_grad": float(metrics.gradient_error(pred, true)) / 1000.0,
                "val_sad_unknown": float(metrics.sad(pred, true, region=unknown)) / 1000.0}

    def preview(self, x_np, out, y_np):
        return [x_np, from_model_range(out[0, -1:]), y_np]
