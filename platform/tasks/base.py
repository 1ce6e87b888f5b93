"""The :class:`Task` base class (the one place to extend), and pieces shared by the tasks:
validation results, whole-frame prediction, splits.

Preview grids (``make_grid``, ``downscale``) live in the data layer, :mod:`platform.data.grids`.
"""

from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from platform.data.augment import apply_dihedral, concrete, offline_ops
from platform.data.grids import downscale, make_grid
from platform.data.io import to_float
from platform.data.paired import Pair, to_model_range
from platform.data.splits import split_from_config
from platform.tasks.outputs import OutputKind, output_kind_named

log = logging.getLogger(__name__)


@dataclass
class ValResult:
    sums: dict[str, float]
    count: int
    grid: np.ndarray | None  # uint8 HxWx3 (input | output | target) of the first item, or None


def option(config: dict, key: str, default: Any = None) -> Any:
    """``config[key]`` as a plain value (an unresolved ``{choice: ...}`` gives its first option)."""
    return concrete(config.get(key, default))


def split_items(items: list[Pair], config: dict) -> tuple[list[Pair], list[Pair]]:
    """Train/validation items by the ``task`` config's split keys (see :mod:`platform.data.splits`)."""
    cfg = {k: option(config, k) for k in ("val_holdout", "val_fraction", "folds", "fold", "split_seed") if k in config}
    if "val_holdout" in config:
        cfg["val_holdout"] = config["val_holdout"]  # a list of names stays a list
    train_names, val_names = split_from_config([p.name for p in items], cfg)
    by_name = {p.name: p for p in items}
    train, val = [by_name[n] for n in train_names], [by_name[n] for n in val_names]
    if not val:
        log.warning("no validation items held out: validating on the training items")
        val = train
    return train, val


def with_offline_copies(items: list[Pair], copies: int) -> list[Pair]:
    """Offline data multiplier: each item plus ``copies`` exact flips/rotations of it (3 = +hflip, +vflip, +rot90).

    Applied to the *training* items only, after the split, so a copy of a validation frame can
    never leak into training.
    """
    ops = offline_ops(copies)
    out = list(items)
    for op in ops:
        out.extend(Pair(f"{p.name}~{op}", apply_dihedral(p.input, op), apply_dihedral(p.target, op)) for p in items)
    return out


def predict_full(model: torch.nn.Module, x: torch.Tensor, precision: str, config: dict, clamp: bool = True):
    """Whole-frame prediction at native resolution, tiled when the frame is large.

    Uses :func:`platform.inference.tiled_predict` when it exists (``task.val_tile`` /
    ``task.val_tile_overlap``; tile ``None`` lets it size tiles from free memory), else
    :func:`platform.inference.predict_image`. ``clamp=False`` keeps logits unclamped.
    """
    from platform import inference

    tiled = getattr(inference, "tiled_predict", None)
    tile, overlap = option(config, "val_tile"), option(config, "val_tile_overlap")
    with torch.inference_mode():
        params = inspect.signature(tiled).parameters if tiled is not None else {}
        if tiled is not None and (clamp or "clamp" in params):
            kwargs: dict[str, Any] = {"tile": tile, "precision": precision}
            if overlap is not None:
                kwargs["overlap"] = overlap
            if "clamp" in params:
                kwargs["clamp"] = clamp
            return tiled(model, x, **kwargs)
        if clamp:
            return inference.predict_image(model, x, precision)
        with inference.autocast_for(x.device, precision):
            y = inference.pad_forward(model, x)
        return {k: v.float() for k, v in y.items()} if isinstance(y, dict) else y.float()


