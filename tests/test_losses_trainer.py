"""Every registered loss trains through the common trainer: one short epoch under bf16 autocast,
a finite loss reported as its own component, and gradients that moved the weights."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from platform.config import load_spec
from platform.losses import LOSSES
from platform.models import MODELS, register_model
from platform.search.presets import cpu_nafnet
from platform.train.loop import build_model, load_checkpoint_state, train_loop
from platform.train.session import Session


class _TinySeg(nn.Module):
    size_multiple = 1

    def __init__(self, in_channels=3, classes=2):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(in_channels, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, classes, 1))

    def forward(self, x):
        return self.net(x)


if "_test_loss_seg" not in MODELS:
    @register_model("_test_loss_seg", kind="segmentation")
    def _loss_seg(size=None, in_channels=3, classes=2, **_):
        return _TinySeg(in_channels, classes)

IMAGE = [n for n in LOSSES.available() if LOSSES.meta(n)["kind"] == "image"]
SEGMENTATION = [n for n in LOSSES.available() if LOSSES.meta(n)["kind"] == "segmentation"]


@pytest.fixture(scope="module")
def trunks(tmp_path_factory):
    """torchvision-layout AlexNet and VGG16 trunks in a private store (random values: these tests
    check that the losses train, never what LPIPS or VGG would score)."""
    root = tmp_path_factory.mktemp("pretrained")
    (root / "torchvision").mkdir()
    torch.manual_seed(0)
    torch.save(torchvision.models.alexnet(weights=None).state_dict(), root / "torchvision/alexnet-owt-7be5be79.pth")
    features = torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs["D"])
    torch.save({f"features.{k}": v for k, v in features.state_dict().items()},
               root / "torchvision/vgg16-397923af.pth")
    return root


def _moved(config: dict, checkpoint) -> float:
    torch.manual_seed(int(config["train"]["seed"]))
    init = build_model({**config, "_model_kwargs": load_checkpoint_state(checkpoint)["config"]["_model_kwargs"]})
    trained = load_checkpoint_state(checkpoint)["model"]
    return max(float((trained[k] - v).abs().max()) for k, v in init.state_dict().items() if v.is_floating_point())


def _check(config: dict, name: str, tmp_path) -> None:
    session = Session(tmp_path / "ckpt")
    train_loop(config, session)
    report = session.reports[-1]
    assert torch.isfinite(torch.tensor(report["train_loss"])), report
    assert f"train_loss/{name}" in report and torch.isfinite(torch.tensor(report[f"train_loss/{name}"]))
    assert _moved(config, session.checkpoints[-1]) > 0, f"{name}: no gradient reached the weights"


@pytest.mark.parametrize("name", IMAGE)
def test_image_loss_trains_through_the_trainer(name, trunks, tmp_path, monkeypatch, one_thread):
    monkeypatch.setenv("PLATFORM_PRETRAINED_DIR", str(trunks))
    crop, batch = (176, 2) if name == "ms_ssim" else (32, 4)  # MS-SSIM's 5 scales need > 160 px
    loss = {"l1": 0.0, "lpips": 0.0, "laplacian": 0.0, "ssim": 0.0, name: 1.0}
    spec = load_spec("nafnet_fewshot", quick=True, overrides=cpu_nafnet({
        "task": {"crop": crop, "crops_per_epoch": 2 * batch, "batch_size": batch, "val_max_side": 64},
        "model": {"options": {"width": 8}}, "loss": loss, "optimizer": {"lr": 1.0e-3},
        "train": {"epochs": 1, "precision": "bf16", "image_every": 1}}))
    _check(spec.config, name, tmp_path)


@pytest.mark.parametrize("name", SEGMENTATION)
def test_segmentation_loss_trains_through_the_trainer(name, tmp_path, one_thread):
    spec = load_spec("artefact_encoders", quick=True, overrides={
        "task": {"crop": 32, "crops_per_epoch": 8, "batch_size": 4, "val_max_side": 64, "val_tile": None,
                 "augment": {"offline_copies": 0}},
        "model": {"architecture": "_test_loss_seg", "size": None},
        "loss": {"dice": 0.0, name: 1.0}, "optimizer": {"lr": 1.0e-3},
        "train": {"epochs": 1, "precision": "bf16", "image_every": 1}})
    _check(spec.config, name, tmp_path)
