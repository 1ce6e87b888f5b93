"""Quality floors: classical baselines every search must beat before its model is worth using.

A search result means something only next to what no learning at all would give. Before the
trials start, the driver fits these baselines on the task's *training* items and scores them on
the *validation* items through the task's own ``validate`` (the very code that scores trials,
at the same resolution, with the same metrics), so a trial's score and a floor's score are
comparable number for number:

* image-to-image: ``identity`` (the untouched input), ``poly_color`` (a global cross-channel
  cubic colour polynomial, 13 terms per output channel, least squares) and ``lut3d`` (a global
  3D LUT, 17³ nodes, trilinear, least squares with a second-difference smoothness penalty so
  that colours the training frames never visit are extrapolated linearly);
* segmentation: ``majority`` (the most frequent training class at every pixel; per level for
  the hierarchical task) and ``background`` (class 0 everywhere);
* matting: ``foreground`` (alpha 1 everywhere) and ``color_distance`` (alpha grows with the
  distance to the training frames' background colour, its scale fitted on the training items).

Each floor is a small ``torch.nn.Module`` in the model range, so it runs through validation like
any network (and the ``lut3d`` floor *is* a :class:`platform.models.lut3d.LUT3D`, exportable as
a ``.cube`` file). The fits are closed-form (numpy/scipy least squares): a few seconds.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from platform.data.io import to_float
from platform.models.lut3d import FIT_SIZE, FIT_SMOOTHNESS

log = logging.getLogger(__name__)

MAX_FIT_PIXELS = 400_000  # pixels drawn from the training items for a fit (enough for 13 or 17³x3 unknowns)
# The LUT floor is the least-squares start of the lut3d model: one size and smoothness for both.
LUT_FLOOR_SIZE, LUT_SMOOTHNESS = FIT_SIZE, FIT_SMOOTHNESS


@dataclass
class Floor:
    name: str
    module: nn.Module
    note: str


class _Module(nn.Module):
    """A parameter-free network for validation (one dummy parameter gives it a device and dtype)."""

    size_multiple = 1

    def __init__(self):
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(()), requires_grad=False)


# --------------------------------------------------------------------------- image-to-image
class IdentityFloor(_Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def poly_features(x01: np.ndarray | torch.Tensor):
    """(..., 3) colours in [0, 1] -> (..., 13): 1, r, g, b, r², g², b², rg, rb, gb, r³, g³, b³."""
    lib = torch if isinstance(x01, torch.Tensor) else np
    r, g, b = x01[..., 0], x01[..., 1], x01[..., 2]
    one = lib.ones_like(r)
    return lib.stack([one, r, g, b, r * r, g * g, b * b, r * g, r * b, g * b, r ** 3, g ** 3, b ** 3], -1)


def channel_features(x01):
    """Per-channel cubic (for images that are not RGB): (..., C) -> (..., C, 4)."""
    lib = torch if isinstance(x01, torch.Tensor) else np
    return lib.stack([lib.ones_like(x01), x01, x01 ** 2, x01 ** 3], -1)


class PolyColorFloor(_Module):
    """A global colour polynomial: cross-channel cubic for RGB, per-channel cubic otherwise."""

    def __init__(self, coef: np.ndarray, cross: bool):
        super().__init__()
        self.cross = cross
        self.register_buffer("coef", torch.as_tensor(coef, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x01 = ((x.float() + 1) / 2).permute(0, 2, 3, 1)
        if self.cross:
            y = poly_features(x01) @ self.coef  # (..., 13) @ (13, 3)
        else:
            y = (channel_features(x01) * self.coef).sum(-1)  # coef (C, 4)
        return (y * 2 - 1).permute(0, 3, 1, 2).to(x.dtype)


def fit_poly(x: np.ndarray, y: np.ndarray) -> PolyColorFloor:
    """Least squares (a tiny ridge keeps rarely-seen terms bounded) on (N, C) colour pairs."""
    if x.shape[1] == 3:
        a = poly_features(x.astype(np.float64))
        coef = np.linalg.solve(a.T @ a + 1e-6 * len(a) * np.eye(a.shape[1]), a.T @ y)
        return PolyColorFloor(coef, cross=True)
    coef = np.stack([np.linalg.lstsq(channel_features(x[:, c].astype(np.float64)), y[:, c], rcond=None)[0]
                     for c in range(x.shape[1])])
    return PolyColorFloor(coef, cross=False)


def fit_lut(x: np.ndarray, y: np.ndarray, size: int = LUT_FLOOR_SIZE) -> nn.Module:
    """The least-squares 3D LUT of colour pairs (N, 3), as a pure-LUT :class:`LUT3D` model."""
    from platform.models.lut3d import LUT3D, least_squares_nodes

    model = LUT3D(lut_size=size)
    with torch.no_grad():
        table = torch.as_tensor(least_squares_nodes(x, y, size, LUT_SMOOTHNESS) * 2 - 1, dtype=torch.float32)
        model.offset[:3] = table.reshape(3, size, size, size) - model.identity
    return model.eval()


def training_colours(pairs, seed: int = 0, max_pixels: int = MAX_FIT_PIXELS) -> tuple[np.ndarray, np.ndarray]:
    """(N, C) input and target colours in [0, 1], drawn evenly from the training pairs."""
    rng = np.random.default_rng(seed)
    per_item = max(1, max_pixels // max(1, len(pairs)))
    xs, ys = [], []
    for p in pairs:
        x, y = to_float(p.input), to_float(p.target)
        x, y = x.reshape(-1, x.shape[-1]), y.reshape(-1, y.shape[-1])
        idx = rng.choice(len(x), size=min(per_item, len(x)), replace=False)
        xs.append(x[idx]), ys.append(y[idx])
    return np.concatenate(xs).astype(np.float64), np.concatenate(ys).astype(np.float64)


def image_floors(task) -> list[Floor]:
    x, y = training_colours(task.train_pairs, seed=task.seed)
    floors = [Floor("identity", IdentityFloor(), "the untouched input"),
              Floor("poly_color", fit_poly(x, y), "global colour polynomial (least squares)")]
    if x.shape[1] == 3:
        floors.append(Floor("lut3d", fit_lut(x, y), f"global 3D LUT {LUT_FLOOR_SIZE}³ (least squares)"))
    return floors


# --------------------------------------------------------------------------- segmentation
class ConstantLabels(_Module):
    """Logits that give the same class at every pixel (one class per head for hierarchical nets)."""

    def __init__(self, classes: dict[str, tuple[int, int]]):
        super().__init__()
        self.classes = classes  # head -> (label, channels); head "out" for a plain network

    def _logits(self, x: torch.Tensor, label: int, channels: int) -> torch.Tensor:
        n, _, h, w = x.shape
        if channels == 1:  # binary: one sigmoid channel
            return torch.full((n, 1, h, w), 10.0 if label == 1 else -10.0, device=x.device)
        out = torch.full((n, channels, h, w), -10.0, device=x.device)
        out[:, label] = 10.0
        return out

    def forward(self, x: torch.Tensor):
        heads = {k: self._logits(x, *v) for k, v in self.classes.items()}
        return heads["out"] if list(heads) == ["out"] else heads


def class_counts(masks, num_classes: int, ignore_index: int | None) -> np.ndarray:
    counts = np.zeros(num_classes, dtype=np.int64)
    for m in masks:
        m = np.asarray(m).astype(np.int64).ravel()
        m = m[(m >= 0) & (m < num_classes)] if ignore_index is None else m[(m != ignore_index) & (m < num_classes)]
        counts += np.bincount(m, minlength=num_classes)
    return counts


def segmentation_floors(task) -> list[Floor]:
    masks = [p.target for p in task.train_items]
    if getattr(task, "hierarchical", False):
        from platform.data.segmentation import hierarchical_targets

        to_levels = hierarchical_targets(task.classes)
        levels = [to_levels(m) for m in masks]
        heads = {lv: (int(np.argmax(class_counts([t[lv].numpy() for t in levels], n, task.ignore_index))), n)
                 for lv, n in task.level_classes.items()}
        background = {lv: (0, n) for lv, n in task.level_classes.items()}
    else:
        n = task.classes.num_classes
        channels = 1 if task.binary else n
        heads = {"out": (int(np.argmax(class_counts(masks, n, task.ignore_index))), channels)}
        background = {"out": (0, channels)}
    return [Floor("majority", ConstantLabels(heads), "the most frequent training class everywhere"),
            Floor("background", ConstantLabels(background), "class 0 everywhere")]


# --------------------------------------------------------------------------- matting
class ForegroundFloor(_Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ones_like(x[:, :1])


class ColorDistanceFloor(_Module):
    """alpha = clip(|x - background| / scale, 0, 1): a colour key against one background colour."""

    def __init__(self, background: np.ndarray, scale: float):
        super().__init__()
        self.register_buffer("background", torch.as_tensor(background, dtype=torch.float32).view(1, 3, 1, 1))
        self.scale = float(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = ((x.float() + 1) / 2 - self.background).norm(dim=1, keepdim=True)
        return (d / self.scale).clamp(0, 1) * 2 - 1


def fit_color_distance(x: np.ndarray, alpha: np.ndarray) -> ColorDistanceFloor:
    """The background colour (median of clearly-background pixels) and the scale of least L1 error."""
    bg_pixels = x[alpha < 0.05]
    background = np.median(bg_pixels, axis=0) if len(bg_pixels) else np.zeros(3)
    d = np.linalg.norm(x - background, axis=1)
    scales = np.geomspace(0.02, 1.75, 48)
    errors = [np.abs(np.clip(d / s, 0, 1) - alpha).mean() for s in scales]
    return ColorDistanceFloor(background, float(scales[int(np.argmin(errors))]))


def matting_floors(task) -> list[Floor]:
    x, a = training_colours(task.train_items, seed=task.seed)
    return [Floor("foreground", ForegroundFloor(), "alpha 1 everywhere"),
            Floor("color_distance", fit_color_distance(x[:, :3], a[:, 0]),
                  "alpha from the distance to the background colour")]


# --------------------------------------------------------------------------- scoring
def fit_floors(task) -> list[Floor]:
    """The task's floors (:meth:`platform.tasks.Task.floors`), fitted on its training items."""
    found = task.floors()
    if not found:
        log.warning("no quality floors are defined for task %s", type(task).__name__)
    return found


