"""Augmentation pipelines (paired geometry, photometric input-only/both, offline copies) and splits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from platform.config import SCHEMA, Field
from platform.data.augment import DEFAULTS, OFFLINE_OPS, PairedAugment, apply_dihedral, concrete
from platform.data.paired import CropDataset, Pair, split_pairs
from platform.data.splits import kfold_indices, split_names
from platform.errors import ConfigError, DataError
from platform.tasks.base import with_offline_copies

RNG = np.random.default_rng(11)
ALL_GEOMETRY = {"hflip": 0.5, "vflip": 0.5, "rotate90": 0.5,
                "shift_scale_rotate": {"p": 1.0, "shift": 0.1, "scale": 0.2, "rotate": 30}}


def _labels(h=32, w=32):
    """A label image and an RGB image that encodes it, so geometry can be checked pixel by pixel."""
    m = np.zeros((h, w), np.uint8)
    m[4:14, 6:20] = 1
    m[18:28, 3:9] = 2
    m[20:30, 20:30] = 3
    img = np.stack([m / 3.0, m / 3.0, m / 3.0], axis=2).astype(np.float32)
    return img, m


def test_schema_defaults_match_the_pipeline():
    schema = SCHEMA["task"]["augment"]

    def defaults(node):
        return {k: (defaults(v) if isinstance(v, dict) else v.default) for k, v in node.items()}

    assert defaults(schema) == DEFAULTS
    assert all(isinstance(v, (Field, dict)) for v in schema.values())


def test_geometry_is_identical_on_image_and_mask():
    img, m = _labels()
    aug = PairedAugment(ALL_GEOMETRY, target_kind="mask")
    changed = 0
    for seed in range(20):
        a, b = aug(img, m, seed)
        assert b.dtype == np.uint8 and set(np.unique(b)) <= {0, 1, 2, 3}  # nearest: no new labels
        # The image is the mask in disguise: away from edges (bilinear blending) they must agree.
        decoded = np.round(a[..., 0] * 3).astype(np.uint8)
        interior = (np.abs(np.gradient(decoded.astype(float))[0]) + np.abs(np.gradient(decoded.astype(float))[1])) == 0
        assert (decoded[interior] == b[interior]).mean() > 0.98
        changed += not np.array_equal(b, m)
    assert changed >= 15


def test_augmentation_is_a_pure_function_of_the_seed():
    img, m = _labels()
    aug = PairedAugment({**ALL_GEOMETRY, "brightness_contrast": {"p": 1.0}, "noise": {"p": 1.0, "std": 0.05}},
                        target_kind="mask")
    a1, b1 = aug(img, m, 123)
    a2, b2 = aug(img, m, 123)
    np.testing.assert_array_equal(a1, a2)
    np.testing.assert_array_equal(b1, b2)
    a3, _ = aug(img, m, 124)
    assert not np.array_equal(a1, a3)


def test_photometric_input_only_or_both():
    img = RNG.random((24, 24, 3)).astype(np.float32)
    cfg = {"hflip": 0, "vflip": 0, "rotate90": 0, "brightness_contrast": {"p": 1.0, "brightness": 0.3, "contrast": 0.3}}
    a, b = PairedAugment({**cfg, "photometric_on": "input"}, target_kind="image")(img, img.copy(), 5)
    assert not np.allclose(a, img) and np.array_equal(b, img)
    a, b = PairedAugment({**cfg, "photometric_on": "both"}, target_kind="image")(img, img.copy(), 5)
    assert not np.allclose(a, img)
    np.testing.assert_array_equal(a, b)  # same random parameters on both
    # Degradations never touch the target, whatever photometric_on says.
    a, b = PairedAugment({**cfg, "brightness_contrast": {"p": 0.0}, "photometric_on": "both",
                          "noise": {"p": 1.0, "std": 0.1}}, target_kind="image")(img, img.copy(), 5)
    assert not np.allclose(a, img) and np.array_equal(b, img)
    # A mask is never recoloured.
    assert PairedAugment({"photometric_on": "both"}, target_kind="mask").photometric_on == "input"


def test_extra_albumentations_transforms_and_errors():
    img, m = _labels()
    aug = PairedAugment({"extra": [{"type": "ElasticTransform", "p": 1.0}, {"type": "RandomGamma", "p": 1.0}]},
                        target_kind="mask")
    a, b = aug(img, m, 1)
    assert a.shape == img.shape and b.shape == m.shape
    with pytest.raises(ConfigError, match="not an albumentations image transform"):
        PairedAugment({"extra": [{"type": "NoSuchThing"}]})
    with pytest.raises(ConfigError, match="unknown key"):
        PairedAugment({"hflipp": 0.5})
    with pytest.raises(ConfigError, match="probability"):
        PairedAugment({"hflip": 1.5})


def test_searchable_leaves_resolve_to_a_plain_value():
    assert concrete({"uniform": [0.1, 0.5]}) == 0.1 and concrete({"choice": ["a", "b"]}) == "a"
    aug = PairedAugment({"hflip": {"uniform": [0.0, 1.0]}, "blur": {"p": {"choice": [0.2]}, "max_kernel": 5}})
    assert aug.config["hflip"] == 0.0 and aug.config["blur"]["p"] == 0.2


def test_offline_copies_are_exact_and_only_for_training():
    img, m = _labels(16, 20)
    pairs = [Pair("a", img, m), Pair("b", img[::-1].copy(), m[::-1].copy())]
    out = with_offline_copies(pairs, 3)  # + hflip, + vflip, + rot90
    assert [p.name for p in out] == ["a", "b", "a~hflip", "b~hflip", "a~vflip", "b~vflip", "a~rot90", "b~rot90"]
    np.testing.assert_array_equal(out[2].target, m[:, ::-1])
    np.testing.assert_array_equal(out[6].input, np.rot90(img))
    for op in OFFLINE_OPS:  # every copy keeps input and target aligned
        np.testing.assert_array_equal(np.round(apply_dihedral(img, op)[..., 0] * 3).astype(np.uint8),
                                      apply_dihedral(m, op))
    with pytest.raises(ConfigError, match="between 0 and 7"):
        with_offline_copies(pairs, 8)


def test_crop_dataset_with_pipeline_is_deterministic_per_epoch():
    img, m = _labels(40, 48)
    ds = CropDataset([Pair("a", (img * 255).astype(np.uint8), m)], crop=16, length=6, seed=2,
                     augment=PairedAugment(ALL_GEOMETRY, target_kind="mask"), target_kind="mask")
    x1, y1 = ds[3]
    assert torch.equal(ds[3][0], x1) and torch.equal(ds[3][1], y1) and y1.dtype == torch.int64
    ds.set_epoch(1)
    assert not torch.equal(ds[3][0], x1)


# ----------------------------------------------------------------------------------- splits
NAMES = [f"f{i:02d}" for i in range(10)]


def test_kfold_partitions_the_items():
    folds = kfold_indices(10, 3, seed=4)
    assert sorted(i for f in folds for i in f) == list(range(10))
    assert sorted(len(f) for f in folds) == [3, 3, 4]
    vals = []
    for k in range(3):
        train, val = split_names(NAMES, folds=3, fold=k, seed=4)
        assert not set(train) & set(val) and sorted(train + val) == NAMES
        vals.append(set(val))
    assert set().union(*vals) == set(NAMES)
    assert split_names(NAMES, folds=3, fold=1, seed=4) == split_names(NAMES, folds=3, fold=1, seed=4)
    assert split_names(NAMES, folds=3, fold=1, seed=5) != split_names(NAMES, folds=3, fold=1, seed=4)


def test_fraction_and_holdout():
    train, val = split_names(NAMES, fraction=0.3, seed=1)
    assert len(val) == 3 and len(train) == 7
    assert split_names(NAMES, holdout=2) == (NAMES[:8], NAMES[8:])
    assert split_names(NAMES, holdout=["f03"])[1] == ["f03"]
    pairs = [Pair(n, np.zeros((2, 2, 3)), np.zeros((2, 2, 3))) for n in NAMES]
    tr, va = split_pairs(pairs, 2, folds=5, fold=0)
    assert len(va) == 2 and len(tr) == 8


@pytest.mark.parametrize("kwargs,match", [
    (dict(folds=11), "only 10 items"),
    (dict(folds=3, fold=3), "between 0 and 2"),
    (dict(fraction=1.0), "strictly between 0 and 1"),
    (dict(holdout=10), "hold out between 0 and 9"),
    (dict(holdout=["nope"]), "nope"),
])
def test_bad_splits(kwargs, match):
    with pytest.raises(DataError, match=match):
        split_names(NAMES, **kwargs)
