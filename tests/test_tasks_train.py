"""Every task trains through the common trainer on its bundled sample and its validation metric moves
the right way (compared with the same network before training)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from platform import tasks
from platform.config import load_spec
from platform.models import MODELS, register_model
from platform.train import loop
from platform.train.loop import train_loop
from platform.train.session import Session


class TinySeg(nn.Module):
    """A few convolutions; one head, or the three hierarchical heads (binary, coarse, fine) when the level counts are given."""

    size_multiple = 4

    def __init__(self, in_channels=3, classes=2, coarse_classes=None, binary_classes=None, width=16):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(),
                                  nn.Conv2d(width, width, 3, padding=2, dilation=2), nn.ReLU(),
                                  nn.Conv2d(width, width, 3, padding=1), nn.ReLU())
        heads = {"fine": classes}
        if coarse_classes:
            heads.update(coarse=coarse_classes, binary=binary_classes)
        self.heads = nn.ModuleDict({k: nn.Conv2d(width, c, 1) for k, c in heads.items()})
        self.multi = bool(coarse_classes)

    def forward(self, x):
        f = self.body(x)
        out = {k: h(f) for k, h in self.heads.items()}
        return out if self.multi else out["fine"]


class TinyImg(nn.Module):
    size_multiple = 1

    def __init__(self, in_channels=3, out_channels=3, width=16):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(),
                                  nn.Conv2d(width, width, 3, padding=1), nn.ReLU(),
                                  nn.Conv2d(width, out_channels, 3, padding=1))
        self.residual = in_channels == out_channels

    def forward(self, x):
        y = self.body(x)
        return torch.tanh(x + y) if self.residual else torch.tanh(y)


if "_test_tiny_seg" not in MODELS:
    @register_model("_test_tiny_seg", kind="segmentation")
    def _tiny_seg(size=None, in_channels=3, classes=2, coarse_classes=None, binary_classes=None, width=16):
        return TinySeg(in_channels, classes, coarse_classes, binary_classes, width)

    @register_model("_test_tiny_img", kind="img2img")
    def _tiny_img(size=None, in_channels=3, out_channels=3, width=16):
        return TinyImg(in_channels, out_channels, width)


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Tiny networks run faster on one thread than on two busy ones."""


def _config(tmp_path, task: dict, arch: str, loss: dict, epochs: int, lr: float = 5e-3) -> dict:
    import yaml

    doc = {"name": "t", "task": task, "model": {"architecture": arch}, "loss": loss,
           "optimizer": {"lr": lr}, "schedule": {"warmup_epochs": 0, "min_lr": lr / 10},
           "train": {"epochs": epochs, "precision": "fp32", "image_every": epochs}}
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(doc))
    return load_spec(path).config


def _untrained(config: dict) -> dict:
    """Validation metrics of the network the trainer starts from (same seed, same init)."""
    task = tasks.create(config["task"]["name"], config["task"], seed=0)
    torch.manual_seed(0)
    model = loop.build_model(config, task.model_kwargs())
    res = task.validate(model, torch.device("cpu"), "fp32")
    return {k: v / res.count for k, v in res.sums.items()}


def _train(config: dict, tmp_path) -> list[dict]:
    session = Session(checkpoint_root=tmp_path / "ckpt")
    train_loop(config, session)
    return session.reports


def _saved_config(tmp_path) -> dict:
    import json

    return json.loads(max((tmp_path / "ckpt").glob("checkpoint_*/config.json")).read_text())


def _cells_by_hand(images) -> set[tuple[int, int, int]]:
    """The 16-level RGB cells of ``images`` (uint8 or float in [0, 1]), one pixel at a time."""
    import numpy as np

    out = set()
    for im in images:
        arr = im.astype(np.float64) / 255.0 if im.dtype == np.uint8 else im.astype(np.float64)
        for r, g, b in arr.reshape(-1, arr.shape[-1])[:, :3]:
            out.add(tuple(min(15, int(v * 16)) for v in (r, g, b)))
    return out


def test_img2img_restore(tmp_path):
    cfg = _config(tmp_path, {"name": "img2img", "data": "sample:restore", "crop": 48, "crops_per_epoch": 128,
                             "batch_size": 8, "val_holdout": 1, "val_max_side": 160}, "_test_tiny_img", {"l1": 1.0}, 6)
    before = _untrained(cfg)
    reports = _train(cfg, tmp_path)
    assert reports[-1]["val_psnr"] > before["val_psnr"] + 1.0
    assert reports[-1]["train_loss"] < reports[0]["train_loss"]
    # the checkpoint carries the colours of its training inputs (platform.predict checks new frames against them)
    from platform import coverage

    seen = coverage.decode(_saved_config(tmp_path)[coverage.KEY])
    task = tasks.create("img2img", cfg["task"], seed=0)
    assert {tuple(int(c) for c in divmod(i // 16, 16) + (i % 16,)) for i in seen.nonzero()[0]} == \
        _cells_by_hand(p.input for p in task.train_items)


def test_segmentation_background_removal(tmp_path):
    cfg = _config(tmp_path, {"name": "segmentation", "data": "sample:matte", "crop": 64, "crops_per_epoch": 128,
                             "batch_size": 8, "val_holdout": 2, "val_max_side": 128},
                  "_test_tiny_seg", {"bce": 1.0, "dice": 1.0}, 4)
    before = _untrained(cfg)
    reports = _train(cfg, tmp_path)
    last = reports[-1]
    assert last["val_iou"] > before["val_iou"] + 0.02
    assert last["val_miou"] > before["val_miou"]
    assert last["train_loss"] < reports[0]["train_loss"]
    assert "_input_coverage" not in _saved_config(tmp_path)  # hundreds of images: not scanned


def test_hierarchical_segmentation_damage(tmp_path):
    # Damage covers ~15% of the pixels: in a few seconds a tiny network learns the class layout of
    # each level (coarse/fine metrics rise from near 0), while its binary head still answers
    # "clean" everywhere, as the untrained one happens to (so binary may only stay level).
    cfg = _config(tmp_path, {"name": "hierarchical_segmentation", "data": "sample:damage", "crop": 64,
                             "crops_per_epoch": 256, "batch_size": 16, "val_holdout": 2, "val_max_side": 128,
                             "level_weights": {"binary": 0.2, "coarse": 0.3, "fine": 0.5}},
                  "_test_tiny_seg", {"ce": 1.0, "dice": 1.0}, 3)
    before = _untrained(cfg)
    reports = _train(cfg, tmp_path)
    last = reports[-1]
    assert {k for k in last if k.startswith("train_loss/")} == {"train_loss/binary", "train_loss/coarse",
                                                                   "train_loss/fine"}
    assert last["train_loss"] < reports[0]["train_loss"]
    for level in ("coarse", "fine"):
        assert last[f"val_miou_{level}"] > before[f"val_miou_{level}"] + 0.05
        assert last[f"val_pixel_accuracy_{level}"] > before[f"val_pixel_accuracy_{level}"]
    assert last["val_miou_binary"] >= before["val_miou_binary"] - 1e-6


def test_matting(tmp_path):
    cfg = _config(tmp_path, {"name": "matting", "data": "sample:matte", "crop": 64, "crops_per_epoch": 128,
                             "batch_size": 8, "val_holdout": 2, "val_max_side": 128},
                  "_test_tiny_img", {"l1": 1.0}, 4)
    before = _untrained(cfg)
    reports = _train(cfg, tmp_path)
    assert reports[-1]["val_sad"] < 0.8 * before["val_sad"]
    assert reports[-1]["val_mse"] < before["val_mse"]
