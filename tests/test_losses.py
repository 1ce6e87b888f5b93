"""Loss components (minimum at identical inputs, gradients, bf16 autocast), create() and presets.

The perceptual components (lpips, vgg) need trunk weights and are covered with
generated weight files in test_losses_perceptual.py.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from platform.errors import ConfigError
from platform.losses import LOSSES, HybridLoss, create, create_hierarchical, register_loss
from platform.metrics import psnr, ssim
from platform.pretrained import WeightsUnavailableError

IMAGE_CASES = {
    "l1": {},
    "mse": {},
    "charbonnier": {},
    "psnr": {},
    "ssim": {},
    "ms_ssim": {"weights": [0.5, 0.5]},  # two scales: 48-px crops are enough
    "laplacian": {},
    "sobel": {},
    "fft": {},
}
SEGMENTATION_CASES = ("bce", "ce", "dice", "focal", "tversky", "lovasz")
PERCEPTUAL = ("lpips", "vgg")
DISTILLATION = ("distill_kl", "distill_output")  # student vs teacher outputs: tests/test_distill.py


def test_every_registered_loss_is_covered():
    assert set(LOSSES.available()) == set(IMAGE_CASES) | set(SEGMENTATION_CASES) | set(PERCEPTUAL) | set(DISTILLATION)


def _images(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    target = torch.rand(2, 3, 48, 48, generator=g) * 2 - 1
    pred = (target + 0.3 * torch.randn(2, 3, 48, 48, generator=g)).clamp(-1, 1)
    return pred, target


def _minimum(name: str) -> float:
    return float(LOSSES.meta(name).get("minimum", 0.0))


@pytest.mark.parametrize("name", sorted(IMAGE_CASES))
def test_image_loss_minimum_positive_gradient_autocast(name):
    module = LOSSES.get(name)(**IMAGE_CASES[name])
    pred, target = _images()
    minimum = _minimum(name)
    assert float(module(target, target)) == pytest.approx(minimum, abs=1e-5)
    leaf = pred.clone().requires_grad_(True)
    value = module(leaf, target)
    assert value.dtype == torch.float32 and value.ndim == 0
    assert float(value.detach()) > minimum + 1e-3
    value.backward()
    assert torch.isfinite(leaf.grad).all() and leaf.grad.abs().sum() > 0
    # Gradient at the minimum is finite too (sqrt / abs / powers at zero difference).
    same = target.clone().requires_grad_(True)
    module(same, target).backward()
    assert torch.isfinite(same.grad).all()
    # bf16 network output under CPU autocast.
    leaf = pred.clone().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value_bf16 = module(leaf.to(torch.bfloat16), target)
    value_bf16.backward()
    assert value_bf16.dtype == torch.float32 and math.isfinite(float(value_bf16.detach()))
    assert float(value_bf16.detach()) == pytest.approx(float(value.detach()), rel=0.05, abs=0.05)
    assert torch.isfinite(leaf.grad).all()


def _binary_case(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    target = (torch.rand(2, 32, 32, generator=g) > 0.6).long()
    perfect = ((2 * target - 1) * 30.0).float().unsqueeze(1)
    wrong = torch.randn(2, 1, 32, 32, generator=g)
    return perfect, wrong, target


def _multiclass_case(seed: int = 0, classes: int = 4):
    g = torch.Generator().manual_seed(seed)
    target = torch.randint(0, classes, (2, 32, 32), generator=g)
    perfect = F.one_hot(target, classes).permute(0, 3, 1, 2).float() * 30.0 - 15.0
    wrong = torch.randn(2, classes, 32, 32, generator=g)
    return perfect, wrong, target


@pytest.mark.parametrize("mode", ["binary", "multiclass"])
@pytest.mark.parametrize("name", SEGMENTATION_CASES)
def test_segmentation_loss_minimum_positive_gradient_autocast(name, mode):
    if name == "ce" and mode == "binary":
        with pytest.raises(ValueError, match="at least 2 logit channels"):
            LOSSES.get("ce")()(*_binary_case()[1:])
        return
    perfect, wrong, target = _binary_case() if mode == "binary" else _multiclass_case()
    module = LOSSES.get(name)()
    assert float(module(perfect, target)) == pytest.approx(0.0, abs=1e-4)
    leaf = wrong.clone().requires_grad_(True)
    value = module(leaf, target)
    assert float(value.detach()) > 0.05
    value.backward()
    assert torch.isfinite(leaf.grad).all() and leaf.grad.abs().sum() > 0
    leaf = wrong.clone().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value_bf16 = module(leaf.to(torch.bfloat16), target)
    value_bf16.backward()
    assert value_bf16.dtype == torch.float32
    assert float(value_bf16.detach()) == pytest.approx(float(value.detach()), rel=0.05)
    assert torch.isfinite(leaf.grad).all()


def test_segmentation_losses_match_references_with_ignore_index():
    from segmentation_models_pytorch.losses import DiceLoss as SmpDice

    _, logits, target = _multiclass_case(1)
    target[:, :4] = 255
    valid = target != 255
    # ce == torch's cross-entropy over the valid pixels only.
    ref_ce = F.cross_entropy(logits.permute(0, 2, 3, 1)[valid], target[valid])
    assert float(LOSSES.get("ce")(ignore_index=255)(logits, target)) == pytest.approx(float(ref_ce), rel=1e-5)
    # dice is smp's DiceLoss.
    ref_dice = SmpDice("multiclass", ignore_index=255)(logits, target)
    assert float(LOSSES.get("dice")(ignore_index=255)(logits, target)) == pytest.approx(float(ref_dice), rel=1e-5)
    # bce (binary): mean over the non-ignored pixels only (smp's SoftBCE would dilute it).
    _, blogits, btarget = _binary_case(1)
    btarget[:, :5] = 255
    bvalid = btarget != 255
    ref_bce = F.binary_cross_entropy_with_logits(blogits[:, 0][bvalid], btarget[bvalid].float())
    assert float(LOSSES.get("bce")(ignore_index=255)(blogits, btarget)) == pytest.approx(float(ref_bce), rel=1e-5)
    # Ignored pixels do not matter at all.
    changed = blogits.clone()
    changed[:, :, :5] = 100.0
    assert float(LOSSES.get("bce")(ignore_index=255)(changed, btarget)) == pytest.approx(float(ref_bce), rel=1e-5)
    with pytest.raises(ValueError, match="label 255"):
        LOSSES.get("dice")()(logits, target)


def test_loss_values_tie_to_metrics_and_docstrings():
    pred, target = _images(3)
    # psnr loss = minus the PSNR in dB (NAFNet convention on a unit scale).
    value = LOSSES.get("psnr")()(pred, target)
    assert float(value) == pytest.approx(-float(psnr(pred, target, data_range=2.0)), abs=1e-3)
    assert float(LOSSES.get("ssim")()(pred, target)) == pytest.approx(1 - float(ssim(pred, target, data_range=2.0)),
                                                                      abs=1e-6)
    # Laplacian level weighting: a constant offset lives only in the low-pass residual (weight 1).
    assert float(LOSSES.get("laplacian")()(target + 0.3, target)) == pytest.approx(0.3, abs=1e-5)
    lap = LOSSES.get("laplacian")(levels=3, level_weights=[1.0, 0.0, 0.0])
    assert float(lap(target + 0.3, target)) == pytest.approx(0.0, abs=1e-5)


def test_crops_too_small_for_ssim_windows_are_config_errors():
    pred, target = _images()
    with pytest.raises(ConfigError, match="loss component 'ms_ssim'.*shorter side must exceed 160.*weights="):
        LOSSES.get("ms_ssim")()(pred, target)
    with pytest.raises(ConfigError, match="loss component 'ssim'.*smaller than the 11x11 window"):
        LOSSES.get("ssim")()(pred[..., :8, :8], target[..., :8, :8])


def test_create_weights_parts_and_total():
    loss = create({"l1": 1.0, "laplacian": 0.5, "ssim": 0.2, "mse": 0, "fft": 0.0})
    assert isinstance(loss, HybridLoss)
    assert loss.weights == {"l1": 1.0, "laplacian": 0.5, "ssim": 0.2}
    assert loss.dropped == {}
    pred, target = _images(4)
    leaf = pred.clone().requires_grad_(True)
    total, parts = loss(leaf, target)
    assert set(parts) == {"l1", "laplacian", "ssim"}
    assert all(not p.requires_grad for p in parts.values())
    expected = sum(loss.weights[k] * parts[k] for k in parts)
    assert float(total.detach()) == pytest.approx(float(expected), rel=1e-6)
    assert float(parts["l1"]) == pytest.approx(float(F.l1_loss(pred, target)), rel=1e-6)
    total.backward()
    assert torch.isfinite(leaf.grad).all()
    total0, _parts0 = loss(target, target)
    assert float(total0) == pytest.approx(0.0, abs=1e-6)


def test_zero_weight_component_is_never_built(tmp_path, monkeypatch):
    monkeypatch.setenv("PLATFORM_PRETRAINED_DIR", str(tmp_path))  # empty store: no LPIPS trunk
    loss = create({"l1": 1.0, "lpips": 0.0, "vgg": {"weight": 0, "layers": ["relu1_2"]}})
    assert loss.weights == {"l1": 1.0} and list(loss.components) == ["l1"]
    with pytest.raises(WeightsUnavailableError, match="alexnet-owt-7be5be79.pth"):
        create({"l1": 1.0, "lpips": 0.1})


def test_allow_unavailable_drops_and_records(tmp_path, monkeypatch):
    monkeypatch.setenv("PLATFORM_PRETRAINED_DIR", str(tmp_path))
    loss = create({"l1": 1.0, "lpips": 0.1, "vgg": 0.2}, allow_unavailable=True)
    assert loss.weights == {"l1": 1.0}
    assert set(loss.dropped) == {"lpips", "vgg"}
    assert "alexnet-owt-7be5be79.pth" in loss.dropped["lpips"]
    assert "vgg16-397923af.pth" in loss.dropped["vgg"]
    _total, parts = loss(*_images())
    assert set(parts) == {"l1"}
    with pytest.raises(ConfigError, match="no loss component is left"):
        create({"lpips": 1.0}, allow_unavailable=True)


def test_config_errors_name_the_component():
    with pytest.raises(ConfigError, match=r"unknown loss function 'l2'.*Registered loss functions: .*charbonnier.*ssim"):
        create({"l1": 1.0, "l2": 0.5})
    with pytest.raises(ConfigError, match="unknown loss function 'lapacian'"):
        create({"l1": 1.0, "lapacian": 0.0})  # typos fail even with weight 0
    with pytest.raises(ConfigError, match=r"loss component 'ssim': weight must be a non-negative number, got -0.2"):
        create({"l1": 1.0, "ssim": -0.2})
    with pytest.raises(ConfigError, match="loss component 'l1': weight"):
        create({"l1": True})
    with pytest.raises(ConfigError, match="loss component 'l1': weight"):
        create({"l1": "1.0"})
    with pytest.raises(ConfigError, match=r"'laplacian' \(laplacian\): unknown option\(s\) 'level'.*levels"):
        create({"laplacian": {"weight": 1.0, "level": 3}})
    with pytest.raises(ConfigError, match="'sobel'.*mode must be"):
        create({"sobel": {"mode": "diagonal"}})
    assert create({"l1": np.float32(0.5)}).weights == {"l1": 0.5}  # numpy scalars from samplers are fine
    with pytest.raises(ConfigError, match="every weight"):
        create({"l1": 0.0})
    with pytest.raises(ConfigError, match="non-empty mapping"):
        create({})
    with pytest.raises(ConfigError, match="input must be one of"):
        create({"sobel": {"input": "tanh"}})


def test_type_key_allows_two_instances_and_presets():
    loss = create({"edges": {"type": "sobel", "weight": 0.3}, "edge_mag": {"type": "sobel", "mode": "magnitude"}})
    assert loss.weights == {"edges": 0.3, "edge_mag": 1.0}
    assert loss.spec["edge_mag"]["mode"] == "magnitude"
    assert create("l1").weights == {"l1": 1.0}
    with pytest.raises(ConfigError, match="presets: background_removal, vfx_hybrid"):
        create("nope")


def test_sigmoid_input_scores_a_segmentation_head_with_image_losses():
    perfect, wrong, target = _binary_case(2)
    loss = create({"bce": 1.0, "dice": 1.0, "sobel": {"weight": 0.3, "input": "sigmoid"},
                   "l1": {"weight": 1.0, "input": "sigmoid"}})
    total, parts = loss(perfect, target)
    assert all(float(v) < 1e-4 for v in parts.values()), parts
    leaf = wrong.clone().requires_grad_(True)
    total, parts = loss(leaf, target)
    # l1 on the sigmoid images equals the hand computation.
    ref = (2 * torch.sigmoid(wrong[:, 0]) - 1 - (2 * target - 1)).abs().mean()
    assert float(parts["l1"]) == pytest.approx(float(ref), rel=1e-5)
    total.backward()
    assert torch.isfinite(leaf.grad).all()
    # multiclass heads use the softmax adapter.
    mperfect, _, mtarget = _multiclass_case(2)
    total, parts = create({"l1": {"input": "softmax"}})(mperfect, mtarget)
    assert float(total) < 1e-4


def test_hierarchical_loss_matches_weighted_smp_dice():
    from segmentation_models_pytorch.losses import DiceLoss as SmpDice

    g = torch.Generator().manual_seed(5)
    preds = {"binary": torch.randn(2, 2, 16, 16, generator=g), "coarse": torch.randn(2, 4, 16, 16, generator=g),
             "fine": torch.randn(2, 16, 16, 16, generator=g)}
    targets = {"binary": torch.randint(0, 2, (2, 16, 16), generator=g),
               "coarse": torch.randint(0, 4, (2, 16, 16), generator=g),
               "fine": torch.randint(0, 16, (2, 16, 16), generator=g)}
    loss = create_hierarchical({"binary": 0.2, "coarse": 0.3, "fine": 0.5}, base={"dice": 1.0})
    assert loss.weights == {"binary": 0.2, "coarse": 0.3, "fine": 0.5}
    total, parts = loss(preds, targets)
    ref = {k: SmpDice("multiclass")(preds[k], targets[k]) for k in preds}
    for k in preds:
        assert float(parts[k]) == pytest.approx(float(ref[k]), rel=1e-5)
    expected = 0.2 * ref["binary"] + 0.3 * ref["coarse"] + 0.5 * ref["fine"]
    assert float(total.detach()) == pytest.approx(float(expected), rel=1e-5)
    # Default weights are 0.2 / 0.3 / 0.5; a zero-weight level is skipped; per-level specs work.
    assert create_hierarchical().weights == {"binary": 0.2, "coarse": 0.3, "fine": 0.5}
    two = create_hierarchical({"binary": 0.0, "coarse": 1.0, "fine": 1.0},
                              base={"coarse": {"ce": 1.0}, "fine": {"dice": 1.0, "focal": 0.5}})
    total, parts = two({k: preds[k] for k in ("coarse", "fine")}, targets)
    assert set(parts) == {"coarse", "fine"}
    assert float(parts["coarse"]) == pytest.approx(float(F.cross_entropy(preds["coarse"], targets["coarse"])),
                                                   rel=1e-5)
    with pytest.raises(ValueError, match="predictions have no level 'fine'"):
        loss({"binary": preds["binary"], "coarse": preds["coarse"]}, targets)
    with pytest.raises(ConfigError, match="hierarchical loss level 'fine'"):
        create_hierarchical({"binary": 0.2, "fine": -1})


def test_register_loss_decorator_adds_a_component():
    name = "test_only_abs_mean"

    @register_loss(name, kind="image")
    class AbsMean(torch.nn.Module):
        def __init__(self, scale: float = 1.0):
            super().__init__()
            self.scale = scale

        def forward(self, pred, target):
            return self.scale * (pred - target).abs().mean()

    try:
        assert LOSSES.meta(name) == {"kind": "image", "pretrained": False}
        loss = create({name: {"weight": 2.0, "scale": 3.0}})
        total, parts = loss(torch.ones(1, 1, 2, 2), torch.zeros(1, 1, 2, 2))
        assert float(parts[name]) == 3.0 and float(total) == 6.0
    finally:
        LOSSES._items.pop(name, None)
        LOSSES._meta.pop(name, None)
