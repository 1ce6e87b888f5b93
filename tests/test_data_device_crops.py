"""Training crops cut on the device (the GPU path, exercised here on the CPU device)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from platform.config import load_spec
from platform.data.augment import PairedAugment
from platform.data.device_crops import DeviceCrops, make_device_crops, unsupported_reason
from platform.data.paired import CropDataset, Pair
from platform.errors import ConfigError
from platform.search.presets import cpu_nafnet
from platform.train.loop import train_loop
from platform.train.session import Session


def _pairs() -> list[Pair]:
    from skimage import data

    a, c = data.astronaut(), data.chelsea()  # 512x512 and 300x451, 8-bit
    b16 = (data.coffee().astype(np.uint16) * 257)  # a 16-bit pair
    return [Pair("astronaut", a, a[:, ::-1].copy()), Pair("chelsea", c, 255 - c),
            Pair("coffee16", b16, b16[::-1].copy())]


def _dataset(**aug) -> CropDataset:
    cfg = {"hflip": 0.0, "vflip": 0.0, "rotate90": 0.0, **aug}
    return CropDataset(_pairs(), crop=48, length=24, seed=7, augment=PairedAugment(cfg, target_kind="image"))


@pytest.mark.parametrize("aug", [{}, {"hflip": 1.0, "vflip": 1.0}])
def test_device_crops_equal_the_datasets_crops(aug):
    """Same frame, same corner, same values (8 and 16 bit) as the host pipeline; with certain
    flips (p = 0 or 1) the two agree bit for bit."""
    ds = _dataset(**aug)
    crops = DeviceCrops(ds, torch.device("cpu"))
    for epoch in (0, 3):
        ds.set_epoch(epoch)
        batches = list(crops.batches(epoch, range(len(ds)), batch_size=5))
        assert len(batches) == 4  # 24 items, batches of 5, the last partial one dropped
        for b, (xs, ys) in enumerate(batches):
            assert xs.shape == ys.shape == (5, 3, 48, 48) and xs.dtype == torch.float32
            for j in range(5):
                x, y = ds[b * 5 + j]
                assert torch.equal(xs[j], x) and torch.equal(ys[j], y)


def test_device_flips_follow_their_probabilities_and_stay_paired():
    ds = _dataset(hflip=0.5, vflip=0.2, rotate90=0.5)
    crops = DeviceCrops(ds, torch.device("cpu"))
    plans = [crops.item_plan(0, i) for i in range(2000)]
    assert np.mean([p[3] for p in plans]) == pytest.approx(0.5, abs=0.04)
    assert np.mean([p[4] for p in plans]) == pytest.approx(0.2, abs=0.04)
    assert np.mean([p[5] > 0 for p in plans]) == pytest.approx(0.5 * 0.75, abs=0.04)  # k = 0 is a no-op turn
    # Frame and corner are the dataset's: item plans are pure functions of (seed, epoch, index).
    assert crops.item_plan(2, 5) == crops.item_plan(2, 5) and crops.item_plan(2, 5) != crops.item_plan(3, 5)
    # Input and target get the same geometry: with target == input, every crop pair stays equal,
    # while the flips and turns do change the crops.
    same = CropDataset([Pair(p.name, p.input, p.input) for p in _pairs()], crop=48, length=64, seed=7,
                       augment=PairedAugment({"hflip": 0.5, "vflip": 0.5, "rotate90": 0.5}, target_kind="image"))
    flipped = DeviceCrops(same, torch.device("cpu"))
    plain = DeviceCrops(_dataset(), torch.device("cpu"))
    x, y = next(flipped.batches(1, range(64), batch_size=64))
    x0, _ = next(plain.batches(1, range(64), batch_size=64))
    assert torch.equal(x, y)
    changed = [i for i in range(64) if not torch.equal(x[i], x0[i])]
    moved = [i for i in range(64) if any(flipped.item_plan(1, i)[3:5]) or flipped.item_plan(1, i)[5]]
    assert changed and set(changed) <= set(moved)


def test_other_augmentations_keep_the_host_pipeline():
    assert unsupported_reason(_dataset()) is None
    noisy = _dataset(noise={"p": 0.5, "std": 0.02})
    assert "more than flips" in unsupported_reason(noisy)
    assert make_device_crops(noisy, torch.device("cpu"), "auto") is None
    assert make_device_crops(_dataset(), torch.device("cpu"), "auto") is None  # auto: CUDA only
    with pytest.raises(ConfigError, match="train.device_crops"):
        make_device_crops(noisy, torch.device("cpu"), "on")


def test_trainer_with_device_crops_matches_the_loader(one_thread, tmp_path):
    """The trainer on device crops (forced on the CPU) trains on exactly the loader's batches when
    the augmentation is deterministic, so both runs end with the same metrics."""
    overrides = {"task": {"crop": 32, "crops_per_epoch": 8, "batch_size": 4, "val_max_side": 64,
                          "augment": {"hflip": 1.0, "vflip": 0.0, "rotate90": 0.0}},
                 "model": {"size": "small", "options": {"width": 8}},
                 "loss": {"l1": 1.0, "lpips": 0.0, "laplacian": 0.0, "ssim": 0.0},
                 "optimizer": {"lr": 1.0e-3}, "train": {"epochs": 2, "image_every": 2}}
    runs = {}
    for mode in ("on", "off"):
        spec = load_spec("nafnet_fewshot", quick=True, overrides=cpu_nafnet({**overrides, "train": {
            **overrides["train"], "device_crops": mode}}))
        session = Session(tmp_path / mode)
        train_loop(spec.config, session)
        runs[mode] = session.reports
    for on, off in zip(runs["on"], runs["off"]):
        assert on["train_loss"] == off["train_loss"] and on["val_psnr"] == off["val_psnr"]
