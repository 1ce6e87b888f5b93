"""Alpha-matte metrics: SAD, gradient error, trimaps and unknown-band accuracy.

Alphas are float tensors ``(B, 1, H, W)`` (or ``(B, H, W)``) in ``[0, data_range]``;
they are divided by ``data_range`` first, so numbers are on the [0, 1] alpha scale
whatever the storage (pass ``data_range=255`` for 8-bit mattes). MSE for mattes is
:func:`platform.metrics.image.mse` with ``region=unknown_region(trimap)``.

Trimaps: 0 = background, the maximum value (1.0 for float tensors, 255 for integer
tensors) = foreground, anything strictly in between (0.5 / 128) = unknown.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

from platform.metrics._common import as_float, check_data_range, fp32_math, reduce
from platform.metrics.image import expand_region


def _as_alpha(x: torch.Tensor, name: str) -> torch.Tensor:
    if x.ndim == 3:
        x = x.unsqueeze(1)
    if x.ndim != 4:
        raise ValueError(f"{name}: expected alpha mattes of shape (B, 1, H, W) or (B, H, W), got {tuple(x.shape)}")
    return x


def _pair(pred: torch.Tensor, target: torch.Tensor, data_range: float, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    pred, target = _as_alpha(pred, name), _as_alpha(target, name)
    if pred.shape != target.shape:
        raise ValueError(f"{name}: pred and target must have the same shape, got {tuple(pred.shape)} and "
                         f"{tuple(target.shape)}")
    data_range = check_data_range(data_range, name)
    return as_float(pred) / data_range, as_float(target) / data_range


def unknown_region(trimap: torch.Tensor) -> torch.Tensor:
    """Bool mask of the trimap's unknown pixels (values strictly between background and foreground)."""
    fg = 1.0 if trimap.is_floating_point() else 255
    return (trimap > 0) & (trimap < fg)


def make_trimap(mask: torch.Tensor, *, width: int = 10, threshold: float = 0.5) -> torch.Tensor:
    """Trimap (0 / 0.5 / 1 floats, shape ``(B, 1, H, W)``) from a mask or alpha matte.

    Foreground = pixels whose whole ``(2*width+1)``-square neighbourhood is foreground
    (erosion), background = idem for background (the complement of a dilation); the
    band in between, plus any fractional alpha (0 < a < 1), is unknown. Uses max-pooling
    as the morphological operator (square structuring element).
    """
    m = _as_alpha(mask, "make_trimap")
    if int(width) != width or width < 0:
        raise ValueError(f"make_trimap: width must be a non-negative integer, got {width!r}")
    m = as_float(m)
    fg = (m >= threshold).float()
    k = 2 * int(width) + 1
    dilated = F.max_pool2d(fg, k, stride=1, padding=int(width)) if width else fg
    eroded = -F.max_pool2d(-fg, k, stride=1, padding=int(width)) if width else fg
    trimap = torch.full_like(fg, 0.5)
    trimap[dilated == 0] = 0.0
    trimap[eroded == 1] = 1.0
    fractional = (m > 0) & (m < 1) if mask.is_floating_point() and float(m.max()) <= 1 else torch.zeros_like(fg, dtype=torch.bool)
    trimap[fractional] = 0.5
    return trimap


