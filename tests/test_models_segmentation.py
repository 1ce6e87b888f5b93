"""Segmentation models and timm encoders: accepted sizes, pretrained weights through the store,
no network with pretrained=False, the hierarchical (binary/coarse/fine) model, ConvNeXt U-Net options."""

from __future__ import annotations

import pytest
import timm
import torch

from platform.errors import ConfigError
from platform.models import create
from platform.pretrained import WeightsUnavailableError


@pytest.fixture
def store(tmp_path, monkeypatch):
    (tmp_path / "timm").mkdir()
    monkeypatch.setenv("PLATFORM_PRETRAINED_DIR", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path


@pytest.fixture
def no_downloads(monkeypatch):
    """Fail loudly if anything asks timm to load pretrained weights."""
    import timm.models._builder as builder

    def refuse(*args, **kwargs):
        raise AssertionError("timm tried to load pretrained weights")

    monkeypatch.setattr(builder, "load_pretrained", refuse)


def test_pretrained_encoder_comes_from_the_store(store):
    torch.manual_seed(3)
    reference = timm.create_model("convnext_tiny").state_dict()
    torch.save(reference, store / "timm" / "convnext_tiny.pth")
    model = create("seg_unet", size="convnext_tiny", pretrained=True)
    encoder = model.net.encoder.model.state_dict()  # timm FeatureListNet names: stem_0, stages_3...
    assert torch.equal(encoder["stem_0.weight"], reference["stem.0.weight"])
    assert torch.equal(encoder["stages_3.blocks.2.mlp.fc2.weight"], reference["stages.3.blocks.2.mlp.fc2.weight"])


def test_pretrained_convnext_unet_adapts_input_channels(store):
    torch.manual_seed(4)
    reference = timm.create_model("convnext_nano").state_dict()
    torch.save(reference, store / "timm" / "convnext_nano.pth")
    model = create("convnext_unet", size="nano", pretrained=True, in_channels=4)
    stem = model.encoder.stem_0.weight
    assert stem.shape == (80, 4, 4, 4)
    assert torch.equal(model.encoder.stages_2.blocks[0].conv_dw.weight, reference["stages.2.blocks.0.conv_dw.weight"])


def test_missing_pretrained_weights_raise_a_user_error(store):
    with pytest.raises(WeightsUnavailableError, match="timm/resnet50.pth"):
        create("resnet50_unet", pretrained=True)


def test_pretrained_false_never_loads_weights(no_downloads):
    with torch.device("meta"):
        for name, size in [("seg_unet", "swin_tiny"), ("seg_upernet", "maxvit_tiny"), ("hierarchical_upernet", "coatnet_0"),
                           ("resnet50_unet", None), ("convnext_unet", "nano")]:
            create(name, size=size)


def test_coatnet_accepts_only_its_img_size():
    model = create("seg_unet", size="coatnet_0", img_size=64, classes=3).eval()
    assert model.size_multiple == 64 and model.fixed_size == 64
    with torch.no_grad():
        assert model(torch.randn(1, 3, 50, 64)).shape == (1, 3, 50, 64)  # padded to 64x64 inside
    with pytest.raises(ConfigError, match="accepts exactly 64x64 inputs.*img_size=96"):
        model(torch.randn(1, 3, 64, 70))


def test_maxvit_accepts_multiples_of_its_img_size():
    model = create("seg_upernet", size="maxvit_tiny", img_size=64, classes=2).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 128)).shape == (1, 2, 64, 128)
        assert model(torch.randn(1, 3, 65, 64)).shape == (1, 2, 65, 64)  # padded to 128x64


def test_img_size_errors():
    with pytest.raises(ConfigError, match="multiple of 32"):
        create("seg_unet", size="maxvit_tiny", img_size=100)
    with pytest.raises(ConfigError, match="img_size only applies"):
        create("seg_unet", size="convnext_tiny", img_size=256)


def test_hierarchical_model_shares_one_encoder():
    torch.manual_seed(0)
    model = create("hierarchical_upernet", size="convnext_tiny", classes=16).eval()
    assert sorted(model.net.heads) == ["binary", "coarse", "fine"]
    assert sum(1 for m in model.modules() if isinstance(m, timm.models.FeatureListNet)) == 1
    x = torch.randn(1, 3, 45, 70)
    with torch.no_grad():
        out = model(x)
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "binary": (1, 2, 45, 70), "coarse": (1, 4, 45, 70), "fine": (1, 16, 45, 70)}
    # the three heads read the same decoder features: zeroing one head changes only its output
    with torch.no_grad():
        for p in model.net.heads["coarse"].parameters():
            p.zero_()
        out2 = model(x)
    assert out2["coarse"].abs().max() == 0
    assert torch.equal(out2["binary"], out["binary"]) and torch.equal(out2["fine"], out["fine"])


def test_resnet50_unet_is_binary_by_default():
    with torch.device("meta"):
        model = create("resnet50_unet")
    assert model.net.segmentation_head[0].out_channels == 1


def test_convnext_unet_drop_path():
    with torch.device("meta"):
        tiny = create("convnext_unet", size="tiny")
        base = create("convnext_unet", size="base", drop_path_rate=0.3)
        none = create("convnext_unet", size="nano", drop_path_rate=0.0)
    # timm's stochastic depth grows linearly to drop_path_rate at the last block
    assert tiny.encoder.stages_3.blocks[-1].drop_path.drop_prob == pytest.approx(0.10)
    assert base.encoder.stages_3.blocks[-1].drop_path.drop_prob == pytest.approx(0.3)
    assert isinstance(none.encoder.stages_3.blocks[-1].drop_path, torch.nn.Identity)
    with pytest.raises(ConfigError, match="drop_path_rate"):
        create("convnext_unet", drop_path_rate=1.5)


@pytest.mark.parametrize("size", ["mobilenetv3_small", "resnet18"])
def test_seg_fpn_lite_is_a_small_student(size, no_downloads):
    """The distillation student: binary logits at any input size, far fewer parameters than the teachers."""
    import segmentation_models_pytorch as smp

    model = create("seg_fpn_lite", size=size).eval()
    with torch.no_grad():
        out = model(torch.rand(1, 3, 70, 100))
    assert out.shape == (1, 1, 70, 100)
    assert isinstance(model.net, smp.FPN)
    params = sum(p.numel() for p in model.parameters())
    with torch.device("meta"):
        teacher = sum(p.numel() for p in create("seg_unet", size="convnext_tiny", classes=1).parameters())
        resnet50 = sum(p.numel() for p in create("resnet50_unet").parameters())
    assert params < min(teacher, resnet50) / (25 if size == "mobilenetv3_small" else 2.5)


def test_seg_fpn_lite_classes_and_bad_widths():
    with torch.device("meta"):
        model = create("seg_fpn_lite", classes=3, segmentation_channels=64)
    assert model.net.segmentation_head[0].out_channels == 3
    with pytest.raises(ConfigError, match="pyramid_channels"):
        create("seg_fpn_lite", pyramid_channels=0)
    with pytest.raises(ConfigError, match="multiple of 32"):
        create("seg_fpn_lite", segmentation_channels=16)
