"""Strict and partial loading of pretrained weights, with exact counts checked by hand.

The NAFNet used here is a small stand-alone copy of the reference architecture's module
naming (megvii-research/NAFNet: intro, encoders.i.j.{conv1..conv5, sca.1, norm1, norm2, beta,
gamma}, downs.i, middle_blks.j, ups.i.0, decoders.i.j, ending), so the tests do not depend on
the platform's model zoo. Each NAFBlock holds 18 tensors; a network holds
18 * blocks + 2 (intro) + 2 (ending) + 2 per down + 1 per up.
"""

from __future__ import annotations

import json
import logging

import pytest
import torch
from torch import nn

from platform.errors import ConfigError
from platform.pretrained import LocalStore, load_pretrained, load_weights, plan_load
from platform.pretrained.__main__ import main as cli
from platform.pretrained.loading import WeightsMismatchError, compact_names, extract_state_dict


class LayerNorm2d(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(c))
        self.bias = nn.Parameter(torch.zeros(c))

    def forward(self, x):
        mu = x.mean(1, keepdim=True)
        var = (x - mu).pow(2).mean(1, keepdim=True)
        return self.weight.view(1, -1, 1, 1) * (x - mu) / (var + 1e-6).sqrt() + self.bias.view(1, -1, 1, 1)