def require_rgb_display_images(config: dict, task: str) -> None:
    """Segmentation and matting networks take 3-channel display-referred images: say so when the
    space asks for what only the image-to-image task does (a transfer function, RGBA inputs)."""
    from platform.errors import ConfigError

    transfer = config.get("transfer", "identity")
    name = transfer.get("name") if isinstance(transfer, dict) else transfer
    if name not in (None, "identity"):
        raise ConfigError(f"task.transfer is {name!r}, but the {task} task reads images as display-referred [0, 1] "
                          "values; only img2img applies a transfer function. Convert linear EXR/TIFF inputs to a "
                          "display encoding first, or remove task.transfer.")
    if config.get("alpha") == "keep":
        raise ConfigError(f"task.alpha is keep, but {task} networks take 3-channel images; use drop or composite "
                          "(or error, the default, to be told about every image with an alpha channel).")


class Validation:
    """One validation pass in progress: metric sums, the number of items scored, the preview grid."""

    def __init__(self, task: Task, model: torch.nn.Module, device: torch.device, precision: str,
                 want_grid: bool, lpips_fn=None):
        self.task, self.model, self.device, self.precision = task, model, device, precision
        self.want_grid, self.lpips_fn = want_grid, lpips_fn
        self.sums = dict.fromkeys(task.metric_names, 0.0)
        if lpips_fn is not None:
            self.sums["val_lpips"] = 0.0
        self.count, self.grid = 0, None

    def item(self, name: str, x_np: np.ndarray, y_np: np.ndarray):
        """Run the network on one whole frame and add its scores; the raw output, or None when the
        task left the item out (e.g. a mask whose every pixel is ignored)."""
        x = to_model_range(x_np)[None].to(self.device)
        out = predict_full(self.model, x, self.precision, self.task.config, clamp=self.task.output_kind_class().clamp)
        scores = self.task.score(out, x_np, y_np, self.device, lpips_fn=self.lpips_fn)
        if scores is None:
            log.warning("validation image %s is entirely ignored; it is left out of the metrics", name)
            return None
        for key, value in scores.items():
            self.sums[key] = self.sums.get(key, 0.0) + float(value)
        self.count += 1
        if self.want_grid and self.grid is None:
            self.grid = make_grid(self.task.preview(x_np, out, y_np))
        return out

    def result(self) -> ValResult:
        return ValResult(self.sums, self.count, self.grid)


