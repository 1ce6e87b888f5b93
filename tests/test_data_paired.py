"""Paired few-shot data: matching, crops, splits and the errors users see."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from platform.data.io import read_image, write_image
from platform.data.paired import CropDataset, load_pairs, scan_pairs, split_pairs
from platform.data.samples import colour_grade, ensure_sample
from platform.errors import DataError


def _make(folder, names, size=(40, 50), target_names=None):
    rng = np.random.default_rng(0)
    for n in names:
        write_image(folder / "input" / f"{n}.png", rng.random((*size, 3)))
    for n in (target_names or names):
        write_image(folder / "target" / f"{n}.png", rng.random((*size, 3)))


def test_sample_is_built_once_and_is_a_real_grade(tmp_path):
    folder = ensure_sample("vfx_grade", root=tmp_path)
    pairs = load_pairs(folder)
    assert len(pairs) == 10
    assert len({p.shape for p in pairs}) > 3  # differing resolutions
    mtime = (folder / "SAMPLE.json").stat().st_mtime_ns
    assert ensure_sample("vfx_grade", root=tmp_path) == folder
    assert (folder / "SAMPLE.json").stat().st_mtime_ns == mtime  # reused, not rebuilt
    # The target is the grade of the clean photo: grading the noisy input gets close, not equal.
    p = pairs[0]
    err_graded = np.abs(colour_grade(p.input) - p.target).mean()
    err_identity = np.abs(p.input - p.target).mean()
    assert err_graded < 0.5 * err_identity


def test_pairs_match_by_name_and_load_in_unit_range(tmp_path):
    _make(tmp_path, ["a", "b", "c"])
    assert [s for s, _, _ in scan_pairs(tmp_path)] == ["a", "b", "c"]
    pairs = load_pairs(tmp_path)
    assert pairs[0].input.shape == (40, 50, 3) and pairs[0].input.dtype == np.float32
    np.testing.assert_allclose(pairs[0].input, read_image(tmp_path / "input" / "a.png"))
    train, val = split_pairs(pairs, 1)
    assert [p.name for p in val] == ["c"] and len(train) == 2
    train, val = split_pairs(pairs, ["a"])
    assert [p.name for p in val] == ["a"]


def test_missing_folder(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        scan_pairs(tmp_path / "nope")


def test_unmatched_names_are_listed(tmp_path):
    _make(tmp_path, ["a", "b"], target_names=["a", "z"])
    with pytest.raises(DataError) as e:
        scan_pairs(tmp_path)
    assert "b.png" in str(e.value) and "z.png" in str(e.value)


def test_unreadable_image_is_named(tmp_path):
    _make(tmp_path, ["a"])
    (tmp_path / "input" / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.raises(DataError, match="a.png"):
        load_pairs(tmp_path)


def test_size_mismatch_and_small_images(tmp_path):
    _make(tmp_path, ["a"])
    write_image(tmp_path / "target" / "a.png", np.zeros((20, 20, 3)))
    with pytest.raises(DataError, match="same size"):
        load_pairs(tmp_path)
    write_image(tmp_path / "target" / "a.png", np.zeros((40, 50, 3)))
    with pytest.raises(DataError, match="smaller than the crop"):
        CropDataset(load_pairs(tmp_path), crop=64, length=4)
    from platform.tasks import create

    task = create("img2img", {"data": str(tmp_path), "crop": 64, "crops_per_epoch": 4, "val_holdout": 0}, seed=0)
    with pytest.raises(DataError, match=f"image {tmp_path}/input/a.png is 50x40, smaller than the crop size 64"):
        task.train_dataset()


def test_crops_are_deterministic_paired_and_sharded(tmp_path):
    _make(tmp_path, ["a", "b"], size=(64, 80))
    pairs = load_pairs(tmp_path)
    # Make target = input so that paired augmentation must keep them identical.
    for p in pairs:
        p.target[...] = p.input
    ds = CropDataset(pairs, crop=16, length=8, seed=3)
    x1, y1 = ds[5]
    x2, _ = ds[5]
    assert x1.shape == (3, 16, 16) and torch.equal(x1, x2) and torch.equal(x1, y1)
    assert float(x1.min()) >= -1 and float(x1.max()) <= 1
    ds.set_epoch(1)
    assert not torch.equal(ds[5][0], x1)  # another epoch, other crops
