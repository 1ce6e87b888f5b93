"""NAFNet: official key layout, strict checkpoint loading, presets and TLC."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from platform.errors import ConfigError
from platform.models import MODELS, create, load_official_checkpoint, to_tlc
from platform.models.nafnet import NAFNET_PRESETS, LocalAvgPool2d, NAFNet

# Per-NAFBlock tensors of the official NAFNet_arch.py, written out by hand.
BLOCK_KEYS = {
    "conv1.weight": lambda c: (2 * c, c, 1, 1), "conv1.bias": lambda c: (2 * c,),
    "conv2.weight": lambda c: (2 * c, 1, 3, 3), "conv2.bias": lambda c: (2 * c,),
    "conv3.weight": lambda c: (c, c, 1, 1), "conv3.bias": lambda c: (c,),
    "sca.1.weight": lambda c: (c, c, 1, 1), "sca.1.bias": lambda c: (c,),
    "conv4.weight": lambda c: (2 * c, c, 1, 1), "conv4.bias": lambda c: (2 * c,),
    "conv5.weight": lambda c: (c, c, 1, 1), "conv5.bias": lambda c: (c,),
    "norm1.weight": lambda c: (c,), "norm1.bias": lambda c: (c,),
    "norm2.weight": lambda c: (c,), "norm2.bias": lambda c: (c,),
    "beta": lambda c: (1, c, 1, 1), "gamma": lambda c: (1, c, 1, 1),
}


def official_layout(width, enc, middle, dec, img_channel=3):
    """Key -> shape of the official NAFNet state dict, built from the architecture description."""
    keys = {"intro.weight": (width, img_channel, 3, 3), "intro.bias": (width,),
            "ending.weight": (img_channel, width, 3, 3), "ending.bias": (img_channel,)}

    def blocks(prefix, n, c):
        for i in range(n):
            for suffix, shape in BLOCK_KEYS.items():
                keys[f"{prefix}.{i}.{suffix}"] = shape(c)

    c = width
    for lvl, n in enumerate(enc):
        blocks(f"encoders.{lvl}", n, c)
        keys[f"downs.{lvl}.weight"] = (2 * c, c, 2, 2)
        keys[f"downs.{lvl}.bias"] = (2 * c,)
        c *= 2
    blocks("middle_blks", middle, c)
    for lvl, n in enumerate(dec):
        keys[f"ups.{lvl}.0.weight"] = (2 * c, c, 1, 1)  # 1x1 conv, bias=False, then PixelShuffle(2)
        c //= 2
        blocks(f"decoders.{lvl}", n, c)
    return keys


def _shapes(model):
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def test_sidd_width64_matches_official_layout():
    with torch.device("meta"):
        model = create("nafnet-sidd-width64")
    shapes = _shapes(model)
    assert len(shapes) == 664
    assert shapes == official_layout(64, [2, 2, 4, 8], 12, [2, 2, 2, 2])
    assert "ups.0.0.weight" in shapes and "ups.0.0.bias" not in shapes
    assert shapes["encoders.0.0.sca.1.weight"] == (64, 64, 1, 1)
    assert shapes["encoders.0.0.beta"] == (1, 64, 1, 1) and shapes["decoders.3.1.gamma"] == (1, 64, 1, 1)


@pytest.mark.parametrize("preset", sorted(NAFNET_PRESETS))
def test_presets_use_the_official_configs(preset):
    official = {
        "nafnet-sidd-width32": (32, [2, 2, 4, 8], 12, [2, 2, 2, 2]),
        "nafnet-sidd-width64": (64, [2, 2, 4, 8], 12, [2, 2, 2, 2]),
        "nafnet-gopro-width32": (32, [1, 1, 1, 28], 1, [1, 1, 1, 1]),
        "nafnet-gopro-width64": (64, [1, 1, 1, 28], 1, [1, 1, 1, 1]),
        "nafnet-reds-width64": (64, [1, 1, 1, 28], 1, [1, 1, 1, 1]),
    }[preset]
    with torch.device("meta"):
        model = create(preset)
    assert _shapes(model) == official_layout(*official)
    assert model.size_multiple == 16
    assert MODELS.meta(preset)["pretrained_key"].startswith("layer_2/nafnet/NAFNet-")


def _randomize(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """beta/gamma start at zero (blocks are identities); give every tensor random values."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return model


