"""Zoo models the end-to-end searches do not train (the architecture battle trains the six
image-to-image families) go through the common trainer: one short epoch each."""

from __future__ import annotations

import pytest
import torch

from platform.config import load_spec
from platform.train.loop import train_loop
from platform.train.session import Session

SEGMENTATION = [("seg_unet", "convnext_tiny"), ("seg_upernet", "swin_tiny"), ("resnet50_unet", None)]


def _run(space: str, overrides: dict, tmp_path, quick: bool = True) -> dict:
    spec = load_spec(space, quick=quick, overrides=overrides)
    session = Session(tmp_path / "ckpt")
    train_loop(spec.config, session)
    return session.reports[-1]


@pytest.mark.parametrize("arch,size", SEGMENTATION)
def test_segmentation_model_trains(arch, size, tmp_path):
    report = _run("artefact_encoders", {
        "task": {"crop": 64, "crops_per_epoch": 4, "batch_size": 2, "val_max_side": 64, "val_tile": None,
                 "augment": {"offline_copies": 0}},
        "model": {"architecture": arch, "size": size}, "train": {"epochs": 1, "image_every": 1}}, tmp_path)
    assert torch.isfinite(torch.tensor(report["train_loss"])) and 0 <= report["val_miou"] <= 1


def test_hierarchical_model_trains(tmp_path):
    report = _run("artefact_hierarchical", {
        "task": {"crop": 64, "crops_per_epoch": 4, "batch_size": 2, "val_max_side": 64, "val_tile": None,
                 "augment": {"offline_copies": 0}, "level_weights": {"binary": 0.2, "coarse": 0.3, "fine": 0.5}},
        "model": {"architecture": "hierarchical_upernet", "size": "convnext_tiny"}, "optimizer": {"lr": 1.0e-3},
        "train": {"epochs": 1, "image_every": 1}}, tmp_path)
    assert {"train_loss/binary", "train_loss/coarse", "train_loss/fine"} <= set(report)
    assert 0 <= report["val_miou_fine"] <= 1


@pytest.mark.parametrize("preset", ["nafnet-gopro-width32", "nafnet-sidd-width32"])
def test_official_nafnet_configuration_trains(preset, tmp_path):
    report = _run("nafnet_fewshot", {
        "task": {"crop": 32, "crops_per_epoch": 2, "batch_size": 2, "val_max_side": 64},
        "model": {"architecture": preset, "size": None},  # the full space: no quick-profile options
        "loss": {"l1": 1.0, "lpips": 0.0, "laplacian": 0.5, "ssim": 0.2}, "optimizer": {"lr": 1.0e-3},
        "train": {"epochs": 1, "image_every": 1}}, tmp_path, quick=False)
    assert torch.isfinite(torch.tensor(report["train_loss"])) and report["val_psnr"] > 0
