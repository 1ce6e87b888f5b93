"""PSNR / SSIM / MS-SSIM / MSE against skimage, pytorch_msssim and torchmetrics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import pytorch_msssim
import torch
from skimage import data as skdata
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from platform.metrics import METRICS, ms_ssim, mse, psnr, ssim


def _sk_ssim(a: np.ndarray, b: np.ndarray, data_range: float) -> float:
    """skimage reference for (C, H, W) arrays, with the documented Gaussian convention."""
    return structural_similarity(a, b, data_range=data_range, gaussian_weights=True, sigma=1.5,
                                 use_sample_covariance=False, channel_axis=0)


def _photo_pairs() -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """Real photos in [-1, 1] as (1, C, H, W), each with a distorted copy."""
    rng = np.random.default_rng(0)
    pairs = []
    for name in ("astronaut", "coffee", "chelsea", "camera"):
        img = getattr(skdata, name)().astype(np.float64) / 255.0
        img = img[None] if img.ndim == 2 else img.transpose(2, 0, 1)
        img = img[:, :160, :200]
        noisy = np.clip(img + rng.normal(0, 0.05, img.shape), 0, 1)
        x = torch.from_numpy(img).float()[None] * 2 - 1
        y = torch.from_numpy(noisy).float()[None] * 2 - 1
        pairs.append((f"{name}+noise", x, y))
        blurred = torch.nn.functional.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)
        pairs.append((f"{name}+blur", x, blurred))
    astro = torch.from_numpy(skdata.astronaut()[:160, :200].transpose(2, 0, 1) / 255.0).float()[None] * 2 - 1
    coffee = torch.from_numpy(skdata.coffee()[:160, :200].transpose(2, 0, 1) / 255.0).float()[None] * 2 - 1
    pairs.append(("astronaut-vs-coffee", astro, coffee))
    return pairs


PAIRS = _photo_pairs()


@pytest.mark.parametrize("name,x,y", PAIRS, ids=[p[0] for p in PAIRS])
def test_psnr_and_ssim_match_skimage_on_photos(name, x, y):
    a = x[0].double().numpy()
    b = y[0].double().numpy()
    ref_psnr = peak_signal_noise_ratio(a, b, data_range=2.0)
    assert float(psnr(x, y, data_range=2.0)) == pytest.approx(ref_psnr, abs=1e-3)
    # [-1, 1] tensors are shifted to [0, 2] (low=-1): same as skimage on the [0, 1] pictures.
    ref_ssim = _sk_ssim((a + 1) / 2, (b + 1) / 2, data_range=1.0)
    assert float(ssim(x, y, data_range=2.0)) == pytest.approx(ref_ssim, abs=1e-3)
    assert float(ssim(x + 1, y + 1, data_range=2.0, low=0.0)) == pytest.approx(ref_ssim, abs=1e-3)


def test_psnr_ssim_random_batch_per_image_and_mean():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(3, 3, 48, 40, generator=g) * 2 - 1
    y = (x + 0.2 * torch.randn(3, 3, 48, 40, generator=g)).clamp(-1, 1)
    per_psnr = psnr(x, y, data_range=2.0, reduction="none")
    per_ssim = ssim(x, y, data_range=2.0, reduction="none")
    assert per_psnr.shape == per_ssim.shape == (3,)
    for i in range(3):
        a, b = x[i].double().numpy(), y[i].double().numpy()
        assert float(per_psnr[i]) == pytest.approx(peak_signal_noise_ratio(a, b, data_range=2.0), abs=1e-3)
        assert float(per_ssim[i]) == pytest.approx(_sk_ssim((a + 1) / 2, (b + 1) / 2, 1.0), abs=1e-3)
    assert float(psnr(x, y, data_range=2.0)) == pytest.approx(float(per_psnr.mean()), abs=1e-5)
    assert float(ssim(x, y, data_range=2.0)) == pytest.approx(float(per_ssim.mean()), abs=1e-6)


def test_ssim_on_8bit_range_matches_skimage_uint8():
    img = skdata.camera()[100:180, 150:250]
    noisy = np.clip(img.astype(int) + np.random.default_rng(2).integers(-20, 21, img.shape), 0, 255).astype(np.uint8)
    x = torch.from_numpy(img).float()[None, None]
    y = torch.from_numpy(noisy).float()[None, None]
    ref = structural_similarity(img, noisy, data_range=255, gaussian_weights=True, sigma=1.5,
                                use_sample_covariance=False)
    assert float(ssim(x, y, data_range=255)) == pytest.approx(ref, abs=1e-3)
    assert float(psnr(x, y, data_range=255)) == pytest.approx(peak_signal_noise_ratio(img, noisy, data_range=255),
                                                              abs=1e-3)


def test_identical_images():
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    assert math.isinf(float(psnr(x, x, data_range=2.0)))
    assert float(ssim(x, x, data_range=2.0)) == pytest.approx(1.0, abs=1e-6)


def test_ssim_is_pytorch_msssim_on_the_shifted_values():
    """The wrapper adds the value interval (low), the checks and the reductions, nothing else."""
    g = torch.Generator().manual_seed(1)
    x = torch.rand(3, 3, 40, 52, generator=g) * 2 - 1
    y = (x + 0.2 * torch.randn(x.shape, generator=g)).clamp(-1, 1)
    ref = pytorch_msssim.ssim(x + 1, y + 1, data_range=2.0, size_average=False)
    assert torch.allclose(ssim(x, y, data_range=2.0, reduction="none"), ref, atol=1e-6)
    ref7 = pytorch_msssim.ssim(x + 1, y + 1, data_range=2.0, size_average=False, win_size=7, win_sigma=1.0)
    assert torch.allclose(ssim(x, y, data_range=2.0, reduction="none", win_size=7, sigma=1.0), ref7, atol=1e-6)


def test_ms_ssim_matches_pytorch_msssim_and_torchmetrics():
    from torchmetrics.functional.image import multiscale_structural_similarity_index_measure as tm_ms_ssim

    img = torch.from_numpy(skdata.astronaut()[:200, :220].transpose(2, 0, 1) / 255.0).float()[None]
    other = (img + 0.08 * torch.randn(img.shape, generator=torch.Generator().manual_seed(3))).clamp(0, 1)
    x, y = torch.cat([img, img]), torch.cat([other, img.flip(-1)])
    ref = pytorch_msssim.ms_ssim(x, y, data_range=1.0, size_average=False)
    ours = ms_ssim(x, y, data_range=1.0, reduction="none")
    assert torch.allclose(ours, ref, atol=1e-4)
    # torchmetrics with the same Gaussian window agrees on the similar pair (on the
    # dissimilar one it differs by design: it does not clamp negative contrast terms).
    tm = tm_ms_ssim(x[:1], y[:1], data_range=1.0, kernel_size=11, sigma=1.5, reduction="none")
    assert torch.allclose(ours[:1], tm, atol=1e-3)
    # [-1, 1] tensors with data_range 2 give the same value (low=-1 shift).
    assert torch.allclose(ms_ssim(x * 2 - 1, y * 2 - 1, data_range=2.0, reduction="none"), ref, atol=1e-4)


def test_ms_ssim_small_image_error_names_size_and_fix():
    x = torch.rand(1, 3, 100, 100)
    with pytest.raises(ValueError, match="shorter side must exceed 160"):
        ms_ssim(x, x, data_range=1.0)
    assert float(ms_ssim(x, x, data_range=1.0, weights=[0.3, 0.3, 0.4])) == pytest.approx(1.0, abs=1e-5)


def test_bad_inputs_are_clear():
    x = torch.rand(1, 3, 16, 16)
    with pytest.raises(ValueError, match="same shape"):
        psnr(x, torch.rand(1, 3, 16, 15), data_range=1.0)
    with pytest.raises(ValueError, match="data_range"):
        ssim(x, x, data_range=0)
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        ssim(x[0], x[0], data_range=1.0)
    with pytest.raises(ValueError, match="smaller than the 11x11 window"):
        ssim(torch.rand(1, 1, 8, 30), torch.rand(1, 1, 8, 30), data_range=1.0)
    with pytest.raises(ValueError, match="reduction"):
        psnr(x, x * 0.5, data_range=1.0, reduction="sum")


def test_mse_with_region():
    x = torch.zeros(2, 1, 4, 4)
    y = torch.zeros(2, 1, 4, 4)
    y[0, 0, 0, 0] = 2.0  # error inside the region of image 0
    y[1, 0, 3, 3] = 1.0  # error outside the region of image 1
    region = torch.zeros(2, 4, 4, dtype=torch.bool)
    region[:, :2, :2] = True
    assert torch.allclose(mse(x, y, reduction="none"), torch.tensor([4 / 16, 1 / 16]))
    assert torch.allclose(mse(x, y, region=region, reduction="none"), torch.tensor([4 / 4, 0.0]))


def test_psnr_ssim_under_autocast_and_bf16_inputs():
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    y = (x + 0.1 * torch.randn_like(x)).clamp(-1, 1)
    ref_p, ref_s = float(psnr(x, y, data_range=2.0)), float(ssim(x, y, data_range=2.0))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert float(ssim(x, y, data_range=2.0)) == pytest.approx(ref_s, abs=1e-5)
        assert float(psnr(x, y, data_range=2.0)) == pytest.approx(ref_p, abs=1e-4)


def test_registry_metadata():
    assert METRICS.meta("psnr")["higher_is_better"] is True
    assert METRICS.meta("lpips")["higher_is_better"] is False
    assert METRICS.meta("temporal_flicker")["kind"] == "video"
    assert METRICS.get("recall") is METRICS.get("sensitivity")