def test_strict_load_of_params_checkpoint(tmp_path):
    src = _randomize(create("nafnet-gopro-width32"), seed=1)
    path = tmp_path / "NAFNet-GoPro-width32.pth"
    torch.save({"params": src.state_dict()}, path)
    dst = create("nafnet-gopro-width32")
    load_official_checkpoint(dst, path)
    for key, value in src.state_dict().items():
        assert torch.equal(dst.state_dict()[key], value), key


def test_pretrained_preset_loads_from_the_store(tmp_path, monkeypatch):
    src = _randomize(create("nafnet-gopro-width32"), seed=2)
    (tmp_path / "layer_2" / "nafnet").mkdir(parents=True)
    torch.save({"params": src.state_dict()}, tmp_path / "layer_2" / "nafnet" / "NAFNet-GoPro-width32.pth")
    monkeypatch.setenv("PLATFORM_PRETRAINED_DIR", str(tmp_path))
    model = create("nafnet-gopro-width32", pretrained=True)
    assert torch.equal(model.state_dict()["encoders.3.27.sca.1.weight"], src.state_dict()["encoders.3.27.sca.1.weight"])
    # the official GoPro test options run NAFNetLocal: TLC is on by default with pretrained weights
    assert any(isinstance(m, LocalAvgPool2d) for m in model.modules())
    assert model.tlc["base_size"] == (384, 384)


def test_strict_load_rejects_mismatches():
    small = NAFNet(width=8, enc_blk_nums=[1], middle_blk_num=1, dec_blk_nums=[1])
    state = dict(small.state_dict())
    missing = {k: v for k, v in state.items() if k != "middle_blks.0.beta"}
    with pytest.raises(ConfigError, match="missing.*middle_blks.0.beta"):
        load_official_checkpoint(small, {"params": missing})
    extra = dict(state, **{"ups.0.0.bias": torch.zeros(16)})
    with pytest.raises(ConfigError, match="unexpected.*ups.0.0.bias"):
        load_official_checkpoint(small, {"params": extra})
    wide = NAFNet(width=16, enc_blk_nums=[1], middle_blk_num=1, dec_blk_nums=[1])
    with pytest.raises(ConfigError, match="other shapes"):
        load_official_checkpoint(small, {"params": wide.state_dict()})


def test_named_sizes_and_overrides():
    with torch.device("meta"):
        model = create("nafnet", size="small", width=16, dec_blk_nums=[1, 1, 1, 2])
    assert model.intro.out_channels == 16 and len(model.decoders[3]) == 2
    assert model.encoders[0][0].dropout1.p == pytest.approx(0.10)
    with pytest.raises(ConfigError, match="Allowed sizes: small, base, large"):
        create("nafnet", size="huge")
    with pytest.raises(ConfigError, match="same length"):
        create("nafnet", enc_blk_nums=[1, 1])
    with pytest.raises(ConfigError, match="preset"):
        create("nafnet", pretrained=True)


def test_other_output_channels_drop_the_global_residual():
    model = create("nafnet", size="small", in_channels=4, out_channels=1, width=8)
    y = model(torch.randn(1, 4, 21, 30))
    assert y.shape == (1, 1, 21, 30)


# ----------------------------------------------------------------------------- TLC


def _tiny_net(seed=0):
    """Default init, but active blocks: beta/gamma (zero at init) set to N(0, 1)."""
    torch.manual_seed(seed)
    net = NAFNet(width=8, enc_blk_nums=[1, 1], middle_blk_num=1, dec_blk_nums=[1, 1])
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith(("beta", "gamma")):
                p.normal_()
    return net.eval()


