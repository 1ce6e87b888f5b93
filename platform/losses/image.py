"""Pixel and structure losses for image-to-image models.

Every component takes ``pred`` and ``target`` as ``(B, C, H, W)`` float tensors in
[-1, 1] (what the trainer produces) and returns a float32 scalar; the math runs in
float32 with autocast off (see :func:`platform.losses.base.fp32_forward`). Components
whose value depends on the value interval say how they treat it (``psnr``, ``ssim``,
``ms_ssim``); the others are plain differences and do not care.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from platform.errors import ConfigError
from platform.losses.base import check_same_shape, fp32_forward, register_loss
from platform.metrics.image import MS_SSIM_WEIGHTS, default_low, ms_ssim_value, ssim_components


def _positive(value: float, what: str) -> float:
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{what} must be a positive number, got {value!r}")
    return value


@register_loss("l1", kind="image")
class L1Loss(nn.Module):
    """Mean absolute error."""

    @fp32_forward
    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        check_same_shape(pred, target, "l1")
        return F.l1_loss(pred, target)


@register_loss("mse", kind="image")
class MSELoss(nn.Module):
    """Mean squared error."""

    @fp32_forward
    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        check_same_shape(pred, target, "mse")
        return F.mse_loss(pred, target)


@register_loss("charbonnier", kind="image", minimum=1e-3)
class CharbonnierLoss(nn.Module):
    """Charbonnier (smooth L1) loss ``mean(sqrt((pred - target)^2 + eps^2))``.

    ``eps`` = 1e-3 as in MPRNet / Restormer; the minimum (identical images) is ``eps``.
    """

    def __init__(self, eps: float = 1e-3):
        super().__init__()
        self.eps = _positive(eps, "charbonnier eps")

    @fp32_forward
    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        check_same_shape(pred, target, "charbonnier")
        return torch.sqrt((pred - target).pow(2) + self.eps**2).mean()


@register_loss("psnr", kind="image", minimum=-80.0)
class PSNRLoss(nn.Module):
    """NAFNet's PSNR loss: ``10 log10(MSE + 1e-8)`` per image, averaged = minus the PSNR in dB.

    NAFNet computes it on [0, 1] images; here the difference is divided by
    ``data_range`` (2.0 for the trainer's [-1, 1] tensors) so the value is exactly
    minus the PSNR of the images on a unit scale, as in NAFNet. It is negative (about
    -20 to -40 for useful models) and its minimum, for identical images, is
    ``10 log10(1e-8) = -80``. Its gradient is that of the MSE divided by the MSE, i.e.
    every image of the batch counts equally whatever its error level.
    """

    def __init__(self, data_range: float = 2.0):
        super().__init__()
        self.data_range = _positive(data_range, "psnr data_range")
        self.scale = 10.0 / math.log(10.0)

    @fp32_forward
    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        check_same_shape(pred, target, "psnr")
        mse = ((pred - target) / self.data_range).pow(2).flatten(1).mean(dim=1)
        return self.scale * torch.log(mse + 1e-8).mean()


@register_loss("ssim", kind="image")
class SSIMLoss(nn.Module):
    """``1 - SSIM`` with the convention of :func:`platform.metrics.ssim` (11x11 Gaussian, sigma 1.5;
    computed by pytorch_msssim).

    ``data_range`` defaults to 2.0 for [-1, 1] inputs, which are shifted to [0, 2]
    first (``low=-1``): SSIM's luminance term assumes non-negative intensities. Images
    must be at least ``win_size`` pixels on each side.
    """

    def __init__(self, data_range: float = 2.0, win_size: int = 11, sigma: float = 1.5, low: float | None = None):
        super().__init__()
        if int(win_size) != win_size or win_size < 1 or win_size % 2 == 0:
            raise ValueError(f"ssim win_size must be a positive odd integer, got {win_size!r}")
        self.data_range = _positive(data_range, "ssim data_range")
        self.win_size = int(win_size)
        self.sigma = _positive(sigma, "ssim sigma")
        self.low = default_low(self.data_range, low)

    @fp32_forward
    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        check_same_shape(pred, target, "ssim")
        try:
            ssim_pc, _ = ssim_components(pred - self.low, target - self.low, self.data_range, self.win_size,
                                         self.sigma)
        except ValueError as exc:  # images smaller than the window: a configuration problem
            raise ConfigError(f"loss component 'ssim': {exc}") from None
        return 1.0 - ssim_pc.mean()


@register_loss("ms_ssim", kind="image")
class MSSSIMLoss(nn.Module):
    """``1 - MS-SSIM`` (:func:`platform.metrics.ms_ssim`: pytorch_msssim's algorithm and per-scale SSIM).

    Five scales need images whose shorter side exceeds 160 pixels; pass fewer
    ``weights`` for smaller crops (4 scales: > 80 px, 3 scales: > 40 px). Per-scale
    terms are floored at 1e-6 so the fractional powers keep finite gradients.
    """

    def __init__(self, data_range: float = 2.0, weights: Sequence[float] = MS_SSIM_WEIGHTS,
                 win_size: int = 11, sigma: float = 1.5, low: float | None = None):
        super().__init__()
        weights = tuple(float(w) for w in weights)
        if not weights or any(not math.isfinite(w) or w < 0 for w in weights):
            raise ValueError(f"ms_ssim weights must be a non-empty list of non-negative numbers, got {weights!r}")
        self.weights = weights
        self.data_range = _positive(data_range, "ms_ssim data_range")
        self.win_size = int(win_size)
        self.sigma = _positive(sigma, "ms_ssim sigma")
        self.low = default_low(self.data_range, low)

    @fp32_forward
    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        check_same_shape(pred, target, "ms_ssim")
        try:
            value = ms_ssim_value(pred - self.low, target - self.low, self.data_range, self.weights, self.win_size,
                                  self.sigma, floor=1e-6)
        except ValueError as exc:  # crop too small for the scales: a configuration problem
            raise ConfigError(f"loss component 'ms_ssim': {exc}") from None
        return 1.0 - value.mean()


def _binomial_blur(x: torch.Tensor) -> torch.Tensor:
    """5-tap binomial ([1, 4, 6, 4, 1] / 16) separable blur with reflect padding."""
    channels = x.shape[1]
    k = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0], dtype=x.dtype, device=x.device) / 16.0
    x = F.pad(x, (2, 2, 2, 2), mode="reflect")
    x = F.conv2d(x, k.view(1, 1, 1, 5).expand(channels, 1, 1, 5), groups=channels)
    return F.conv2d(x, k.view(1, 1, 5, 1).expand(channels, 1, 5, 1), groups=channels)


def laplacian_pyramid(x: torch.Tensor, levels: int) -> list[torch.Tensor]:
    """Laplacian pyramid (Burt & Adelson): ``levels - 1`` band-pass images and the low-pass residual.

    ``band_j = G_j - up(G_{j+1})`` with ``G_{j+1} = blur(G_j)[::2, ::2]`` and bilinear
    ``up``. Downsampling stops early once the shorter side is below 8 pixels (the next
    level would be under 4), so small images give fewer levels.
    """
    bands = []
    current = x
    for _ in range(levels - 1):
        if min(current.shape[-2:]) < 8:
            break
        low = _binomial_blur(current)[..., ::2, ::2]
        up = F.interpolate(low, size=current.shape[-2:], mode="bilinear", align_corners=False)
        bands.append(current - up)
        current = low
    bands.append(current)
    return bands


@register_loss("laplacian", kind="image")
class LaplacianPyramidLoss(nn.Module):
    """Laplacian-pyramid L1 loss (Bojanowski et al. 2018, "Lap1").

    Both images are decomposed into ``levels`` pyramid levels (``levels - 1``
    band-pass images plus the low-pass residual; see :func:`laplacian_pyramid`) and the
    loss is ``sum_j w_j * mean|L_j(pred) - L_j(target)|``.

    Level weighting: by default ``w_j = 1`` for every level on the per-level *mean*
    absolute difference. Since level ``j`` has ``4^-j`` times as many pixels as the
    image, this is exactly Bojanowski et al.'s ``sum_j 2^(2j) |L_j(x) - L_j(x')|_1``
    (sum norms) divided by the pixel count: each octave counts equally, so coarse
    structure is not swamped by the many fine-scale pixels, and the fine bands (edges,
    texture) still carry a full share. Pass ``level_weights`` (finest first) to change
    it. The pyramid is linear, so it is built once on ``pred - target``.
    """

    def __init__(self, levels: int = 5, level_weights: Sequence[float] | None = None):
        super().__init__()
        if int(levels) != levels or levels < 1:
            raise ValueError(f"laplacian levels must be a positive integer, got {levels!r}")
        self.levels = int(levels)
        if level_weights is not None:
            level_weights = [float(w) for w in level_weights]
            if len(level_weights) != self.levels or any(not math.isfinite(w) or w < 0 for w in level_weights):
                raise ValueError(f"laplacian level_weights must list {self.levels} non-negative numbers "
                                 f"(finest level first), got {level_weights!r}")
        self.level_weights = level_weights

    @fp32_forward
    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        check_same_shape(pred, target, "laplacian")
        bands = laplacian_pyramid(pred - target, self.levels)
        weights = self.level_weights or [1.0] * self.levels
        return sum(w * band.abs().mean() for w, band in zip(weights, bands))


_SOBEL_X = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])


def sobel_gradients(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel Sobel derivatives (replicate padding, unscaled [-1 0 1; -2 0 2; -1 0 1] kernels)."""
    channels = x.shape[1]
    kx = _SOBEL_X.to(device=x.device, dtype=x.dtype)
    weight = torch.stack([kx, kx.t()]).unsqueeze(1).repeat(channels, 1, 1, 1)  # (2C, 1, 3, 3)
    grads = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), weight, groups=channels)
    return grads[:, 0::2], grads[:, 1::2]


