"""LPIPS and VGG perceptual losses with trunk files written to a temporary pretrained store.

No real ImageNet weights are available offline, so the tests save randomly initialised
torchvision AlexNet / VGG16 state dicts under the real file names and check that
exactly those tensors are loaded, that LPIPS uses the linear layers shipped with the
``lpips`` package, and that a missing file is an error naming the file (never a silent
random trunk).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import torchvision

import platform.metrics.image as metrics_image
from platform.errors import ConfigError
from platform.losses import LOSSES, create
from platform.losses.perceptual import build_lpips, lpips_linear_weights_path
from platform.metrics import lpips as lpips_metric
from platform.pretrained import WeightsUnavailableError

ALEX = "torchvision/alexnet-owt-7be5be79.pth"
VGG16 = "torchvision/vgg16-397923af.pth"


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("pretrained")
    (root / "torchvision").mkdir()
    torch.manual_seed(0)
    # The full torchvision AlexNet checkpoint layout (features + classifier), as shipped.
    torch.save(torchvision.models.alexnet(weights=None).state_dict(), root / ALEX)
    # VGG16: only the ``features`` part (what is read); built with torchvision's own layout
    # function to skip initialising the 120M classifier parameters.
    features = torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs["D"])
    torch.save({f"features.{k}": v for k, v in features.state_dict().items()}, root / VGG16)
    return root


@pytest.fixture
def use_store(store, monkeypatch):
    monkeypatch.setenv("PLATFORM_PRETRAINED_DIR", str(store))
    # Any attempt to download would be a bug: make it fail loudly.
    def no_download(*args, **kwargs):
        raise AssertionError("tried to download weights")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)
    monkeypatch.setattr(metrics_image, "_LPIPS_CACHE", {})
    return store


def _images(seed: int = 0, size: int = 64):
    g = torch.Generator().manual_seed(seed)
    target = torch.rand(2, 3, size, size, generator=g) * 2 - 1
    pred = (target + 0.3 * torch.randn(2, 3, size, size, generator=g)).clamp(-1, 1)
    return pred, target


def test_lpips_loads_store_trunk_and_shipped_linear_layers(use_store):
    model = build_lpips("alex")
    assert model.trunk_path == (use_store / ALEX).resolve()
    saved = torch.load(use_store / ALEX, weights_only=True)
    net_state = model.net.state_dict()
    for name, tensor in net_state.items():  # sliceK.I.param == features.I.param
        _, index, param = name.split(".", 2)
        assert torch.equal(tensor, saved[f"features.{index}.{param}"]), name
    assert len(net_state) == 10  # 5 conv layers, weight + bias
    shipped = torch.load(lpips_linear_weights_path("alex"), map_location="cpu", weights_only=True)
    assert len(shipped) == 5
    for name, tensor in shipped.items():
        assert torch.equal(model.state_dict()[name], tensor), name
    assert not any(p.requires_grad for p in model.parameters())


@pytest.mark.filterwarnings("ignore::UserWarning:torchvision")
def test_lpips_value_equals_the_package_model_with_the_same_trunk(use_store):
    import lpips as lpips_pkg

    # Reference: the package's own loading of its linear layers, trunk copied from a
    # torchvision AlexNet that loaded the same file.
    ref = lpips_pkg.LPIPS(net="alex", pretrained=True, pnet_rand=True, verbose=False)
    alex = torchvision.models.alexnet(weights=None)
    alex.load_state_dict(torch.load(use_store / ALEX, weights_only=True))
    for slice_ in (ref.net.slice1, ref.net.slice2, ref.net.slice3, ref.net.slice4, ref.net.slice5):
        for index, module in slice_.named_children():
            module.load_state_dict(alex.features[int(index)].state_dict())
    pred, target = _images()
    loss = LOSSES.get("lpips")()
    expected = ref(pred, target).mean()
    assert float(loss(pred, target).detach()) == pytest.approx(float(expected.detach()), rel=1e-5)
    per_image = lpips_metric(pred, target, data_range=2.0, reduction="none")
    assert torch.allclose(per_image, ref(pred, target).flatten(), rtol=1e-5)
    # [0, 1] inputs with data_range 1 are mapped to [-1, 1] first.
    assert torch.allclose(lpips_metric((pred + 1) / 2, (target + 1) / 2, data_range=1.0, reduction="none"),
                          per_image, rtol=1e-5)


def test_missing_trunk_is_an_error_naming_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("PLATFORM_PRETRAINED_DIR", str(tmp_path))
    monkeypatch.setattr(metrics_image, "_LPIPS_CACHE", {})
    with pytest.raises(WeightsUnavailableError, match="alexnet-owt-7be5be79.pth") as info:
        LOSSES.get("lpips")()
    assert str(tmp_path) in str(info.value)
    with pytest.raises(WeightsUnavailableError, match="vgg16-397923af.pth"):
        LOSSES.get("lpips")(net="vgg")
    with pytest.raises(WeightsUnavailableError, match="alexnet-owt-7be5be79.pth"):
        lpips_metric(*_images(), data_range=2.0)
    with pytest.raises(WeightsUnavailableError, match="vgg16-397923af.pth"):
        LOSSES.get("vgg")()


def test_wrong_or_corrupt_file_is_refused(store, tmp_path, monkeypatch):
    (tmp_path / "torchvision").mkdir()
    # A VGG checkpoint under AlexNet's name: shapes do not fit.
    (tmp_path / ALEX).write_bytes((store / VGG16).read_bytes())
    monkeypatch.setenv("PLATFORM_PRETRAINED_DIR", str(tmp_path))
    with pytest.raises(WeightsUnavailableError, match="alexnet"):
        build_lpips("alex")
    (tmp_path / ALEX).write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsUnavailableError, match="could not be read"):
        build_lpips("alex")


@pytest.mark.parametrize("name,options", [("lpips", {}), ("lpips", {"net": "vgg"}), ("vgg", {}),
                                          ("vgg", {"layers": ["conv3_3"], "criterion": "mse"})])
def test_perceptual_losses_minimum_gradient_autocast(use_store, name, options):
    module = LOSSES.get(name)(**options)
    pred, target = _images(1, size=32)
    assert float(module(target, target)) == pytest.approx(0.0, abs=1e-6)
    leaf = pred.clone().requires_grad_(True)
    value = module(leaf, target)
    assert value.dtype == torch.float32 and float(value.detach()) > 0
    value.backward()
    assert torch.isfinite(leaf.grad).all() and leaf.grad.abs().sum() > 0
    leaf = pred.clone().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value_bf16 = module(leaf.to(torch.bfloat16), target)
    value_bf16.backward()
    assert value_bf16.dtype == torch.float32
    assert float(value_bf16.detach()) == pytest.approx(float(value.detach()), rel=0.1)
    assert torch.isfinite(leaf.grad).all()
    # One-channel inputs (masks) are repeated to RGB.
    assert float(module(pred[:, :1], target[:, :1]).detach()) > 0


def test_perceptual_nets_stay_frozen_in_train_mode(use_store):
    loss = create({"lpips": 1.0, "vgg": 1.0})
    loss.train()
    lpips_model = loss.components["lpips"].model
    assert not lpips_model.training and not any(m.training for m in lpips_model.modules())
    pred, target = _images(2)
    a, _ = loss(pred, target)
    b, _ = loss(pred, target)
    assert float(a) == float(b)  # LPIPS's dropout would make these differ in training mode
    assert not any(p.requires_grad for p in loss.parameters())


def test_vgg_layers_are_configurable_and_match_a_manual_computation(use_store):
    module = LOSSES.get("vgg")(layers=["relu2_2"])
    assert len(module.features) == 9  # built only up to relu2_2 (features[8])
    ref = torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs["D"])
    saved = torch.load(use_store / VGG16, weights_only=True)
    ref.load_state_dict({k[len("features."):]: v for k, v in saved.items()})
    pred, target = _images(3)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    feats = lambda x: ref[:9](((x + 1) / 2 - mean) / std)
    expected = F.l1_loss(feats(pred), feats(target))
    assert float(module(pred, target).detach()) == pytest.approx(float(expected.detach()), rel=1e-5)
    with pytest.raises(ConfigError, match=r"unknown layer\(s\) \['relu9_9'\].*relu1_2"):
        create({"vgg": {"weight": 0.1, "layers": ["relu9_9"]}})


def test_background_removal_preset(use_store):
    loss = create("background_removal")
    assert loss.weights == {"bce": 1.0, "dice": 1.0, "vgg": 0.5, "sobel": 0.3}
    assert loss.inputs["vgg"] == loss.inputs["sobel"] == "sigmoid"
    g = torch.Generator().manual_seed(4)
    mask = (torch.rand(2, 48, 48, generator=g) > 0.5).long()
    perfect = ((2 * mask - 1) * 30.0).float().unsqueeze(1)
    total, parts = loss(perfect, mask)
    assert float(total) < 1e-3
    logits = torch.randn(2, 1, 48, 48, generator=g, requires_grad=True)
    total, parts = loss(logits, mask)
    assert set(parts) == {"bce", "dice", "vgg", "sobel"} and float(total.detach()) > 0.5
    total.backward()
    assert torch.isfinite(logits.grad).all()


def test_vfx_hybrid_preset_and_allow_unavailable_keeps_available_trunks(use_store, tmp_path, monkeypatch):
    loss = create("vfx_hybrid")
    assert loss.weights == {"l1": 1.0, "lpips": 0.1, "laplacian": 0.5, "ssim": 0.2}
    total, parts = loss(*_images(5))
    assert set(parts) == set(loss.weights) and torch.isfinite(total)
    # Store with only the VGG file: lpips (alex) is dropped, vgg is kept.
    (tmp_path / "torchvision").mkdir()
    (tmp_path / VGG16).write_bytes((use_store / VGG16).read_bytes())
    monkeypatch.setenv("PLATFORM_PRETRAINED_DIR", str(tmp_path))
    partial = create({"l1": 1.0, "lpips": 0.1, "vgg": 0.1}, allow_unavailable=True)
    assert partial.weights == {"l1": 1.0, "vgg": 0.1}
    assert list(partial.dropped) == ["lpips"] and "alexnet-owt-7be5be79.pth" in partial.dropped["lpips"]
