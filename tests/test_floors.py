"""Quality floors: each floor's value against a hand or library computation on real photos."""

from __future__ import annotations

import numpy as np
import pytest
import skimage.data
from skimage.metrics import peak_signal_noise_ratio

from platform import floors, tasks
from platform.data.io import write_image
from platform.data.samples import colour_grade


def _photos(n: int = 5, side: int = 96) -> list[np.ndarray]:
    names = ["astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field"][:n]
    out = []
    for name in names:
        img = getattr(skimage.data, name)()[:side, :side].astype(np.float32) / 255.0
        out.append(img)
    return out


def _img2img(tmp_path, grade, noise: float = 0.0) -> object:
    rng = np.random.default_rng(0)
    for i, photo in enumerate(_photos()):
        x = np.clip(photo + noise * rng.standard_normal(photo.shape).astype(np.float32), 0, 1)
        write_image(tmp_path / "input" / f"{i}.png", x)
        write_image(tmp_path / "target" / f"{i}.png", grade(photo))
    return tasks.create("img2img", {"data": str(tmp_path), "crop": 32, "crops_per_epoch": 8, "val_holdout": 2})


def test_identity_floor_is_the_input_scored_against_the_target(tmp_path):
    task = _img2img(tmp_path, colour_grade, noise=0.03)
    scores = floors.floor_scores([task])
    want = np.mean([peak_signal_noise_ratio(y, x, data_range=1.0) for _, x, y in task.val_items()])
    assert scores["identity"]["val_psnr"] == pytest.approx(want, abs=1e-3)


def test_colour_floors_recover_global_grades(tmp_path):
    # A 13-term polynomial grade is recovered exactly by the polynomial floor; the smooth filmic
    # grade of the sample set (not a polynomial) by the 3D LUT to well under a 1/255 step.
    def poly(x):
        r, g, b = x[..., 0], x[..., 1], x[..., 2]
        return np.clip(np.stack([0.1 + 0.8 * r + 0.1 * g * b, 0.9 * g - 0.05 * r * r + 0.1 * b ** 3,
                                 0.05 + 0.7 * b + 0.2 * r * g], -1), 0, 1).astype(np.float32)

    scores = floors.floor_scores([_img2img(tmp_path / "poly", poly)])
    assert scores["poly_color"]["val_psnr"] > 48  # 8-bit files: quantisation is the only error
    graded = floors.floor_scores([_img2img(tmp_path / "grade", colour_grade)])
    assert graded["lut3d"]["val_psnr"] > 40 > graded["identity"]["val_psnr"] + 15


def test_lut_floor_is_a_lut3d_model_that_maps_colours_like_its_least_squares_fit():
    # Least squares of the trilinear design on exact samples of a LUT gives that LUT back.
    from platform.models.lut3d import LUT3D

    rng = np.random.default_rng(1)
    x = rng.random((20000, 3))
    y = np.stack([x[:, 0] ** 0.8, 0.5 * x[:, 1] + 0.5 * x[:, 2], x[:, 2] ** 2], 1)
    model = floors.fit_lut(x, y)
    assert isinstance(model, LUT3D) and model.is_pure_lut
    import torch

    probe = rng.random((1, 3, 8, 8)).astype(np.float32)
    with torch.no_grad():
        out = (model(torch.from_numpy(probe) * 2 - 1) + 1) / 2
    p = probe[0].transpose(1, 2, 0)
    truth = np.stack([p[..., 0] ** 0.8, 0.5 * p[..., 1] + 0.5 * p[..., 2], p[..., 2] ** 2], -1)
    assert np.abs(out[0].numpy().transpose(1, 2, 0) - truth).max() < 0.01


def _seg_sample(tmp_path, classes: int):
    rng = np.random.default_rng(0)
    (tmp_path / "images").mkdir(parents=True)
    (tmp_path / "masks").mkdir()
    import imageio.v3 as iio

    for i, photo in enumerate(_photos(6, 64)):
        mask = np.zeros((64, 64), np.uint8)
        mask[8 + i:40 + i, 10:50] = 1
        if classes > 2:
            mask[:6, :] = 2
        iio.imwrite(tmp_path / "images" / f"{i}.png", (photo * 255).astype(np.uint8))
        iio.imwrite(tmp_path / "masks" / f"{i}.png", mask)
    names = ["background", "object", "sky"][:classes]
    (tmp_path / "data.yaml").write_text("classes: [" + ", ".join(names) + "]\n")
    _ = rng
    return tasks.create("segmentation", {"data": str(tmp_path), "crop": 32, "crops_per_epoch": 8, "val_holdout": 2})


def test_segmentation_floors_match_a_hand_computed_confusion(tmp_path):
    task = _seg_sample(tmp_path, classes=3)
    scores = floors.floor_scores([task])
    # Class counts of the training masks decide the majority class.
    counts = floors.class_counts([p.target for p in task.train_items], 3, task.ignore_index)
    majority = int(np.argmax(counts))
    ious, accs = [], []
    for _, _, y in task.val_items():
        pred = np.full(y.shape, majority)
        per = [np.sum((pred == c) & (y == c)) / max(1, np.sum((pred == c) | (y == c)))
               for c in range(3) if np.any((pred == c) | (y == c))]
        ious.append(np.mean(per))
        accs.append(np.mean(pred == y))
    assert scores["majority"]["val_pixel_accuracy"] == pytest.approx(np.mean(accs), abs=1e-6)
    assert scores["majority"]["val_miou"] == pytest.approx(np.mean(ious), abs=1e-6)
    assert scores["background"]["val_pixel_accuracy"] == pytest.approx(
        np.mean([np.mean(y == 0) for _, _, y in task.val_items()]), abs=1e-6)


def test_matting_floors(tmp_path):
    import imageio.v3 as iio

    (tmp_path / "images").mkdir(parents=True)
    (tmp_path / "alpha").mkdir()
    for i, photo in enumerate(_photos(5, 64)):
        alpha = np.zeros((64, 64), np.float32)
        alpha[10:50, 12 + i:44 + i] = 1.0
        comp = photo * alpha[..., None] + np.array([0.1, 0.6, 0.2]) * (1 - alpha[..., None])  # a green screen
        iio.imwrite(tmp_path / "images" / f"{i}.png", (comp * 255 + 0.5).astype(np.uint8))
        iio.imwrite(tmp_path / "alpha" / f"{i}.png", (alpha * 255).astype(np.uint8))
    task = tasks.create("matting", {"data": str(tmp_path), "crop": 32, "crops_per_epoch": 8, "val_holdout": 2})
    scores = floors.floor_scores([task])
    sad = np.mean([np.sum(1 - y) / 1000 for _, _, y in task.val_items()])  # all-foreground: SAD = sum(1 - alpha)
    assert scores["foreground"]["val_sad"] == pytest.approx(sad, rel=1e-4)
    assert scores["color_distance"]["val_sad"] < 0.5 * scores["foreground"]["val_sad"]  # a key beats "all in"


def test_best_floor_ignores_non_finite_values():
    s = {"a": {"m": 1.0}, "b": {"m": float("nan")}, "c": {"m": 3.0}}
    assert floors.best_floor(s, "m", "max") == ("c", 3.0)
    assert floors.best_floor(s, "m", "min") == ("a", 1.0)
    assert floors.best_floor({}, "m", "max") is None
