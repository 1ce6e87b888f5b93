"""Full-reference image metrics: PSNR, SSIM, MS-SSIM, MSE and LPIPS.

All functions take ``(B, C, H, W)`` float tensors and an explicit ``data_range`` (the
width of the value interval: 2.0 for the trainer's [-1, 1] tensors, 1.0 for [0, 1],
255 for 8-bit values). They return one value per image with ``reduction="none"`` and
the batch mean with ``reduction="mean"`` (default). Math runs in float32 with
autocast disabled; everything is vectorised torch code, so full-resolution images
(1500x1500) are fine.

SSIM convention (documented choice): an 11x11 Gaussian window with sigma 1.5, the
population (not sample) covariance, K1=0.01, K2=0.03, and the mean of the SSIM map
over the pixels whose window lies entirely inside the image. This is exactly
``skimage.metrics.structural_similarity(..., gaussian_weights=True, sigma=1.5,
use_sample_covariance=False, data_range=...)`` (skimage filters with reflect padding
and then crops the 5-pixel border, which leaves only the "valid" windows), the
convention of Wang et al. 2004, and the one of ``pytorch_msssim``. For colour images
the index is the mean over channels (skimage's ``channel_axis`` behaviour).

Value interval: SSIM's luminance term ``(2 mu_x mu_y + C1) / (mu_x^2 + mu_y^2 + C1)``
is *not* invariant to an offset (it assumes non-negative intensities: on [-1, 1] data
two mid-grey patches get a negative luminance similarity). ``ssim``/``ms_ssim``/
``lpips`` therefore take the value interval to be ``[low, low + data_range]`` with
``low = -1`` when ``data_range == 2`` (the trainer's [-1, 1] tensors) and ``low = 0``
otherwise, or an explicit ``low=``; SSIM is computed on ``x - low``. So
``ssim(x, y, data_range=2.0)`` on [-1, 1] tensors equals the SSIM of the same pictures
in [0, 1], i.e. ``structural_similarity((x + 1) / 2, (y + 1) / 2, data_range=1)``.
PSNR and MSE are offset-invariant and need no ``low``.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from pytorch_msssim.ssim import _fspecial_gauss_1d, _ssim

from platform.metrics._common import as_float, check_data_range, check_pair, fp32_math, reduce

# Wang, Simoncelli & Bovik 2003 (also pytorch_msssim / torchmetrics defaults).
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


@functools.lru_cache(maxsize=32)
def _gaussian_window(win_size: int, sigma: float) -> torch.Tensor:
    """pytorch_msssim's 1-D Gaussian window, shape (1, 1, win_size)."""
    return _fspecial_gauss_1d(win_size, sigma)


def _check_window(win_size: int, sigma: float, name: str) -> None:
    if int(win_size) != win_size or win_size < 1 or win_size % 2 == 0:
        raise ValueError(f"{name}: win_size must be a positive odd integer, got {win_size!r}")
    if not sigma > 0:
        raise ValueError(f"{name}: sigma must be positive, got {sigma!r}")