def score(task, module: nn.Module) -> dict[str, float]:
    """Every validation metric of ``module`` through the task's own validation (CPU, fp32)."""
    result = task.validate(module.eval(), torch.device("cpu"), "fp32")
    return {k: v / max(1, result.count) for k, v in result.sums.items()}


def floor_scores(tasks: list) -> dict[str, dict[str, float]]:
    """{floor: {metric: value}}: each floor fitted and scored per task (one per fold or seed of a
    repeated search), then averaged over them, as the trials' metrics are."""
    per_task = [{f.name: score(t, f.module) for f in fit_floors(t)} for t in tasks]
    out: dict[str, dict[str, float]] = {}
    for name in per_task[0] if per_task else []:
        metrics = per_task[0][name]
        out[name] = {m: float(np.mean([s[name][m] for s in per_task])) for m in metrics}
    return out


def best_floor(floors: dict[str, dict[str, float]], metric: str, mode: str) -> tuple[str, float] | None:
    """(name, value) of the strongest floor on ``metric`` (non-finite values ignored)."""
    values = [(n, s[metric]) for n, s in floors.items() if metric in s and math.isfinite(s[metric])]
    if not values:
        return None
    return max(values, key=lambda v: v[1]) if mode == "max" else min(values, key=lambda v: v[1])
