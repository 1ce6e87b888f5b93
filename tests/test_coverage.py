"""The colours a model trained on (``platform.coverage``) and ``platform.predict``'s warning on frames outside them."""

from __future__ import annotations

import logging

import imageio.v3 as iio
import numpy as np
import pytest
import skimage.data

from platform import coverage
from platform.predict import predict
from test_inference_helpers import save_checkpoint, tiny_config, tiny_model


def test_cells_by_hand():
    img = np.array([[[0.01, 0.01, 0.01], [0.99, 0.0, 0.0]],
                    [[0.5, 0.5, 0.5], [1.0, 0.0625, 0.1]]], np.float32)
    # cell = (r * 16 + g) * 16 + b with 16 levels a channel; 1.0 falls in the top cell
    assert coverage.colour_cells(img).tolist() == [0, 15 * 256, 8 * 256 + 8 * 16 + 8, 15 * 256 + 1 * 16 + 1]
    assert coverage.colour_cells((img * 255).round().astype(np.uint8)).tolist() == \
        coverage.colour_cells(img).tolist()
    grey = np.array([[0.0, 0.5]], np.float32)  # grey frames count as R = G = B, with or without a channel axis
    assert coverage.colour_cells(grey).tolist() == [0, 8 * 256 + 8 * 16 + 8]
    assert coverage.colour_cells(grey[:, :, None]).tolist() == [0, 8 * 256 + 8 * 16 + 8]
    rgba = np.concatenate([img, np.zeros_like(img[:, :, :1])], axis=2)  # alpha is not a colour
    assert coverage.colour_cells(rgba).tolist() == coverage.colour_cells(img).tolist()


def test_unseen_share_by_hand():
    seen = coverage.occupancy([np.array([[[0.1, 0.2, 0.3], [0.9, 0.9, 0.9]]], np.float32)])
    assert seen.sum() == 2
    frame = np.array([[[0.11, 0.21, 0.31], [0.92, 0.93, 0.91], [0.5, 0.2, 0.3], [0.0, 0.0, 1.0]]], np.float32)
    assert coverage.unseen_share(frame, seen) == pytest.approx(0.5)


def test_large_frames_are_measured_on_a_grid_within_a_point_of_the_whole():
    seen = coverage.occupancy([np.full((1, 1, 3), 0.5, np.float32)])
    frame = np.full((1080, 1920, 3), 0.5, np.float32)
    frame[:, :733] = 0.95  # 38.2% of the frame in a cell never seen, in a band the grid cuts unevenly
    check = coverage.FrameCheck({coverage.KEY: coverage.encode(seen)})
    check.update("f", frame)
    assert coverage.unseen_share(frame, seen) == pytest.approx(733 / 1920)
    assert check.shares["f"] == pytest.approx(733 / 1920, abs=0.01)


def test_stored_form_round_trips_and_bad_forms_read_as_none():
    rng = np.random.default_rng(0)
    seen = rng.random(16 ** 3) < 0.3
    stored = coverage.encode(seen)
    assert stored["bins"] == 16 and len(stored["occupied"]) == 1024  # 4096 bits as hex
    assert np.array_equal(coverage.decode(stored), seen)
    for bad in (None, {}, {"bins": 16, "occupied": "zz"}, {"bins": 16, "occupied": "00" * 10}, {"bins": "x"}):
        assert coverage.decode(bad) is None


def test_warning_names_the_worst_frames():
    assert coverage.unseen_warning({"a.png": 0.05, "b.png": 0.1}) is None  # at the threshold: quiet
    text = coverage.unseen_warning({"a.png": 0.05, "b.png": 0.52, "c.png": 0.2})
    assert text.startswith("2 of 3 frames") and "b.png 52%, c.png 20%" in text and "a.png" not in text


@pytest.fixture(scope="module")
def cat():
    return skimage.data.chelsea()[40:120, 60:180]


def _checkpoint(folder, train_frames):
    config = tiny_config(crop=64)
    if train_frames is not None:
        config[coverage.KEY] = coverage.encode(coverage.occupancy(train_frames))
    save_checkpoint(folder, tiny_model(config), config)
    return folder


def test_predict_warns_on_frames_outside_the_training_colours(cat, tmp_path, caplog):
    ckpt = _checkpoint(tmp_path / "ckpt", [cat])
    frames = tmp_path / "frames"
    frames.mkdir()
    iio.imwrite(frames / "0001.png", cat)  # the training frame itself
    wheel = skimage.data.colorwheel()[::4, ::4, :3]  # saturated hues a cat photo lacks
    iio.imwrite(frames / "0002.png", wheel)
    want = coverage.unseen_share(wheel, coverage.occupancy([cat]))
    assert want > 0.5
    lines = []
    with caplog.at_level(logging.WARNING, logger="platform.predict"):
        res = predict(str(ckpt), frames, tmp_path / "out", progress=False, report=lines.append)
    assert res.unseen_colours == {"0001.png": 0.0, "0002.png": pytest.approx(want)}
    assert any(line.startswith("colours") and f"{want:.1%}" in line for line in lines), lines
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and warned[0].startswith("1 of 2 frames") and f"0002.png {want:.0%}" in warned[0]


def test_models_without_stored_colours_predict_without_the_check(cat, tmp_path, caplog):
    ckpt = _checkpoint(tmp_path / "ckpt", None)  # a model trained before the colours were stored
    iio.imwrite(tmp_path / "in.png", skimage.data.colorwheel()[::4, ::4, :3])
    lines = []
    with caplog.at_level(logging.WARNING, logger="platform.predict"):
        res = predict(str(ckpt), tmp_path / "in.png", tmp_path / "out.png", progress=False, report=lines.append)
    assert res.unseen_colours == {} and not any(line.startswith("colours") for line in lines)
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]
