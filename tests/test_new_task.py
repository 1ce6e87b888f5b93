"""A new task in one file: greyscale to colour.

The task (and an output kind that gives grey frames back in colour) is defined and registered
here and nowhere else; it runs through a quick search (Ray workers import this file through
``PLATFORM_TASK_MODULES``), ``predict`` and ONNX export, with no other file of the project changed.
Input: a grey copy of a photo from scikit-image (three equal channels), target: the colour photo.

Only numpy, torch, scikit-image and ``platform`` at module level: Ray workers import this file.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from platform.data.paired import Pair, to_model_range
from platform.tasks import Task, register_output_kind, register_task
from platform.tasks.base import split_items
from platform.tasks.outputs import ImageOutput

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry")
SIDE = (72, 96)  # every photo resized to 72 x 96 (small and fast; larger than the crops)
LUMA = np.array([0.2126, 0.7152, 0.0722])


def grey3(rgb: np.ndarray) -> np.ndarray:
    """Rec. 709 luma of a uint8 RGB photo, as three equal uint8 channels."""
    y = np.rint(rgb.astype(np.float64) @ LUMA).clip(0, 255).astype(np.uint8)
    return np.repeat(y[:, :, None], 3, axis=2)


def photo(name: str) -> np.ndarray:
    import skimage.data
    import skimage.transform

    img = skimage.transform.resize(getattr(skimage.data, name)(), SIDE, anti_aliasing=True)
    return np.rint(img * 255).astype(np.uint8)


@register_output_kind("colourise")
class ColourOutput(ImageOutput):
    """An image output that gives a grey (one-channel) frame back in colour."""

    name = "colourise"

    def decode(self, y, alpha, colour):
        return super().decode(y, alpha, colour=3)


@register_task("grey_to_colour", kind="colourise", metric="val_psnr", mode="max")
class GreyToColourTask(Task):
    """Grey photo in, colour photo out; its data are scikit-image's photos (``task.data`` is not read)."""

    kind = "colourise"
    metric_names = ("val_psnr",)
    photometric_on = "input"  # colour jitter would change what the target's colours are

    def load(self) -> None:
        items = [Pair(name, grey3(rgb), rgb) for name, rgb in ((n, photo(n)) for n in PHOTOS)]
        self.train_items, self.val_items_ = split_items(items, self.config)

    def model_kwargs(self) -> dict:
        return {"in_channels": 3, "out_channels": 3}

    def score(self, out, x_np, y_np, device, lpips_fn=None) -> dict:
        from platform import metrics

        y = to_model_range(y_np)[None].to(device)
        return {"val_psnr": float(metrics.psnr(out, y, data_range=2.0))}


# --------------------------------------------------------------------------- the task alone (fast)
def test_the_validation_template_scores_every_held_out_photo():
    """The base class's validate loop with this task's score: PSNR of an identity network (the grey
    input) against the colour target, summed over the held-out photos, as scikit-image computes it."""
    from skimage.metrics import peak_signal_noise_ratio

    from platform import tasks

    task = tasks.create("grey_to_colour", {"crop": 32, "crops_per_epoch": 8, "val_holdout": 2})
    assert [p.name for p in task.val_items_] and len(task.train_items) == 3
    res = task.validate(torch.nn.Identity(), torch.device("cpu"))
    want = sum(peak_signal_noise_ratio(p.target, p.input, data_range=255) for p in task.val_items_)
    assert res.count == 2
    assert res.sums["val_psnr"] == pytest.approx(want, abs=1e-3)
    assert tasks.output_kind({"task": {"name": "grey_to_colour"}}).name == "colourise"
    batch = next(iter(torch.utils.data.DataLoader(task.train_dataset(), batch_size=2)))
    assert [tuple(t.shape) for t in batch[:2]] == [(2, 3, 32, 32)] * 2


# --------------------------------------------------------------------------- search, predict, export
@pytest.mark.slow
def test_new_task_runs_through_search_predict_and_export(tmp_cwd, monkeypatch):
    from mlflow.tracking import MlflowClient

    from platform.data.io import read_image
    from platform.export import export
    from platform.inference import InferenceOptions
    from platform.predict import predict, write_image
    from platform.pyfunc import load_any
    from platform.search import SearchOptions, run_search
    from platform.search.presets import cpu_nafnet
    from platform.tasks import predictor

    overrides = cpu_nafnet({
        "name": "grey_colour",
        "task": {"name": "grey_to_colour", "data": str(tmp_cwd), "crop": 48, "crops_per_epoch": 16,
                 "batch_size": 4, "val_holdout": 2, "val_max_side": None},
        "model": {"options": {"width": 8}},
        "loss": {"l1": 1.0, "lpips": 0.0, "laplacian": 0.0, "ssim": 0.0},
        "optimizer": {"lr": 1.0e-3},
        "train": {"epochs": 2, "image_every": 2},
        "search": {"max_concurrent": 1},
        "promotion": {"floors": False},
    })
    # The search forwards PLATFORM_TASK_MODULES to its Ray workers, which import this file.
    monkeypatch.setenv("PLATFORM_TASK_MODULES", os.path.abspath(__file__))
    out = run_search(SearchOptions("nafnet_fewshot", quick=True, max_trials=1, overrides=overrides))
    assert len(out.rows) == 1 and out.rows[0]["stop"] == "completed", out.rows
    history = MlflowClient().get_metric_history(out.rows[0]["run_id"], "val_psnr")
    assert [m.step for m in history] == [1, 2] and all(np.isfinite(m.value) for m in history)
    assert out.promotion.version == "1"

    # predict: a one-channel grey PNG of a held-out photo comes back in colour, as the Predictor says.
    grey = grey3(photo("coffee"))[:, :, :1]
    write_image(tmp_cwd / "grey.png", grey.astype(np.float32) / 255, "uint8")
    res = predict("models:/grey_colour@champion", tmp_cwd / "grey.png", tmp_cwd / "colour.png", progress=False,
                  report=lambda *_: None)
    assert res.frames == 1
    written = read_image(tmp_cwd / "colour.png")
    assert written.shape == (*SIDE, 3)
    loaded = load_any("models:/grey_colour@champion", "cpu")
    assert loaded.config["task"]["name"] == "grey_to_colour"
    want = predictor(loaded.model, loaded.config, "cpu", InferenceOptions()).run(grey.astype(np.float32) / 255)
    assert want["image"].shape == (*SIDE, 3)
    assert np.abs(written - want["image"]).max() <= 1 / 255 + 1e-6  # 8-bit rounding

    # ONNX export: the graph's output matches PyTorch on a real photo; metadata names the new kind.
    import onnx

    report = export("models:/grey_colour@champion", "onnx", tmp_cwd / "grey_colour.onnx", report=lambda *_: None)
    assert report.outputs == ["output"] and report.max_abs_diff < 1e-4
    meta = {p.key: p.value for p in onnx.load(str(tmp_cwd / "grey_colour.onnx")).metadata_props}
    assert meta["platform.task_kind"] == "colourise"
