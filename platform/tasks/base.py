"""Pieces shared by the tasks: validation results, whole-frame prediction, splits.

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
from platform.data.paired import Pair
from platform.data.splits import split_from_config

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