def _ramp_image(size=256, seed=0):
    """A horizontal colour ramp plus noise: local statistics differ from the global ones."""
    g = torch.Generator().manual_seed(seed)
    ramp = torch.linspace(-1, 1, size).view(1, 1, 1, size) * torch.tensor([1.0, -0.5, 0.3]).view(1, 3, 1, 1)
    return ramp + 0.1 * torch.randn(1, 3, size, size, generator=g)


def test_local_pool_matches_a_brute_force_box_filter():
    pool = LocalAvgPool2d(base_size=(12, 18), train_size=(8, 12))
    x = torch.randn(2, 3, 8, 12)
    assert torch.allclose(pool(x), x.mean((2, 3), keepdim=True))  # first call fixes kernel = 1.5 * size
    assert pool.kernel_size == [12, 18]
    big = torch.randn(2, 3, 20, 31)
    box = F.avg_pool2d(big, (12, 18), stride=1)  # all full windows, (9, 14)
    dh, dw = 20 - box.shape[2], 31 - box.shape[3]
    expected = F.pad(box, (dw // 2, (dw + 1) // 2, dh // 2, (dh + 1) // 2), mode="replicate")
    assert torch.allclose(pool(big), expected, atol=1e-5)
    # half precision input: the integral image still runs in float32 (bf16 cumsums are useless)
    ramp = torch.linspace(0, 1, 64 * 96).view(1, 1, 64, 96).repeat(1, 2, 1, 1) + 100
    pool16 = LocalAvgPool2d(base_size=(12, 18), train_size=(8, 12))
    pool16(torch.zeros(1, 2, 8, 12))
    low = pool16(ramp.bfloat16())
    assert low.dtype == torch.bfloat16
    assert torch.allclose(low.float(), pool16(ramp), atol=0.5)  # bf16 rounding of ~100 is 0.5


def test_tlc_equals_global_model_at_base_size_and_keeps_the_state_dict():
    net = _tiny_net()
    tlc = to_tlc(_tiny_net(), train_size=(32, 32))
    assert list(tlc.state_dict()) == list(net.state_dict())
    pools = [m for m in tlc.modules() if isinstance(m, LocalAvgPool2d)]
    assert len(pools) == 5
    # kernel = 1.5 x the feature size seen at the 32x32 training crop, per level
    assert sorted({tuple(p.kernel_size) for p in pools}) == [(12, 12), (24, 24), (48, 48)]
    x = torch.rand(1, 3, 48, 48) * 2 - 1  # base size = 1.5 * train size
    with torch.no_grad():
        assert torch.equal(tlc(x), net(x))


def test_tlc_differs_on_large_inputs_and_is_local():
    net = _tiny_net()
    tlc = to_tlc(_tiny_net(), train_size=(32, 32))
    x = _ramp_image()
    x2 = x.clone()
    x2[:, :, :32, :32] = 10.0  # change a far corner only
    with torch.no_grad():
        g1, g2, t1, t2 = net(x), net(x2), tlc(x), tlc(x2)
    assert (t1 - g1).abs().max() > 1e-3  # local statistics differ from the global ones
    assert torch.isfinite(t1).all() and (t1 - g1).abs().mean() < g1.abs().mean()
    # 5 blocks x (24 px half window + 3x3 convs) < 176 px from the changed corner
    far = (slice(None), slice(None), slice(208, None), slice(208, None))
    assert (g2 - g1)[far].abs().max() > 1e-4  # the global pool propagates the change everywhere
    assert (t2 - t1)[far].abs().max() < 1e-5  # TLC: out of the local windows, no effect (float rounding only)


def test_to_tlc_rejects_other_models():
    with pytest.raises(ConfigError):
        to_tlc(torch.nn.Conv2d(3, 3, 1))
