"""Matting metrics (SAD, MSE in the unknown band, gradient error, trimaps) and temporal flicker."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from platform.metrics import gradient_error, make_trimap, mse, sad, temporal_flicker, trimap_accuracy, unknown_region


def test_sad_by_hand_and_data_range():
    pred = torch.tensor([[[0.0, 0.5], [1.0, 1.0]]])
    target = torch.tensor([[[0.0, 1.0], [0.0, 1.0]]])
    assert float(sad(pred, target)) == pytest.approx(1.5)
    assert float(sad(pred * 255, target * 255, data_range=255)) == pytest.approx(1.5)
    trimap = torch.tensor([[[0.0, 0.5], [1.0, 0.5]]])
    region = unknown_region(trimap)
    assert region.tolist() == [[[False, True], [False, True]]]
    assert float(sad(pred, target, region=region)) == pytest.approx(0.5)
    assert float(mse(pred.unsqueeze(1), target.unsqueeze(1), region=region)) == pytest.approx(0.25 / 2)
    assert unknown_region(torch.tensor([0, 128, 255], dtype=torch.uint8)).tolist() == [False, True, False]


def _dim_gradient_reference(alpha: np.ndarray, sigma: float = 1.4) -> np.ndarray:
    """Independent numpy port of the Composition-1k ``gaussgradient`` (epsilon 1e-2, replicate)."""
    eps = 1e-2
    half = int(np.ceil(sigma * np.sqrt(-2 * np.log(np.sqrt(2 * np.pi) * sigma * eps))))
    size = 2 * half + 1
    gauss = lambda x: np.exp(-x**2 / (2 * sigma**2)) / (sigma * np.sqrt(2 * np.pi))
    hx = np.zeros((size, size))
    for i in range(size):
        for j in range(size):
            u = (i - half, j - half)
            hx[i, j] = gauss(u[0]) * (-u[1] * gauss(u[1]) / sigma**2)
    hx /= np.sqrt((np.abs(hx) ** 2).sum())
    gx = ndimage.correlate(alpha, hx, mode="nearest")
    gy = ndimage.correlate(alpha, hx.T, mode="nearest")
    return np.sqrt(gx**2 + gy**2)


def test_gradient_error_matches_reference_port():
    rng = np.random.default_rng(0)
    target = ndimage.gaussian_filter((rng.random((40, 50)) > 0.5).astype(np.float64), 2)
    pred = np.clip(target + rng.normal(0, 0.05, target.shape), 0, 1)
    ref_sq = ((_dim_gradient_reference(pred) - _dim_gradient_reference(target)) ** 2).sum()
    ref_abs = np.abs(_dim_gradient_reference(pred) - _dim_gradient_reference(target)).sum()
    p = torch.from_numpy(pred).float()[None, None]
    t = torch.from_numpy(target).float()[None, None]
    assert float(gradient_error(p, t)) == pytest.approx(ref_sq, rel=1e-4)
    assert float(gradient_error(p, t, squared=False)) == pytest.approx(ref_abs, rel=1e-4)
    assert float(gradient_error(t, t)) == 0.0


def test_make_trimap_and_unknown_band_accuracy():
    mask = torch.zeros(1, 1, 9, 9)
    mask[..., 2:7, 2:7] = 1.0
    trimap = make_trimap(mask, width=1)
    # fg: eroded square 3:6; bg: outside the dilated square 1:8; unknown: the ring between.
    assert (trimap[0, 0, 3:6, 3:6] == 1).all()
    assert trimap[0, 0, 0].eq(0).all() and trimap[0, 0, :, 8].eq(0).all()
    ring = unknown_region(trimap)[0, 0]
    assert int(ring.sum()) == 7 * 7 - 3 * 3
    # Prediction wrong on 4 pixels of the ring and on one background pixel far away.
    pred = mask.clone()
    pred[0, 0, 2, 2:6] = 0.0
    pred[0, 0, 0, 0] = 1.0
    assert float(trimap_accuracy(pred, mask, width=1)) == pytest.approx((40 - 4) / 40)
    assert float(trimap_accuracy(pred, mask, trimap=trimap)) == pytest.approx((40 - 4) / 40)
    # No unknown band -> NaN for that image.
    assert math.isnan(float(trimap_accuracy(pred, torch.zeros_like(mask), width=1)))


def test_temporal_flicker_by_hand():
    target = torch.zeros(3, 1, 2, 2)
    target[1] = 0.2
    target[2] = 0.4  # steady change of 0.2 per frame
    flickering = target.clone()
    flickering[1] += 0.3  # +0.3 then -0.3 on top of the motion
    # output changes |0.5| and |0.1| -> mean 0.3; target changes 0.2 -> added flicker 0.1
    assert float(temporal_flicker(flickering, target)) == pytest.approx(0.1, abs=1e-6)
    assert float(temporal_flicker(target + 0.7, target)) == pytest.approx(0.0, abs=1e-6)
    batch = torch.stack([flickering, target])
    per_video = temporal_flicker(batch, torch.stack([target, target]), reduction="none")
    assert torch.allclose(per_video, torch.tensor([0.1, 0.0]), atol=1e-6)
    frozen = target[:1].expand(3, -1, -1, -1)
    assert float(temporal_flicker(frozen, target)) == pytest.approx(-0.2, abs=1e-6)
    with pytest.raises(ValueError, match="at least 2 frames"):
        temporal_flicker(target[:1], target[:1])