class NAFBlock(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        dw = 2 * c
        self.conv1 = nn.Conv2d(c, dw, 1)
        self.conv2 = nn.Conv2d(dw, dw, 3, padding=1, groups=dw)
        self.conv3 = nn.Conv2d(dw // 2, c, 1)
        self.sca = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(dw // 2, dw // 2, 1))
        self.conv4 = nn.Conv2d(c, 2 * c, 1)
        self.conv5 = nn.Conv2d(c, c, 1)
        self.norm1 = LayerNorm2d(c)
        self.norm2 = LayerNorm2d(c)
        self.beta = nn.Parameter(torch.zeros(1, c, 1, 1))
        self.gamma = nn.Parameter(torch.zeros(1, c, 1, 1))

    def forward(self, inp):
        x = self.conv2(self.conv1(self.norm1(inp)))
        a, b = x.chunk(2, dim=1)
        x = a * b
        x = self.conv3(x * self.sca(x))
        y = inp + x * self.beta
        a, b = self.conv4(self.norm2(y)).chunk(2, dim=1)
        return y + self.conv5(a * b) * self.gamma


class NAFNet(nn.Module):
    def __init__(self, width=8, enc=(1, 1), middle=1, dec=(1, 1), img_channel=3):
        super().__init__()
        self.intro = nn.Conv2d(img_channel, width, 3, padding=1)
        self.ending = nn.Conv2d(width, img_channel, 3, padding=1)
        self.encoders, self.decoders, self.ups, self.downs = (nn.ModuleList() for _ in range(4))
        chan = width
        for n in enc:
            self.encoders.append(nn.Sequential(*[NAFBlock(chan) for _ in range(n)]))
            self.downs.append(nn.Conv2d(chan, 2 * chan, 2, 2))
            chan *= 2
        self.middle_blks = nn.Sequential(*[NAFBlock(chan) for _ in range(middle)])
        for n in dec:
            self.ups.append(nn.Sequential(nn.Conv2d(chan, chan * 2, 1, bias=False), nn.PixelShuffle(2)))
            chan //= 2
            self.decoders.append(nn.Sequential(*[NAFBlock(chan) for _ in range(n)]))

    def forward(self, inp):
        x = self.intro(inp)
        skips = []
        for encoder, down in zip(self.encoders, self.downs):
            x = encoder(x)
            skips.append(x)
            x = down(x)
        x = self.middle_blks(x)
        for decoder, up, skip in zip(self.decoders, self.ups, skips[::-1]):
            x = decoder(up(x) + skip)
        return self.ending(x) + inp


def _randomise(model: nn.Module, seed: int) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return model


def _same(a: nn.Module, b: nn.Module) -> bool:
    sb = b.state_dict()
    return all(torch.equal(v, sb[k]) for k, v in a.state_dict().items())


def test_tensor_count_matches_the_reference_nafnet_sidd_width64():
    # NAFNet-SIDD-width64: enc [2, 2, 4, 8], 12 middle blocks, dec [2, 2, 2, 2]; 36 blocks * 18 + 16 = 664
    with torch.device("meta"):
        sidd64 = NAFNet(64, (2, 2, 4, 8), 12, (2, 2, 2, 2))
        sidd32 = NAFNet(32, (2, 2, 4, 8), 12, (2, 2, 2, 2))
    s64 = {k: v.shape for k, v in sidd64.state_dict().items()}
    assert len(s64) == 664
    exact = plan_load(s64, s64)
    assert exact.counts["transferred"] == 664 and not exact.missing and not exact.unexpected
    # width 32 from width 64: only tensors whose shape does not depend on the width agree
    honest = plan_load({k: v.shape for k, v in sidd32.state_dict().items()}, s64)
    assert honest.transferred == ["ending.bias"]
    assert (len(honest.shape_mismatched), len(honest.missing), len(honest.unexpected)) == (663, 0, 0)
    sliced = plan_load({k: v.shape for k, v in sidd32.state_dict().items()}, s64, resize="slice")
    assert (len(sliced.transferred), len(sliced.sliced), len(sliced.shape_mismatched)) == (664, 663, 0)


def test_strict_load_of_a_params_checkpoint(tmp_path):
    source = _randomise(NAFNet(8), seed=1)
    path = tmp_path / "NAFNet-tiny.pth"
    torch.save({"params": source.state_dict(), "iter": 1000}, path)  # the NAFNet/BasicSR release layout
    model = NAFNet(8)
    report = load_weights(model, path, strict=True)
    assert report.strict and report.counts["transferred"] == 100 == report.total_target
    assert (len(report.shape_mismatched), len(report.missing), len(report.unexpected)) == (0, 0, 0)
    assert _same(model, source)
    x = torch.rand(1, 3, 16, 16)
    assert torch.equal(model(x), source(x))
    assert report.loaded_names == {n for n, _ in model.named_parameters()}
    # strict=None picks the strict path by itself when the checkpoint fits exactly
    auto = load_weights(NAFNet(8), {"params": source.state_dict()})
    assert auto.strict and auto.counts["transferred"] == 100


def test_strict_load_refuses_a_checkpoint_that_does_not_fit():
    source = _randomise(NAFNet(8, enc=(2, 1)), seed=1)
    model = _randomise(NAFNet(8), seed=2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(WeightsMismatchError) as err:
        load_weights(model, {"params": source.state_dict()}, strict=True)
    assert "18 unexpected (encoders.0.1.* x18)" in str(err.value)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # untouched


def test_partial_load_counts_for_different_depths(caplog):
    # target: enc [1, 2], 1 middle, dec [1, 1] -> 6 blocks -> 6 * 18 + 2 + 2 + 2*2 + 2 = 118 tensors
    # source: enc [2, 1], 2 middle, dec [1, 1] -> 7 blocks -> 126 + 10 = 136 tensors
    # shared names: intro, ending, downs, ups (10) + encoders.0.0, encoders.1.0, middle_blks.0,
    # decoders.0.0, decoders.1.0 (5 * 18) = 100; missing encoders.1.1 (18);
    # unexpected encoders.0.1 and middle_blks.1 (36)
    source = _randomise(NAFNet(8, enc=(2, 1), middle=2), seed=3)
    model = NAFNet(8, enc=(1, 2), middle=1)
    init_missing = model.encoders[1][1].conv1.weight.detach().clone()
    with caplog.at_level(logging.INFO, logger="platform.pretrained"):
        report = load_weights(model, {"params": source.state_dict()})
    assert not report.strict
    assert report.counts == {"transferred": 100, "sliced": 0, "shape_mismatched": 0, "missing": 18,
                             "unexpected": 36, "target_tensors": 118, "source_tensors": 136}
    assert set(report.missing) == {f"encoders.1.1.{n}" for n in NAFBlock(8).state_dict()}
    assert {n.split(".")[0] + "." + n.split(".")[1] for n in report.unexpected} == {"encoders.0", "middle_blks.1"}
    assert torch.equal(model.encoders[1][0].conv5.weight, source.encoders[1][0].conv5.weight)
    assert torch.equal(model.encoders[1][1].conv1.weight, init_missing)  # missing keeps its init
    assert report.loaded_names == set(report.transferred)
    text = " ".join(r.getMessage() for r in caplog.records)
    assert "100/118 model tensors transferred" in text
    assert "missing (keep their initialisation): encoders.1.1.* x18" in text
    assert "unexpected (unused checkpoint tensors): encoders.0.1.* x18, middle_blks.1.* x18" in text


def test_width4_from_width8_transfers_only_what_fits_unless_slicing_is_chosen():
    source = _randomise(NAFNet(8), seed=4)
    model = NAFNet(4)
    report = load_weights(model, source.state_dict(), strict=False)
    assert report.transferred == ["ending.bias"]  # (3,) is the only width-independent tensor
    assert (len(report.shape_mismatched), len(report.missing), len(report.unexpected)) == (99, 0, 0)
    mismatch = next(m for m in report.shape_mismatched if m.target == "intro.weight")
    assert (mismatch.target_shape, mismatch.source_shape) == ((4, 3, 3, 3), (8, 3, 3, 3))
    assert torch.equal(model.ending.bias, source.ending.bias)

    sliced = NAFNet(4)
    report = load_weights(sliced, source.state_dict(), strict=False, resize="slice")
    assert (len(report.transferred), len(report.sliced), len(report.shape_mismatched)) == (100, 99, 0)
    assert torch.equal(sliced.intro.weight, source.intro.weight[:4])
    assert torch.equal(sliced.ups[0][0].weight, source.ups[0][0].weight[:32, :16])
    assert torch.equal(sliced.encoders[0][0].conv2.weight, source.encoders[0][0].conv2.weight[:8])


def test_prefix_and_wrapper_names_are_matched():
    class Wrapped(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = NAFNet(8)

    source = _randomise(NAFNet(8), seed=5)
    ddp_style = {f"module.{k}": v for k, v in source.state_dict().items()}  # saved from a DDP model
    model = Wrapped()
    report = load_weights(model, {"state_dict": ddp_style})
    assert report.counts["transferred"] == 100 and not report.missing and not report.unexpected
    assert set(report.matched_by.values()) == {"prefix"}
    assert report.mapping["net.intro.weight"] == "module.intro.weight"
    assert _same(model.net, source)


def test_shape_and_position_within_matching_modules():
    source = _randomise(NAFNet(8), seed=6)
    state = dict(source.state_dict())
    renames = {"intro.weight": "intro.kernel", "intro.bias": "intro.offset", "ending.weight": "ending.w"}
    for old, new in renames.items():
        state[new] = state.pop(old)
    model = NAFNet(8)
    report = load_weights(model, state, strict=False)
    assert report.counts["transferred"] == 100 and not report.missing and not report.unexpected
    assert {t: report.mapping[t] for t, how in report.matched_by.items() if how == "position"} == renames
    assert _same(model, source)
    off = load_weights(NAFNet(8), state, strict=False, positional=False)
    assert (len(off.transferred), len(off.missing), len(off.unexpected)) == (97, 3, 3)
    # a same-module tensor of another shape is never paired by position
    state["intro.offset"] = torch.zeros(5)
    odd = load_weights(NAFNet(8), state, strict=False)
    assert "intro.bias" in odd.missing and "intro.offset" in odd.unexpected


class _Opaque:
    """An arbitrary pickled object, as some training scripts store beside the weights."""


def test_rename_rules_and_checkpoint_errors(tmp_path):
    source = _randomise(NAFNet(8), seed=7)
    state = {f"backbone.{k}": v for k, v in source.state_dict().items()}
    state["head.fc.weight"] = torch.zeros(2, 2)
    model = NAFNet(8)
    report = load_weights(model, state, rename=[(r"^backbone\.", "")])
    assert report.counts["transferred"] == 100 and report.unexpected == ["head.fc.weight"]
    assert set(report.matched_by.values()) == {"name"}
    with pytest.raises(ConfigError, match="no key 'params_ema'"):
        extract_state_dict({"params": source.state_dict()}, "params_ema")
    assert extract_state_dict({"params": 1, "params_ema": source.state_dict()}, "params_ema").keys() == \
        source.state_dict().keys()
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="cannot be read"):
        load_weights(model, bad)
    pickled = tmp_path / "pickled.pth"
    torch.save({"params": source.state_dict(), "opt": _Opaque()}, pickled)
    with pytest.raises(ConfigError, match="weights_only=False"):
        load_weights(model, pickled)
    assert load_weights(NAFNet(8), pickled, weights_only=False).counts["transferred"] == 100
    assert compact_names(["a.0.w", "a.0.b", "a.1.w", "b", "c.0"]) == "a.0.* x2, a.1.*, b, c.0"


def test_load_pretrained_from_a_local_store_uses_the_metadata(tmp_path, monkeypatch):
    monkeypatch.setenv("PLATFORM_PRETRAINED_HUB", "0")
    source = _randomise(NAFNet(8), seed=8)
    path = tmp_path / "NAFNet-tiny-width8.pth"
    torch.save({"params": source.state_dict(), "params_ema": NAFNet(8).state_dict()}, path)
    store = tmp_path / "store"
    assert cli(["--store", str(store), "--no-progress", "upload", str(path), "--group", "layer_2", "--arch",
                "nafnet", "--state-dict-key", "params", "--config", json.dumps({"width": 8})]) == 0
    key = "layer_2/nafnet/NAFNet-tiny-width8.pth"
    assert LocalStore(store).read_meta(key).state_dict_key == "params"
    model = NAFNet(8)
    report = load_pretrained(model, key, store=str(store), cache=tmp_path / "cache")
    assert report.strict and report.counts["transferred"] == 100 and _same(model, source)
    assert report.sha256 == LocalStore(store).read_meta(key).sha256 and key in report.source
    metrics = report.as_metrics()
    assert metrics["pretrained_transferred"] == 100.0 and metrics["pretrained_fraction"] == 1.0
