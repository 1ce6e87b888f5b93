"""Segmentation tasks: binary / multiclass masks, and hierarchical (binary, coarse, fine heads).

Data: a folder with images and index masks plus a ``data.yaml`` (see
:mod:`platform.data.segmentation`). Networks output logits at the input's size: one channel
for a binary task (sigmoid), ``K`` channels for ``K`` classes (softmax); a hierarchical
network returns ``{"binary": (B,2,H,W), "coarse": (B,Kc,H,W), "fine": (B,Kf,H,W)}``.

Losses: every segmentation loss component gets the data's ``ignore_index`` unless the search
space sets one (:meth:`SegmentationTask.create_loss`); the hierarchical task combines one
loss per level with ``task.level_weights`` (default 0.2 / 0.3 / 0.5, searchable).

Metrics (mean over validation images, each from the image's confusion matrix, ignored pixels
left out): ``val_miou`` (macro over classes present in target or prediction), ``val_mdice``,
``val_pixel_accuracy``; binary tasks add the foreground ``val_iou``, ``val_dice``,
``val_precision``, ``val_recall``; hierarchical tasks report ``val_miou_<level>`` for each
level (primary: ``val_miou_fine``).
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
import torch

from platform.data.samples import resolve_data
from platform.data.segmentation import hierarchical_targets, load_segmentation
from platform.errors import ConfigError
from platform.tasks.base import Task, option, require_rgb_display_images, split_items
from platform.tasks.registry import register_task

log = logging.getLogger(__name__)

LEVELS = ("binary", "coarse", "fine")


def labels_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) logits -> (B, H, W) int64 labels: sigmoid > 0.5 for one channel, else argmax."""
    if logits.shape[1] == 1:
        return (logits[:, 0] > 0).long()
    return logits.argmax(dim=1)


def confusion_scores(pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int | None,
                     binary: bool) -> dict[str, float] | None:
    """Per-image scores from one confusion matrix (None when every pixel is ignored)."""
    from platform.metrics import confusion_matrix, metric_from_confusion

    cm = confusion_matrix(pred, target, num_classes, ignore_index=ignore_index)[0]
    if int(cm.sum()) == 0:
        return None
    out = {
        "miou": float(metric_from_confusion(cm, "iou", average="macro")),
        "mdice": float(metric_from_confusion(cm, "dice", average="macro")),
        "pixel_accuracy": float(metric_from_confusion(cm, "pixel_accuracy")),
    }
    if binary:
        # Foreground scores; an image with no foreground in target and prediction scores 1 (a
        # perfect "nothing here"), not NaN, so that every image counts once.
        for name in ("iou", "dice", "precision", "recall"):
            out[name] = float(metric_from_confusion(cm, name, average="binary", zero_division=1.0))
    return out


def inject_ignore_index(spec: dict, ignore_index: int | None) -> dict:
    """Give every segmentation loss component the data's ignore index unless it has one."""
    from platform.losses import LOSSES

    out: dict[str, Any] = {}
    for label, value in spec.items():
        opts = dict(value) if isinstance(value, dict) else {"weight": value}
        type_name = opts.get("type", label)
        is_seg = type_name in LOSSES and LOSSES.meta(type_name).get("kind") == "segmentation"
        if is_seg and ignore_index is not None and "ignore_index" not in opts and opts.get("input", "identity") == "identity":
            opts["ignore_index"] = ignore_index
        out[label] = opts if (isinstance(value, dict) or "ignore_index" in opts) else value
    return out


@register_task("segmentation", kind="segmentation", metric="val_miou", mode="max")
class SegmentationTask(Task):
    """Images + index masks; binary (one sigmoid channel) or multiclass (softmax)."""

    kind = "segmentation"
    primary_metric = "val_miou"
    mode = "max"
    hierarchical = False
    augment_target = "mask"

    def load(self) -> None:
        require_rgb_display_images(self.config, "segmentation")
        self.folder = resolve_data(self.config["data"])
        self.classes, items = load_segmentation(self.folder, hierarchical=self.hierarchical,
                                                alpha=option(self.config, "alpha", "error"))
        self.train_items, self.val_items_ = split_items(items, self.config)
        self.binary = self.classes.num_classes == 2 and not self.hierarchical
        base = ("val_miou", "val_mdice", "val_pixel_accuracy")
        self.metric_names = base + (("val_iou", "val_dice", "val_precision", "val_recall") if self.binary else ())

    @property
    def ignore_index(self) -> int | None:
        return self.classes.ignore_index

    def model_kwargs(self) -> dict:
        return {"in_channels": 3, "classes": 1 if self.binary else self.classes.num_classes}

    def default_loss(self) -> dict:
        ii = self.ignore_index
        first = "bce" if self.binary else "ce"
        return {first: {"weight": 1.0, "ignore_index": ii}, "dice": {"weight": 1.0, "ignore_index": ii}}

    def create_loss(self, spec: dict | None = None, allow_unavailable: bool = True):
        """The training criterion: ``spec`` (the search space's ``loss``) or the default, with the
        data's ignore index added to every segmentation component that does not set one."""
        return super().create_loss(inject_ignore_index(spec or self.default_loss(), self.ignore_index),
                                   allow_unavailable)

    def floors(self) -> list:
        from platform.floors import segmentation_floors

        return segmentation_floors(self)

    def val_target(self, target: np.ndarray) -> np.ndarray:
        return target  # class indices, not intensities

    def score(self, out, x_np, y_np, device, lpips_fn=None) -> dict | None:
        y = torch.from_numpy(y_np.astype(np.int64))[None].to(device)
        s = confusion_scores(labels_from_logits(out), y, self.classes.num_classes, self.ignore_index, self.binary)
        return None if s is None else {f"val_{k}": v for k, v in s.items()}

    def preview(self, x_np, out, y_np):
        pred = labels_from_logits(out)[0].cpu().numpy()
        return [x_np, self.classes.colourise(pred), self.classes.colourise(y_np.astype(np.int64))]