def ssim_components(
    x: torch.Tensor,
    y: torch.Tensor,
    data_range: float,
    win_size: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean SSIM and contrast-structure (cs) terms, shape ``(B, C)`` each.

    Differentiable; the caller decides precision (float32 expected). Raises ValueError
    when the image is smaller than the window (pytorch_msssim would only warn and skip the
    smoothing along that side, giving a different index).
    """
    height, width = x.shape[-2:]
    if min(height, width) < win_size:
        raise ValueError(
            f"ssim: images of {height}x{width} pixels are smaller than the {win_size}x{win_size} "
            "window; use larger images or a smaller win_size"
        )
    # pytorch_msssim's private ``_ssim`` is the function behind its public ``ssim`` and
    # ``ms_ssim``; the public ``ssim`` does not return the cs term (the version is pinned).
    # Its separable convolutions run ~6x faster on CPU in channels-last layout (oneDNN);
    # the values are identical.
    window = _gaussian_window(win_size, float(sigma)).repeat(x.shape[1], 1, 1, 1)
    x = x.contiguous(memory_format=torch.channels_last)
    y = y.contiguous(memory_format=torch.channels_last)
    return _ssim(x, y, data_range=data_range, win=window, size_average=False, K=(k1, k2))


def ms_ssim_value(
    x: torch.Tensor,
    y: torch.Tensor,
    data_range: float,
    weights: tuple[float, ...] = MS_SSIM_WEIGHTS,
    win_size: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
    floor: float = 0.0,
) -> torch.Tensor:
    """Per-image MS-SSIM, shape ``(B,)`` (same algorithm as ``pytorch_msssim.ms_ssim``).

    The scales are looped here, on pytorch_msssim's per-scale SSIM, rather than calling
    ``pytorch_msssim.ms_ssim``, which differs in two ways: it asserts a shorter side above
    160 pixels even when fewer scales are asked for (here: above ``(win_size-1) *
    2**(scales-1)``), and its ReLU leaves ``t ** w`` with an infinite gradient at 0.
    ``floor`` clamps the per-scale terms from below before the fractional powers (0.0 =
    pytorch_msssim's ReLU, the metric; the loss uses a tiny positive floor so the gradient
    stays finite). torchmetrics' MS-SSIM downsamples odd sizes without padding and does not
    clamp the contrast terms, so its values differ.
    """
    levels = len(weights)
    min_side = (win_size - 1) * 2 ** (levels - 1)
    height, width = x.shape[-2:]
    if min(height, width) <= min_side:
        raise ValueError(
            f"ms_ssim: images of {height}x{width} pixels are too small for {levels} scales with a "
            f"{win_size}x{win_size} window (the shorter side must exceed {min_side}); use larger "
            "images or fewer scales (e.g. weights=[0.0448, 0.2856, 0.3001, 0.2363] for 4 scales)"
        )
    w = torch.tensor(weights, dtype=x.dtype, device=x.device)
    terms = []
    for level in range(levels):
        ssim_pc, cs_pc = ssim_components(x, y, data_range, win_size, sigma, k1, k2)
        if level < levels - 1:
            terms.append(cs_pc.clamp_min(floor))
            padding = [s % 2 for s in x.shape[2:]]
            x = F.avg_pool2d(x, kernel_size=2, padding=padding)
            y = F.avg_pool2d(y, kernel_size=2, padding=padding)
    terms.append(ssim_pc.clamp_min(floor))
    stacked = torch.stack(terms, dim=0)  # (levels, B, C)
    return torch.prod(stacked ** w.view(-1, 1, 1), dim=0).mean(dim=1)


def default_low(data_range: float, low: float | None) -> float:
    """Lower end of the value interval: ``low`` if given, else -1 for data_range 2, else 0."""
    if low is not None:
        return float(low)
    return -1.0 if math.isclose(data_range, 2.0) else 0.0


def psnr(pred: torch.Tensor, target: torch.Tensor, *, data_range: float, reduction: str = "mean") -> torch.Tensor:
    """Peak signal-to-noise ratio in dB: ``10 log10(data_range^2 / MSE)`` per image.

    The MSE is over all channels and pixels of one image (skimage's
    ``peak_signal_noise_ratio``); the batch result is the mean of the per-image PSNRs
    (not the PSNR of the batch MSE). Identical images give ``inf``.
    """
    check_pair(pred, target, "psnr")
    data_range = check_data_range(data_range, "psnr")
    with fp32_math(pred.device):
        diff = as_float(pred) - as_float(target)
        mse_per_image = diff.pow(2).flatten(1).mean(dim=1).double()
        values = 10.0 * torch.log10(data_range**2 / mse_per_image)
    return reduce(values.to(torch.float32), reduction, "psnr")


def ssim(
    pred: torch.Tensor,
    target: torch.Tensor,
    *,
    data_range: float,
    reduction: str = "mean",
    win_size: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
    low: float | None = None,
) -> torch.Tensor:
    """Structural similarity index (see the module docstring for the exact convention).

    Matches ``skimage.metrics.structural_similarity(a - low, b - low,
    data_range=data_range, gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, channel_axis=...)``; ``low`` defaults to -1 for
    ``data_range=2`` ([-1, 1] tensors) and 0 otherwise.
    """
    check_pair(pred, target, "ssim")
    data_range = check_data_range(data_range, "ssim")
    _check_window(win_size, sigma, "ssim")
    low = default_low(data_range, low)
    with fp32_math(pred.device):
        ssim_pc, _ = ssim_components(as_float(pred) - low, as_float(target) - low, data_range, win_size, sigma,
                                     k1, k2)
    return reduce(ssim_pc.mean(dim=1), reduction, "ssim")


def ms_ssim(
    pred: torch.Tensor,
    target: torch.Tensor,
    *,
    data_range: float,
    reduction: str = "mean",
    weights: tuple[float, ...] | list[float] = MS_SSIM_WEIGHTS,
    win_size: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
    low: float | None = None,
) -> torch.Tensor:
    """Multi-scale SSIM (Wang et al. 2003), same algorithm and defaults as ``pytorch_msssim``.

    Equals ``pytorch_msssim.ms_ssim(pred - low, target - low, data_range=data_range)``
    (``low`` as in :func:`ssim`). Five scales by default; the shorter image side must
    exceed ``(win_size-1) * 2**4`` = 160 pixels. Pass fewer ``weights`` for smaller
    images.
    """
    check_pair(pred, target, "ms_ssim")
    data_range = check_data_range(data_range, "ms_ssim")
    _check_window(win_size, sigma, "ms_ssim")
    if len(weights) < 1:
        raise ValueError("ms_ssim: weights must list at least one scale weight")
    low = default_low(data_range, low)
    with fp32_math(pred.device):
        values = ms_ssim_value(as_float(pred) - low, as_float(target) - low, data_range,
                               tuple(float(w) for w in weights), win_size, sigma, k1, k2)
    return reduce(values, reduction, "ms_ssim")


def mse(
    pred: torch.Tensor,
    target: torch.Tensor,
    *,
    region: torch.Tensor | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """Mean squared error per image, in the units of the inputs (no data-range scaling).

    ``region`` (optional bool mask, ``(B, 1, H, W)``, ``(B, H, W)`` or the full shape)
    restricts the mean to those pixels, e.g. the trimap unknown band for alpha mattes
    (:func:`platform.metrics.matting.unknown_region`). An image whose region is empty
    gives NaN, skipped by the batch mean.
    """
    check_pair(pred, target, "mse", ndim=0)
    with fp32_math(pred.device):
        sq = (as_float(pred) - as_float(target)).pow(2)
        if region is None:
            values = sq.flatten(1).mean(dim=1)
        else:
            mask = expand_region(region, sq, "mse")
            values = (sq * mask).flatten(1).sum(dim=1) / mask.flatten(1).sum(dim=1)
    return reduce(values, reduction, "mse", skip_nan=region is not None)


def expand_region(region: torch.Tensor, like: torch.Tensor, name: str) -> torch.Tensor:
    """Broadcast a bool region mask to ``like``'s shape as a float tensor."""
    mask = region
    if mask.ndim == like.ndim - 1:
        mask = mask.unsqueeze(1)
    if mask.ndim != like.ndim or mask.shape[0] != like.shape[0] or mask.shape[-2:] != like.shape[-2:]:
        raise ValueError(f"{name}: region of shape {tuple(region.shape)} does not fit images of shape "
                         f"{tuple(like.shape)}")
    return mask.to(like.dtype).expand_as(like)


_LPIPS_CACHE: dict[tuple[str, str], torch.nn.Module] = {}


def lpips(
    pred: torch.Tensor,
    target: torch.Tensor,
    *,
    data_range: float,
    net: str = "alex",
    reduction: str = "mean",
    low: float | None = None,
) -> torch.Tensor:
    """LPIPS distance (Zhang et al. 2018, v0.1 linear layers) per image; lower is better.

    Inputs lie in ``[low, low + data_range]`` (``low`` as in :func:`ssim`: -1 for
    ``data_range=2``, the trainer's tensors and LPIPS's own convention, else 0) and are
    mapped to the [-1, 1] LPIPS expects. One-channel images are repeated to
    RGB. The network trunk comes from the pretrained store (see
    :mod:`platform.losses.perceptual`); it raises
    :class:`platform.pretrained.WeightsUnavailableError` when the file is missing. The
    model is built once per (net, device) and cached.
    """
    from platform.losses.perceptual import build_lpips  # lazy: losses import this module

    check_pair(pred, target, "lpips")
    data_range = check_data_range(data_range, "lpips")
    key = (net, str(pred.device))
    if key not in _LPIPS_CACHE:
        _LPIPS_CACHE[key] = build_lpips(net).to(pred.device)
    model = _LPIPS_CACHE[key]
    low = default_low(data_range, low)
    x, y = as_float(pred), as_float(target)
    if not (math.isclose(data_range, 2.0) and low == -1.0):
        x, y = (x - low) / data_range * 2 - 1, (y - low) / data_range * 2 - 1
    if x.shape[1] == 1:
        x, y = x.expand(-1, 3, -1, -1), y.expand(-1, 3, -1, -1)
    with torch.no_grad():
        values = model(x, y).flatten(1).mean(dim=1)
    return reduce(values, reduction, "lpips")
