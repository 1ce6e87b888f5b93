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

from platform.data.augment import PairedAugment
from platform.data.grids import downscale, make_grid
from platform.data.io import to_float
from platform.data.paired import CropDataset, to_model_range
from platform.data.samples import resolve_data
from platform.data.segmentation import hierarchical_targets, load_segmentation
from platform.errors import ConfigError
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
class SegmentationTask:
    """Images + index masks; binary (one sigmoid channel) or multiclass (softmax)."""

    kind = "segmentation"
    primary_metric = "val_miou"
    mode = "max"
    hierarchical = False

    def __init__(self, config: dict, seed: int = 0):
        require_rgb_display_images(config, "segmentation")
        self.config = config
        self.seed = seed
        self.folder = resolve_data(config["data"])
        self.classes, items = load_segmentation(self.folder, hierarchical=self.hierarchical,
                                                alpha=option(config, "alpha", "error"))
        self.train_items, self.val_items_ = split_items(items, config)
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
        from platform import losses

        spec = spec or self.default_loss()
        return losses.create(inject_ignore_index(spec, self.ignore_index), allow_unavailable=allow_unavailable)

    def _augment(self) -> PairedAugment:
        return PairedAugment(self.config.get("augment"), target_kind="mask", default_photometric_on="input")

    def train_dataset(self) -> CropDataset:
        aug = self._augment()
        items = with_offline_copies(self.train_items, aug.config["offline_copies"])
        transform = hierarchical_targets(self.classes) if self.hierarchical else None
        return CropDataset(items, crop=int(option(self.config, "crop")), length=int(option(self.config, "crops_per_epoch")),
                           seed=self.seed, augment=aug, target_kind="mask", target_transform=transform,
                           where=self.folder)

    def example_input(self) -> np.ndarray:
        return to_float(self.val_items_[0].input[:64, :64])[None].astype(np.float32)

    def val_items(self):
        max_side = option(self.config, "val_max_side")
        for p in self.val_items_:
            x, y = to_float(p.input), p.target
            if max_side:
                x, y = downscale(x, max_side), downscale(y, max_side)
            yield p.name, x, y

    def _score(self, out, y_t: torch.Tensor, sums: dict[str, float]) -> tuple[bool, np.ndarray]:
        pred = labels_from_logits(out)
        s = confusion_scores(pred, y_t, self.classes.num_classes, self.ignore_index, self.binary)
        if s is None:
            return False, pred[0].cpu().numpy()
        for k, v in s.items():
            sums[f"val_{k}"] += v
        return True, pred[0].cpu().numpy()

    @torch.no_grad()
    def validate(self, model: torch.nn.Module, device: torch.device, precision: str = "fp32",
                 rank: int = 0, world_size: int = 1, want_grid: bool = False, lpips_fn=None) -> ValResult:
        was_training = model.training
        model.eval()
        sums = {name: 0.0 for name in self.metric_names}
        count, grid = 0, None
        for i, (name, x_np, y_np) in enumerate(self.val_items()):
            if i % world_size != rank:
                continue
            x = to_model_range(x_np)[None].to(device)
            y = torch.from_numpy(y_np.astype(np.int64))[None].to(device)
            out = predict_full(model, x, precision, self.config, clamp=False)
            ok, pred = self._score(out, y, sums)
            if not ok:
                log.warning("validation image %s is entirely ignored; it is left out of the metrics", name)
                continue
            count += 1
            if want_grid and grid is None:
                grid = make_grid([x_np, self.classes.colourise(pred), self.classes.colourise(y_np.astype(np.int64))])
        model.train(was_training)
        return ValResult(sums, count, grid)


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

    def __init__(self, config: dict, seed: int = 0):
        super().__init__(config, seed)
        self.metric_names = tuple(f"val_{m}_{lv}" for lv in LEVELS for m in ("miou", "pixel_accuracy"))
        self.level_classes = {"binary": len(self.classes.levels["binary"].names),
                              "coarse": len(self.classes.levels["coarse"].names),
                              "fine": self.classes.num_classes}

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

    @torch.no_grad()
    def validate(self, model: torch.nn.Module, device: torch.device, precision: str = "fp32",
                 rank: int = 0, world_size: int = 1, want_grid: bool = False, lpips_fn=None) -> ValResult:
        was_training = model.training
        model.eval()
        sums = {name: 0.0 for name in self.metric_names}
        count, grid = 0, None
        to_levels = hierarchical_targets(self.classes)
        for i, (name, x_np, y_np) in enumerate(self.val_items()):
            if i % world_size != rank:
                continue
            x = to_model_range(x_np)[None].to(device)
            out = predict_full(model, x, precision, self.config, clamp=False)
            if not isinstance(out, dict) or not set(LEVELS) <= set(out):
                got = sorted(out) if isinstance(out, dict) else type(out).__name__
                raise ConfigError(f"task hierarchical_segmentation needs a network with heads {', '.join(LEVELS)}; "
                                  f"{type(getattr(model, 'module', model)).__name__} returned {got}.")
            targets = to_levels(y_np)
            preds = {}
            skipped = False
            for lv in LEVELS:
                pred = labels_from_logits(out[lv])
                s = confusion_scores(pred, targets[lv][None].to(device), self.level_classes[lv], self.ignore_index,
                                     binary=False)
                if s is None:
                    skipped = True
                    break
                sums[f"val_miou_{lv}"] += s["miou"]
                sums[f"val_pixel_accuracy_{lv}"] += s["pixel_accuracy"]
                preds[lv] = pred[0].cpu().numpy()
            if skipped:
                log.warning("validation image %s is entirely ignored; it is left out of the metrics", name)
                continue
            count += 1
            if want_grid and grid is None:
                grid = make_grid([x_np, self.classes.colourise(preds["fine"]),
                                  self.classes.colourise(y_np.astype(np.int64))])
        model.train(was_training)
        if any(math.isnan(v) for v in sums.values()):
            log.warning("a validation metric is NaN: %s", sums)
        return ValResult(sums, count, grid)