@register_task("hierarchical_segmentation", kind="hierarchical", metric="val_miou_fine", mode="max")
class HierarchicalSegmentationTask(SegmentationTask):
    """One network, three heads (binary, coarse, fine), one loss per level.

    Fine labels come from the masks; coarse and binary labels from the data YAML's class map
    (``hierarchy``). The target of a training crop is ``{"binary", "coarse", "fine"}``.
    ``task.level_weights`` (default 0.2 / 0.3 / 0.5) weigh the levels' losses.
    """

    kind = "hierarchical"
    primary_metric = "val_miou_fine"
    hierarchical = True

    def load(self) -> None:
        super().load()
        self.metric_names = tuple(f"val_{m}_{lv}" for lv in LEVELS for m in ("miou", "pixel_accuracy"))
        self.level_classes = {"binary": len(self.classes.levels["binary"].names),
                              "coarse": len(self.classes.levels["coarse"].names),
                              "fine": self.classes.num_classes}

    def target_transform(self):
        return hierarchical_targets(self.classes)

    def head_channels(self) -> dict[str, int]:
        """Output channels per head (softmax over each level's classes; the binary head is (B, 2, H, W) too,
        so one loss spec, e.g. ce + dice, serves every level)."""
        return dict(self.level_classes)

    def model_kwargs(self) -> dict:
        """The ``hierarchical_upernet`` factory's keywords: fine ``classes`` plus the other heads' counts."""
        heads = self.head_channels()
        return {"in_channels": 3, "classes": heads["fine"], "coarse_classes": heads["coarse"],
                "binary_classes": heads["binary"]}

    def level_weights(self) -> dict[str, float]:
        given = self.config.get("level_weights") or {}
        unknown = sorted(set(given) - set(LEVELS))
        if unknown:
            raise ConfigError(f"`task.level_weights` has unknown level(s) {', '.join(unknown)}; levels: "
                              f"{', '.join(LEVELS)}.")
        from platform.losses import DEFAULT_LEVEL_WEIGHTS

        return {lv: float(option(given, lv, DEFAULT_LEVEL_WEIGHTS[lv])) for lv in LEVELS}

    def default_loss(self) -> dict:
        return {"dice": {"weight": 1.0, "ignore_index": self.ignore_index}}

    def create_loss(self, spec: dict | None = None, allow_unavailable: bool = True):
        """The hierarchical loss: the same components at every level, weighed per level."""
        from platform import losses

        spec = inject_ignore_index(spec or self.default_loss(), self.ignore_index)
        return losses.create_hierarchical(self.level_weights(), base=spec, allow_unavailable=allow_unavailable)

    def _check_heads(self, out) -> None:
        if not isinstance(out, dict) or not set(LEVELS) <= set(out):
            got = sorted(out) if isinstance(out, dict) else type(out).__name__
            raise ConfigError(f"task hierarchical_segmentation needs a network with heads {', '.join(LEVELS)}; "
                              f"the network returned {got}.")

    def score(self, out, x_np, y_np, device, lpips_fn=None) -> dict | None:
        """mIoU and pixel accuracy per level; None (item left out) when a level has every pixel ignored."""
        self._check_heads(out)
        targets = hierarchical_targets(self.classes)(y_np)
        scores = {}
        for lv in LEVELS:
            s = confusion_scores(labels_from_logits(out[lv]), targets[lv][None].to(device), self.level_classes[lv],
                                 self.ignore_index, binary=False)
            if s is None:
                return None
            scores[f"val_miou_{lv}"], scores[f"val_pixel_accuracy_{lv}"] = s["miou"], s["pixel_accuracy"]
        if any(math.isnan(v) for v in scores.values()):
            log.warning("a validation metric is NaN: %s", scores)
        return scores

    def preview(self, x_np, out, y_np):
        pred = labels_from_logits(out["fine"])[0].cpu().numpy()
        return [x_np, self.classes.colourise(pred), self.classes.colourise(y_np.astype(np.int64))]