@register_loss("sobel", kind="image")
class SobelEdgeLoss(nn.Module):
    """Edge loss on Sobel gradients.

    ``mode="components"`` (default): mean of ``|gx_p - gx_t|`` and ``|gy_p - gy_t|``
    (penalises wrong edge strength and orientation; linear, so computed on the
    difference). ``mode="magnitude"``: ``mean| |grad p| - |grad t| |`` (edge strength
    only), with ``|g| = sqrt(gx^2 + gy^2 + 1e-6)`` so the gradient is finite on flat
    areas.
    """

    def __init__(self, mode: str = "components"):
        super().__init__()
        if mode not in ("components", "magnitude"):
            raise ValueError(f"sobel mode must be 'components' or 'magnitude', got {mode!r}")
        self.mode = mode

    @fp32_forward
    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        check_same_shape(pred, target, "sobel")
        if self.mode == "components":
            gx, gy = sobel_gradients(pred - target)
            return 0.5 * (gx.abs().mean() + gy.abs().mean())
        px, py = sobel_gradients(pred)
        tx, ty = sobel_gradients(target)
        mag_p = torch.sqrt(px.pow(2) + py.pow(2) + 1e-6)
        mag_t = torch.sqrt(tx.pow(2) + ty.pow(2) + 1e-6)
        return (mag_p - mag_t).abs().mean()


@register_loss("fft", kind="image")
class FFTAmplitudeLoss(nn.Module):
    """L1 distance between 2-D FFT amplitude spectra, ``mean| |F(pred)| - |F(target)| |``.

    Orthonormal real FFT per channel (``norm="ortho"``, so the scale does not depend on
    the image size); amplitudes use ``sqrt(re^2 + im^2 + 1e-12)`` to keep gradients
    finite at zero-amplitude frequencies. Phase is ignored (pair it with l1).
    """

    def __init__(self, norm: str = "ortho"):
        super().__init__()
        if norm not in ("ortho", "forward", "backward"):
            raise ValueError(f"fft norm must be 'ortho', 'forward' or 'backward', got {norm!r}")
        self.norm = norm

    def _amplitude(self, x: torch.Tensor) -> torch.Tensor:
        spec = torch.fft.rfft2(x, norm=self.norm)
        return torch.sqrt(spec.real.pow(2) + spec.imag.pow(2) + 1e-12)

    @fp32_forward
    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        check_same_shape(pred, target, "fft")
        return (self._amplitude(pred) - self._amplitude(target)).abs().mean()
