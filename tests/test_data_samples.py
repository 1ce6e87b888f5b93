"""Bundled sample data sets: restore, damage (ARTeFACT-like, hierarchical) and matte."""

from __future__ import annotations

import numpy as np
import pytest

from platform.data.formats import read_array, read_mask
from platform.data.paired import load_pairs
from platform.data.samples import available_samples, ensure_sample
from platform.data.segmentation import ARTEFACT_FINE, load_mattes, load_segmentation
from platform.data.synth import paint_damage


def test_available():
    assert {"vfx_grade", "restore", "damage", "matte"} <= set(available_samples())


def test_restore_pairs_are_degraded_photos():
    pairs = load_pairs(ensure_sample("restore"))
    assert len(pairs) == 10
    for p in pairs[:3]:
        mse = float(np.mean((p.input - p.target) ** 2))
        psnr = 10 * np.log10(1 / mse)
        assert 18 < psnr < 32  # clearly degraded, still the same picture
        assert np.corrcoef(p.input.ravel(), p.target.ravel())[0, 1] > 0.9


def test_damage_masks_cover_the_taxonomy_and_match_the_paint():
    folder = ensure_sample("damage")
    spec, items = load_segmentation(folder, hierarchical=True)
    assert spec.names == list(ARTEFACT_FINE) and spec.ignore_index == 255
    assert spec.levels["coarse"].names == ["clean", "structural", "surface", "additions"]
    seen = np.zeros(16, int)
    for p in items:
        labels = np.unique(p.target)
        seen[labels[labels < 16]] += 1
        clean = read_array(folder / "target" / f"{p.name}.png")
        # Pixels labelled clean are untouched; every damaged pixel differs somewhere in the set.
        np.testing.assert_array_equal(p.input[p.target == 0], clean[p.target == 0])
    assert (seen[1:] >= 2).all(), seen  # every damage type appears in at least two pictures
    assert any((p.target == 255).any() for p in items)  # the ignored mount
    assert max(max(p.input.shape[:2]) for p in items) <= 384


def test_damage_painting_is_deterministic():
    photo = np.random.default_rng(0).random((64, 80, 3)).astype(np.float32)
    a, ma = paint_damage(photo, seed=9, index=3)
    b, mb = paint_damage(photo, seed=9, index=3)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(ma, mb)
    changed = np.any(a != photo, axis=2)
    assert changed[ma == 0].sum() == 0 and changed[(ma > 0) & (ma < 255)].mean() > 0.5


def test_matte_alpha_mask_and_composite():
    folder = ensure_sample("matte")
    items = load_mattes(folder)
    assert len(items) == 10
    fractional = 0
    for p in items:
        a = p.target[:, :, 0]
        m = read_mask(folder / "masks" / f"{p.name}.png")
        np.testing.assert_array_equal(m, (a >= 128).astype(np.uint8))
        fractional += int(((a > 0) & (a < 255)).sum())
        assert 0.01 < (a > 127).mean() < 0.9
    assert fractional > 1000  # soft edges, not a hard cut-out
    spec, seg = load_segmentation(folder)
    assert spec.names == ["background", "foreground"] and len(seg) == 10


@pytest.mark.parametrize("name", ["damage", "matte"])
def test_rebuild_is_byte_identical(tmp_path, name):
    a = ensure_sample(name, root=tmp_path / "a")
    ref = ensure_sample(name)
    for sub in ("masks",):
        for f in sorted((ref / sub).iterdir())[:3]:
            assert (a / sub / f.name).read_bytes() == f.read_bytes()
