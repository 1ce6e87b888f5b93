"""Helpers shared by the metric modules: input checks, fp32 math and reductions."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch

REDUCTIONS = ("mean", "none")


@contextlib.contextmanager
def fp32_math(device: torch.device | str) -> Iterator[None]:
    """Turn autocast off for the enclosed code.

    Metrics and the image losses compare small differences of local
    statistics (SSIM variances, FFT amplitudes); in bfloat16 those lose most of their
    digits, so they always run in float32 even when the caller is inside
    ``torch.autocast``.
    """
    device_type = torch.device(device).type
    with torch.autocast(device_type=device_type, enabled=False):
        yield


def as_float(x: torch.Tensor) -> torch.Tensor:
    """float32 copy (or view) of ``x``; float64 is kept as is."""
    if x.dtype == torch.float64:
        return x
    return x.float()


def check_pair(pred: torch.Tensor, target: torch.Tensor, name: str, ndim: int = 4) -> None:
    """Raise ValueError unless ``pred`` and ``target`` are same-shape ``ndim``-d tensors."""
    if not isinstance(pred, torch.Tensor) or not isinstance(target, torch.Tensor):
        raise TypeError(f"{name}: pred and target must be torch tensors, got {type(pred).__name__} "
                        f"and {type(target).__name__}")
    if pred.shape != target.shape:
        raise ValueError(f"{name}: pred and target must have the same shape, got {tuple(pred.shape)} "
                         f"and {tuple(target.shape)}")
    if ndim and pred.ndim != ndim:
        layout = {4: "(B, C, H, W)", 5: "(B, T, C, H, W)"}.get(ndim, f"{ndim}-d")
        raise ValueError(f"{name}: expected {layout} tensors, got shape {tuple(pred.shape)}")


def check_data_range(data_range: float, name: str) -> float:
    try:
        value = float(data_range)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: data_range must be a positive number, got {data_range!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name}: data_range must be a positive number, got {data_range!r}")
    return value


def reduce(values: torch.Tensor, reduction: str, name: str, *, skip_nan: bool = False) -> torch.Tensor:
    """Apply ``reduction`` over the batch dimension (dim 0) of per-image ``values``.

    ``"none"`` returns the per-image values; ``"mean"`` their mean (NaN entries, i.e.
    images where the metric is undefined, are skipped when ``skip_nan``).
    """
    if reduction == "none":
        return values
    if reduction == "mean":
        return torch.nanmean(values, dim=0) if skip_nan else values.mean(dim=0)  # all-NaN: NaN
    raise ValueError(f"{name}: reduction must be one of {REDUCTIONS}, got {reduction!r}")
