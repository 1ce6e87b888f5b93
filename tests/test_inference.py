"""Tiled inference, TTA, TLC, automatic tile size and the Predictor's task outputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from platform import inference
from platform.inference import (
    InferenceOptions,
    Predictor,
    auto_tile,
    blend_profile,
    predict_image,
    tile_starts,
    tiled_predict,
    tta_predict,
)
from platform.tasks import predictor as task_predictor
from test_inference_helpers import astronaut, tiny_config, tiny_model


def _x(size=(96, 128)) -> torch.Tensor:
    return torch.from_numpy(astronaut(size).transpose(2, 0, 1).copy())[None] * 2 - 1


class LocalConvNet(nn.Module):
    """Three 3x3 convolutions (receptive radius 3 px), not flip- or rotation-equivariant."""

    size_multiple = 1

    def __init__(self, out_channels: int = 3, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.GELU(), nn.Conv2d(8, 8, 3, padding=1), nn.GELU(),
                                  nn.Conv2d(8, out_channels, 3, padding=1))

    def forward(self, x):
        return self.body(x)


class Identity(nn.Module):
    size_multiple = 8

    def forward(self, x):
        return x.clone()


# --------------------------------------------------------------------------- tiles
def test_tile_starts_cover_the_frame_with_full_tiles():
    assert tile_starts(100, 128, 16) == [0]
    starts = tile_starts(300, 128, 32)
    assert starts == [0, 96, 172]  # stride 96, last tile moved back to end at the border
    assert starts[-1] + 128 == 300


def test_blend_profiles_of_neighbours_sum_to_one():
    tile, overlap = 64, 16
    left = blend_profile(tile, overlap, False, True)
    right = blend_profile(tile, overlap, True, False)
    stride = tile - overlap
    total = torch.zeros(stride + tile)
    total[:tile] += left
    total[stride:] += right
    assert torch.allclose(total, torch.ones_like(total))
    assert left[-overlap // 4:].eq(0).all() and right[:overlap // 4].eq(0).all()  # discarded margins


def test_tiles_equal_the_whole_frame_for_a_local_network():
    model = LocalConvNet().eval()
    x = _x((150, 200))
    whole = predict_image(model, x)
    tiled = tiled_predict(model, x, 64, 16)  # margin 4 px > receptive radius 3 px
    assert tiled.shape == whole.shape
    assert float((tiled - whole).abs().max()) < 1e-5
    # Without overlap the tile borders would show: the margin is what makes it exact.
    assert float((tiled_predict(model, x, 64, 0) - whole).abs().max()) > 1e-3


def test_tiles_within_1e3_of_the_whole_frame_for_tlc_nafnet():
    config = tiny_config(crop=64)
    model = tiny_model(config)
    assert inference.apply_tlc(model, config)
    assert inference.default_overlap(model) == 96  # the 1.5 x 64 px TLC window
    x = _x((256, 320))
    whole = predict_image(model, x)
    tiled = tiled_predict(model, x, 192)  # default overlap
    assert float((tiled - whole).abs().max()) < 1e-3


def test_explicit_tile_keeps_working_with_a_large_default_overlap():
    model = tiny_model(tiny_config(crop=64))
    inference.apply_tlc(model, tiny_config(crop=64))
    x = _x((96, 160))
    out = tiled_predict(model, x, 64)  # overlap capped at 32 = half the tile
    assert out.shape == x.shape and torch.isfinite(out).all()
    with pytest.raises(inference.ConfigError, match="more than half the tile"):
        tiled_predict(model, x, 64, 48)


def test_auto_tile_follows_free_memory(monkeypatch):
    model = LocalConvNet().eval()
    x = _x((150, 200))
    assert auto_tile(model, x) is None  # fits: whole frame
    per_pixel = inference.bytes_per_pixel(model, x.device, 3)
    x_big = _x((400, 500))

    def budget(side):  # free memory such that half of it holds a side x side tile
        monkeypatch.setattr(inference, "free_memory_bytes", lambda device: int(2 * per_pixel * side * side) + 1)

    budget(300)
    assert auto_tile(model, x_big, overlap=16) == 256  # rounded down to a multiple of 256 px
    budget(100)
    assert auto_tile(model, x_big, overlap=16) == inference.MIN_TILE
    assert auto_tile(model, x_big, overlap=80) == 161  # room for two overlaps and the network's multiple
    out = tiled_predict(model, x, None, 16)
    assert float((out - predict_image(model, x)).abs().max()) < 1e-5


def test_predictor_keeps_one_tiling_per_frame_size(monkeypatch):
    """A sequence is cut the same way on every frame, whatever happens to free memory."""
    model = LocalConvNet().eval()
    predictor = task_predictor(model, {"task": {"name": "img2img"}}, options=InferenceOptions(overlap=16))
    img = astronaut((150, 200))
    first = predictor.run(img)["image"]
    assert predictor.tile_for(predictor.prepare(img)[0]) == 200  # whole frame
    monkeypatch.setattr(inference, "free_memory_bytes", lambda device: 1)
    assert np.array_equal(predictor.run(img)["image"], first)
    fresh = task_predictor(model, {"task": {"name": "img2img"}}, options=InferenceOptions(overlap=16))
    assert fresh.tile_for(fresh.prepare(img)[0]) == inference.MIN_TILE  # a new run would tile


# --------------------------------------------------------------------------- TTA
def test_tta_of_the_identity_gives_back_the_input():
    x = _x((40, 56))  # not square: rotations swap height and width
    assert float((tta_predict(Identity(), x) - x).abs().max()) < 1e-6  # float rounding of the mean only
    assert float((tta_predict(Identity(), x, transforms="flips") - x).abs().max()) < 1e-6


def test_tta_makes_a_network_flip_and_rotation_equivariant():
    model = LocalConvNet().eval()
    x = _x((40, 56))
    plain_flip = predict_image(model, x.flip(-1))
    assert float((plain_flip - predict_image(model, x).flip(-1)).abs().max()) > 1e-3  # the network is not
    y = tta_predict(model, x)
    assert float((tta_predict(model, x.flip(-1)) - y.flip(-1)).abs().max()) < 1e-5
    rot = torch.rot90(x, 1, dims=(-2, -1))
    assert float((tta_predict(model, rot) - torch.rot90(y, 1, dims=(-2, -1))).abs().max()) < 1e-5
    # and equals the explicit mean of the 8 inverted predictions
    manual = torch.zeros_like(y)
    with torch.no_grad():
        for flip in (False, True):
            for k in range(4):
                t = x.flip(-1) if flip else x
                p = torch.rot90(model(torch.rot90(t, k, dims=(-2, -1))), -k, dims=(-2, -1))
                manual += p.flip(-1) if flip else p
    assert float((manual.div(8).clamp(-1, 1) - y).abs().max()) < 1e-5


# --------------------------------------------------------------------------- TLC
def test_tlc_only_for_nafnet_with_a_known_crop():
    config = tiny_config(crop=48)
    model = tiny_model(config)
    assert not inference.apply_tlc(LocalConvNet(), config)
    assert not inference.apply_tlc(model, {"task": {}})
    assert inference.apply_tlc(model, config)
    assert model.tlc["train_size"] == (48, 48) and model.tlc["base_size"] == (72, 72)
    assert not inference.apply_tlc(model, config)  # already converted


def test_tlc_matches_global_pooling_up_to_its_window_and_differs_beyond():
    config = tiny_config(crop=64)
    plain, local = tiny_model(config), tiny_model(config)
    inference.apply_tlc(local, config)
    small = _x((96, 96))  # within the 96 px window: identical to the plain network
    assert float((predict_image(plain, small) - predict_image(local, small)).abs().max()) < 1e-6
    big = _x((256, 320))
    assert float((predict_image(plain, big) - predict_image(local, big)).abs().max()) > 1e-4


def test_tlc_box_averages_run_in_fp32_under_bf16_autocast():
    from platform.models.nafnet import LocalAvgPool2d

    config = tiny_config(crop=64)
    model = tiny_model(config)
    inference.apply_tlc(model, config)
    seen = []
    for mod in model.modules():
        if isinstance(mod, LocalAvgPool2d):
            mod.register_forward_hook(lambda m, args, out: seen.append(args[0].dtype))
    out = predict_image(model, _x((128, 160)), "bf16")
    assert seen and set(seen) == {torch.float32} and torch.isfinite(out).all()


# --------------------------------------------------------------------------- Predictor
@pytest.fixture
def seg_tasks():
    """Temporary task registrations of each output kind."""
    from platform.tasks import TASKS

    class Matting:
        kind = "matting"
        output_range = (0.0, 1.0)

    names = {"t_seg": ("segmentation", type("Seg", (), {"kind": "segmentation"})),
             "t_hier": ("hierarchical", type("Hier", (), {"kind": "hierarchical"})),
             "t_matte": ("matting", Matting)}
    for name, (kind, cls) in names.items():
        TASKS.register(name, kind=kind)(cls)
    yield
    for name in names:
        TASKS._items.pop(name, None)
        TASKS._meta.pop(name, None)


class Heads(nn.Module):
    size_multiple = 4

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.levels = nn.ModuleDict({n: nn.Conv2d(3, k, 3, padding=1) for n, k in
                                     (("coarse", 2), ("mid", 4), ("fine", 7))})

    def forward(self, x):
        return {n: conv(x) for n, conv in self.levels.items()}


def test_predictor_segmentation_masks_are_the_argmax(seg_tasks):
    model = LocalConvNet(out_channels=5).eval()
    img = astronaut((50, 70))
    out = task_predictor(model, {"task": {"name": "t_seg"}}).run(img)
    x = torch.from_numpy(img.transpose(2, 0, 1).copy())[None] * 2 - 1
    with torch.no_grad():
        logits = model(x)[0]
    assert out["mask"].shape == (50, 70)
    assert np.array_equal(out["mask"], logits.argmax(0).numpy())
    assert np.allclose(out["probs"].sum(-1), 1.0, atol=1e-5)
    binary = task_predictor(LocalConvNet(out_channels=1).eval(), {"task": {"name": "t_seg"}}).run(img)
    assert set(np.unique(binary["mask"])) <= {0, 1} and binary["probs"].shape == (50, 70, 2)


def test_predictor_hierarchical_heads_give_one_mask_per_level(seg_tasks):
    out = task_predictor(Heads().eval(), {"task": {"name": "t_hier"}}, options=InferenceOptions(tile=32, overlap=8)).run(
        astronaut((50, 70)))
    assert sorted(k for k in out if k.startswith("mask/")) == ["mask/coarse", "mask/fine", "mask/mid"]
    assert out["mask/fine"].shape == (50, 70) and out["mask/fine"].max() < 7
    assert out["probs/mid"].shape == (50, 70, 4)


def test_predictor_takes_the_output_kind_from_its_caller(seg_tasks):
    """Inference knows no tasks: it needs the output kind object (bound to the task's output range)
    from the caller; platform.tasks.predictor looks it up in the task registry."""
    from platform.errors import ConfigError
    from platform.tasks import output_kind, output_range, task_kind
    from platform.tasks.outputs import MattingOutput

    net = LocalConvNet(out_channels=1).eval()
    with pytest.raises(ConfigError, match="platform.tasks.predictor"):
        Predictor(net, {"task": {"name": "t_matte"}})
    with pytest.raises(ConfigError, match="platform.tasks.predictor"):
        Predictor(net, {"task": {"name": "segmentation"}}, kind="segmentation")  # a name is not a kind object
    img = astronaut((32, 40))
    explicit = Predictor(net, {"task": {"name": "t_matte"}}, kind=MattingOutput(output_range=(0.0, 1.0))).run(img)
    assert np.array_equal(explicit["alpha"], task_predictor(net, {"task": {"name": "t_matte"}}).run(img)["alpha"])
    assert task_kind({"task": {"name": "t_hier"}}) == "hierarchical"
    assert output_range({"task": {"name": "t_matte"}}) == (0.0, 1.0)
    assert output_range({"task": {"name": "t_seg"}}) == (-1.0, 1.0)
    assert task_kind({"task": {"name": "hierarchical_segmentation"}}) == "hierarchical"
    assert output_kind({"task": {"name": "segmentation"}}).name == "segmentation"
    assert output_kind({"task": {"name": "t_matte"}}).output_range == (0.0, 1.0)
    assert output_kind({}).name == "img2img"  # the oldest checkpoints name no task


def test_predictor_matting_and_image_outputs(seg_tasks):
    img = astronaut((32, 40))
    alpha = task_predictor(LocalConvNet(out_channels=1).eval(), {"task": {"name": "t_matte"}}).run(img)["alpha"]
    assert alpha.shape == (32, 40) and alpha.min() >= 0 and alpha.max() <= 1
    rgba = np.concatenate([img, np.full((32, 40, 1), 0.25, np.float32)], axis=2)
    out = task_predictor(Identity(), {"task": {"name": "img2img"}}).run(rgba)["image"]
    assert np.allclose(out, rgba, atol=1e-6)  # alpha set aside and given back
    grey = task_predictor(Identity(), {"task": {"name": "img2img"}}).run(img[:, :, :1])["image"]
    assert grey.shape == (32, 40, 1) and np.allclose(grey[:, :, 0], img[:, :, 0], atol=1e-6)  # grey stays grey


def test_predictor_rejects_unknown_precision_and_wrong_channels():
    with pytest.raises(inference.ConfigError, match="precision 'fp8'"):
        InferenceOptions(precision="fp8")
    p = task_predictor(Identity(), {"task": {"name": "img2img"}, "_model_kwargs": {"in_channels": 3}})
    with pytest.raises(inference.ConfigError, match="takes 3-channel images, got 5"):
        p.run(np.zeros((8, 8, 5), np.float32))
