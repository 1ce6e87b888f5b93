"""Segmentation/matting data: class YAMLs, hierarchy maps, and the errors users see (each names the file)."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from platform.data.formats import write_array, write_mask
from platform.data.segmentation import (
    ARTEFACT_COARSE,
    ARTEFACT_FINE,
    hierarchical_targets,
    load_class_spec,
    load_mattes,
    load_segmentation,
)
from platform.errors import ConfigError, DataError
from platform.tasks import create as create_task

RNG = np.random.default_rng(3)


def _seg_folder(root, names=("a", "b", "c"), size=(40, 48), classes=("bg", "cat", "dog"), ignore=255, mask_names=None,
                hierarchy=None):
    for n in names:
        write_array(root / "images" / f"{n}.png", RNG.integers(0, 256, size=(*size, 3), dtype=np.uint8))
    for n in (mask_names or names):
        m = RNG.integers(0, len(classes), size=size).astype(np.uint8)
        if ignore is not None:
            m[:2] = ignore
        write_mask(root / "masks" / f"{n}.png", m)
    meta = {"classes": list(classes), "ignore_index": ignore}
    if hierarchy is not None:
        meta["hierarchy"] = hierarchy
    (root / "data.yaml").write_text(yaml.safe_dump(meta))
    return root


def _task(name, folder, **extra):
    cfg = {"data": str(folder), "crop": 16, "crops_per_epoch": 4, "val_holdout": 1, "augment": {}, **extra}
    return create_task(name, cfg, seed=0)


def test_classes_and_items_load(tmp_path):
    _seg_folder(tmp_path)
    spec, items = load_segmentation(tmp_path)
    assert spec.names == ["bg", "cat", "dog"] and spec.ignore_index == 255
    assert [p.name for p in items] == ["a", "b", "c"]
    assert items[0].input.dtype == np.uint8 and items[0].target.shape == (40, 48)
    task = _task("segmentation", tmp_path)
    assert task.model_kwargs() == {"in_channels": 3, "classes": 3}
    assert task.default_loss()["ce"]["ignore_index"] == 255
    x, y = task.train_dataset()[0]
    assert x.shape == (3, 16, 16) and y.shape == (16, 16) and y.dtype.is_floating_point is False


def test_binary_masks_without_yaml_accept_0_255(tmp_path):
    for n in ("a", "b"):
        write_array(tmp_path / "image" / f"{n}.png", RNG.integers(0, 256, size=(20, 20, 3), dtype=np.uint8))
        m = np.zeros((20, 20), np.uint8)
        m[5:15, 5:15] = 255
        write_mask(tmp_path / "mask" / f"{n}.png", m)
    spec, items = load_segmentation(tmp_path)
    assert spec.names == ["background", "foreground"]
    assert set(np.unique(items[0].target)) == {0, 1}
    task = _task("segmentation", tmp_path)
    assert task.model_kwargs()["classes"] == 1 and "val_iou" in task.metric_names


def test_no_images(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    with pytest.raises(DataError, match="contains no images"):
        load_segmentation(tmp_path)


def test_unmatched_names_are_listed(tmp_path):
    _seg_folder(tmp_path, names=("a", "b", "c"), mask_names=("a", "x", "c"))
    with pytest.raises(DataError) as e:
        load_segmentation(tmp_path)
    assert "b.png" in str(e.value) and "x.png" in str(e.value)


def test_truncated_mask_is_named(tmp_path):
    _seg_folder(tmp_path)
    p = tmp_path / "masks" / "b.png"
    p.write_bytes(p.read_bytes()[:40])
    with pytest.raises(DataError, match="b.png"):
        load_segmentation(tmp_path)


def test_image_smaller_than_crop(tmp_path):
    _seg_folder(tmp_path, size=(12, 30))
    with pytest.raises(DataError, match="smaller than the crop size 16"):
        _task("segmentation", tmp_path).train_dataset()


def test_mask_class_outside_declared_classes(tmp_path):
    _seg_folder(tmp_path)
    m = np.zeros((40, 48), np.uint8)
    m[3, 3] = 7
    write_mask(tmp_path / "masks" / "c.png", m)
    with pytest.raises(DataError) as e:
        load_segmentation(tmp_path)
    assert "c.png" in str(e.value) and "7" in str(e.value) and "0..2" in str(e.value)


def test_mask_size_differs_from_image(tmp_path):
    _seg_folder(tmp_path)
    write_mask(tmp_path / "masks" / "a.png", np.zeros((40, 47), np.uint8))
    with pytest.raises(DataError, match=r"masks/a.png is 47x40 but its image a.png is 48x40"):
        load_segmentation(tmp_path)


def test_unknown_class_map(tmp_path):
    _seg_folder(tmp_path, hierarchy="artefact_v9")
    with pytest.raises(DataError) as e:
        load_class_spec(tmp_path, hierarchical=True)
    assert "data.yaml" in str(e.value) and "artefact_v9" in str(e.value) and "artefact" in str(e.value)


def test_inline_class_map_errors(tmp_path):
    bad_member = {"coarse": {"bg": ["bg"], "pet": ["cat", "dgo"]}, "binary": {"no": ["bg"], "yes": ["cat", "dog"]}}
    _seg_folder(tmp_path, hierarchy=bad_member)
    with pytest.raises(DataError, match="'dgo', which is not a declared class"):
        load_class_spec(tmp_path, hierarchical=True)
    bad_level = {"coarse": {"bg": ["bg"], "pet": ["cat", "dog"]}, "medium": {"x": ["bg", "cat", "dog"]}}
    (tmp_path / "data.yaml").write_text(yaml.safe_dump({"classes": ["bg", "cat", "dog"], "hierarchy": bad_level}))
    with pytest.raises(DataError, match="unknown class map level"):
        load_class_spec(tmp_path, hierarchical=True)
    missing = {"coarse": {"bg": ["bg"], "pet": ["cat"]}, "binary": {"no": ["bg"], "yes": ["cat", "dog"]}}
    (tmp_path / "data.yaml").write_text(yaml.safe_dump({"classes": ["bg", "cat", "dog"], "hierarchy": missing}))
    with pytest.raises(DataError, match="does not place fine class"):
        load_class_spec(tmp_path, hierarchical=True)
    (tmp_path / "data.yaml").write_text(yaml.safe_dump({"classes": ["bg", "cat", "dog"]}))
    with pytest.raises(DataError, match="needs class maps for coarse, binary"):
        load_class_spec(tmp_path, hierarchical=True)


def test_hierarchy_maps_fine_to_coarse_and_binary(tmp_path):
    h = {"coarse": {"bg": ["bg"], "pet": ["cat", "dog"]}, "binary": {"no": ["bg"], "yes": ["cat", "dog"]}}
    _seg_folder(tmp_path, hierarchy=h)
    spec = load_class_spec(tmp_path, hierarchical=True)
    fine = np.array([[0, 1, 2, 255]], np.uint8)
    t = hierarchical_targets(spec)(fine)
    assert t["fine"].tolist() == [[0, 1, 2, 255]]
    assert t["coarse"].tolist() == [[0, 1, 1, 255]] and t["binary"].tolist() == [[0, 1, 1, 255]]
    task = _task("hierarchical_segmentation", tmp_path)
    assert task.model_kwargs() == {"in_channels": 3, "classes": 3, "coarse_classes": 2, "binary_classes": 2}
    _x, y = task.train_dataset()[0]
    assert set(y) == {"binary", "coarse", "fine"} and y["fine"].shape == (16, 16)
    # Every level's labels are the class map of the fine labels of the same crop.
    lut = spec.levels["coarse"].lut
    np.testing.assert_array_equal(y["coarse"].numpy(), lut[y["fine"].numpy()])


def test_builtin_artefact_map():
    assert len(ARTEFACT_FINE) == 16 and len(ARTEFACT_COARSE) == 4
    assert sorted(c for g in ARTEFACT_COARSE.values() for c in g) == sorted(ARTEFACT_FINE)


def test_mattes_load_and_check(tmp_path):
    for n in ("a", "b"):
        write_array(tmp_path / "images" / f"{n}.png", RNG.integers(0, 256, size=(20, 24, 3), dtype=np.uint8))
        write_array(tmp_path / "alpha" / f"{n}.png", RNG.integers(0, 256, size=(20, 24, 1), dtype=np.uint8))
    items = load_mattes(tmp_path)
    assert items[0].target.shape == (20, 24, 1)
    write_array(tmp_path / "alpha" / "b.png", np.zeros((20, 23, 1), np.uint8))
    with pytest.raises(DataError, match="alpha/b.png is 23x20"):
        load_mattes(tmp_path)


@pytest.mark.parametrize("task", ["segmentation", "matting"])
def test_image_to_image_only_options_are_refused_for_masks_and_mattes(task):
    from platform.tasks import create

    data = "sample:damage" if task == "segmentation" else "sample:matte"
    with pytest.raises(ConfigError, match="only img2img applies a transfer function"):
        create(task, {"data": data, "crop": 32, "transfer": {"name": "log", "max_value": 16}}, seed=0)
    with pytest.raises(ConfigError, match="task.alpha is keep"):
        create(task, {"data": data, "crop": 32, "alpha": "keep"}, seed=0)