class Task:
    """A task: its data set, default loss, validation metrics and output kind.

    Subclasses register with :func:`platform.tasks.register_task` and provide:

    * ``kind`` (the output kind's name, :mod:`platform.tasks.outputs`), ``primary_metric``,
      ``mode`` and ``metric_names``; ``output_range`` when the network's output is not [-1, 1];
    * ``load()`` (read the data: set ``train_items`` and ``val_items_``), ``model_kwargs()``,
      ``default_loss()`` and ``score(out, x_np, y_np, device, lpips_fn)`` (one validation
      item's metrics, or None to leave the item out); optionally ``preview`` (the panels of the
      logged validation grid), ``train_dataset`` (default: random crops of the training items,
      augmented as ``augment_target`` says), ``create_loss`` and ``check_sequences``.

    :meth:`validate` is written once here: every worker scores its share of the held-out items
    at native resolution and returns sums and a count for the trainer to reduce.
    """

    kind = "img2img"
    primary_metric = "val_psnr"
    mode = "max"
    metric_names: tuple[str, ...] = ()
    output_range = (-1.0, 1.0)
    augment_target = "image"  # how augmentation treats targets: image, mask or alpha
    photometric_on = "input"  # colour jitter on the input only, or on both ("both")

    def __init__(self, config: dict, seed: int = 0):
        self.config = config
        self.seed = seed
        self.folder = None  # the data folder, when the task reads one
        self.train_items: list[Pair] = []
        self.val_items_: list[Pair] = []
        self.load()

    # -- data
    def load(self) -> None:
        raise NotImplementedError

    def train_dataset(self):
        from platform.data.augment import PairedAugment
        from platform.data.paired import CropDataset

        aug = PairedAugment(self.config.get("augment"), target_kind=self.augment_target,
                            default_photometric_on=self.photometric_on)
        items = with_offline_copies(self.train_items, aug.config["offline_copies"])
        return CropDataset(items, crop=int(option(self.config, "crop")), length=int(option(self.config, "crops_per_epoch")),
                           seed=self.seed, augment=aug, target_kind=self.augment_target,
                           target_transform=self.target_transform(), where=self.data_where())

    def target_transform(self):
        """A function applied to each training target crop (e.g. masks to one mask per level), or None."""
        return

    def data_where(self):
        """Where the training images come from, for error messages."""
        return self.folder

    @property
    def train_pairs(self) -> list[Pair]:
        """The training items (the name image tasks and the floors use)."""
        return self.train_items

    @train_pairs.setter
    def train_pairs(self, pairs: list[Pair]) -> None:
        self.train_items = pairs

    @property
    def val_pairs(self) -> list[Pair]:
        return self.val_items_

    def val_items(self):
        """(name, input, target) of the held-out items, float inputs in [0, 1] (``val_max_side`` applied)."""
        max_side = option(self.config, "val_max_side")
        for p in self.val_items_:
            x, y = to_float(p.input), self.val_target(p.target)
            if max_side:
                x, y = downscale(x, max_side), downscale(y, max_side)
            yield p.name, x, y

    def val_target(self, target: np.ndarray) -> np.ndarray:
        return to_float(target)

    def example_input(self) -> np.ndarray:
        """A small real input (1 x 64 x 64 x C float32 in [0, 1]) for model signatures."""
        return to_float(self.val_items_[0].input[:64, :64])[None].astype(np.float32)

    def check_sequences(self) -> None:
        """Fail early (in the driver, before any trial) on unreadable validation sequences; none by default."""

    # -- model and loss
    def model_kwargs(self) -> dict:
        raise NotImplementedError

    def default_loss(self) -> dict:
        return {"l1": 1.0}

    def create_loss(self, spec: dict | None = None, allow_unavailable: bool = True):
        """The training criterion: ``spec`` (the search space's ``loss``) or the task's default."""
        from platform import losses

        return losses.create(spec or self.default_loss(), allow_unavailable=allow_unavailable)

    # -- output kind
    @classmethod
    def output_kind_class(cls) -> type[OutputKind]:
        from platform.tasks.outputs import OUTPUT_KINDS

        return OUTPUT_KINDS.get(cls.kind)

    @classmethod
    def output_kind(cls, config: dict | None = None) -> OutputKind:
        """The output kind object for a trial ``config`` (what predict, pyfunc and export ask)."""
        return output_kind_named(cls.kind, config, cls.output_range)

    def floors(self) -> list:
        """The trivial baselines a champion must beat (:mod:`platform.floors`), fitted on the
        training items; none by default."""
        return []

    # -- validation
    def score(self, out, x_np: np.ndarray, y_np: np.ndarray, device: torch.device, lpips_fn=None) -> dict | None:
        """The metrics of one validation item (raw network output ``out``), or None to leave it out."""
        raise NotImplementedError

    def preview(self, x_np: np.ndarray, out, y_np: np.ndarray) -> list[np.ndarray]:
        """The panels (input | output | target) of the logged validation grid."""
        from platform.data.paired import from_model_range

        return [x_np, from_model_range(out[0]), y_np]

    def validate_extra(self, run: Validation) -> None:
        """Validation beyond the held-out items, on rank 0 (e.g. video sequences); nothing by default."""

    @torch.no_grad()
    def validate(self, model: torch.nn.Module, device: torch.device, precision: str = "fp32",
                 rank: int = 0, world_size: int = 1, want_grid: bool = False, lpips_fn=None) -> ValResult:
        """Whole-frame validation of this worker's share (round robin) of the held-out items.

        Returns metric *sums* and a count so that the caller can reduce across workers."""
        was_training = model.training
        model.eval()
        run = Validation(self, model, device, precision, want_grid, lpips_fn)
        try:
            for i, (name, x_np, y_np) in enumerate(self.val_items()):
                if i % world_size == rank:
                    run.item(name, x_np, y_np)
            if rank == 0:
                self.validate_extra(run)
        finally:
            model.train(was_training)
        return run.result()