def sad(
    pred: torch.Tensor,
    target: torch.Tensor,
    *,
    data_range: float = 1.0,
    region: torch.Tensor | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """Sum of absolute differences per image, ``sum |a_pred - a_true|`` on the [0, 1] alpha scale.

    Over all pixels, or over ``region`` (e.g. ``unknown_region(trimap)``). The
    Composition-1k benchmark reports this divided by 1000.
    """
    p, t = _pair(pred, target, data_range, "sad")
    with fp32_math(p.device):
        err = (p - t).abs()
        if region is not None:
            err = err * expand_region(region, err, "sad")
        values = err.flatten(1).sum(dim=1)
    return reduce(values, reduction, "sad")


def _gauss(x: torch.Tensor, sigma: float) -> torch.Tensor:
    return torch.exp(-(x**2) / (2 * sigma**2)) / (sigma * math.sqrt(2 * math.pi))


@functools.lru_cache(maxsize=8)
def _gaussian_derivative_kernels(sigma: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``gaussgradient`` filters of the Composition-1k / DIM evaluation code (epsilon 1e-2)."""
    half = math.ceil(sigma * math.sqrt(-2 * math.log(math.sqrt(2 * math.pi) * sigma * 1e-2)))
    u = torch.arange(-half, half + 1, dtype=torch.float64)
    rows, cols = torch.meshgrid(u, u, indexing="ij")
    hx = _gauss(rows, sigma) * (-cols * _gauss(cols, sigma) / sigma**2)
    hx = hx / hx.pow(2).sum().sqrt()
    return hx.float(), hx.t().contiguous().float()


def _gradient_magnitude(x: torch.Tensor, sigma: float) -> torch.Tensor:
    hx, hy = _gaussian_derivative_kernels(float(sigma))
    half = hx.shape[-1] // 2
    weight = torch.stack([hx, hy]).unsqueeze(1).to(x.device)  # (2, 1, k, k)
    padded = F.pad(x, (half, half, half, half), mode="replicate")
    grads = F.conv2d(padded, weight)
    return grads.pow(2).sum(dim=1, keepdim=True).sqrt()


def gradient_error(
    pred: torch.Tensor,
    target: torch.Tensor,
    *,
    data_range: float = 1.0,
    sigma: float = 1.4,
    region: torch.Tensor | None = None,
    squared: bool = True,
    reduction: str = "mean",
) -> torch.Tensor:
    """Gradient error of alpha mattes per image.

    Gradient magnitudes come from first-derivative-of-Gaussian filters (``sigma`` 1.4,
    replicate padding) as in the Composition-1k evaluation (Xu et al. 2017, Rhemann et
    al. 2009); the error is ``sum (|grad a_pred| - |grad a_true|)^2`` over the image or
    ``region`` (``squared=True``, the benchmark's definition, reported there /1000), or
    ``sum ||grad a_pred| - |grad a_true||`` with ``squared=False`` (the absolute form,
    less dominated by a few strong edges).
    """
    p, t = _pair(pred, target, data_range, "gradient_error")
    if p.shape[1] != 1:
        raise ValueError(f"gradient_error: expected one-channel alpha mattes, got {p.shape[1]} channels")
    with fp32_math(p.device):
        diff = _gradient_magnitude(p, sigma) - _gradient_magnitude(t, sigma)
        err = diff.pow(2) if squared else diff.abs()
        if region is not None:
            err = err * expand_region(region, err, "gradient_error")
        values = err.flatten(1).sum(dim=1)
    return reduce(values, reduction, "gradient_error")


def trimap_accuracy(
    pred: torch.Tensor,
    target: torch.Tensor,
    *,
    trimap: torch.Tensor | None = None,
    width: int = 10,
    threshold: float = 0.5,
    reduction: str = "mean",
) -> torch.Tensor:
    """Pixel accuracy restricted to the trimap's unknown band (the transition region).

    ``pred`` is binarised at ``threshold`` (0.5 for probabilities/alphas; pass 0.0 for
    logits), ``target`` (a mask or alpha in [0, 1]) at 0.5. The band is the unknown
    region of ``trimap`` or, if none is given, of ``make_trimap(target, width=width)``.
    Images with an empty band give NaN (skipped by the batch mean).
    """
    p, t = _as_alpha(pred, "trimap_accuracy"), _as_alpha(target, "trimap_accuracy")
    if p.shape != t.shape:
        raise ValueError(f"trimap_accuracy: pred and target must have the same shape, got {tuple(p.shape)} and "
                         f"{tuple(t.shape)}")
    band = unknown_region(_as_alpha(trimap, "trimap_accuracy")) if trimap is not None else (
        unknown_region(make_trimap(t, width=width)))
    correct = ((as_float(p) >= threshold) == (as_float(t) >= 0.5)) & band
    values = correct.flatten(1).sum(1).double() / band.flatten(1).sum(1).double()
    return reduce(values.float(), reduction, "trimap_accuracy", skip_nan=True)
