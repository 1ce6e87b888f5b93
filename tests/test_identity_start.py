"""Residual image-to-image networks start as the exact identity; lut3d and its .cube export."""

from __future__ import annotations

import numpy as np
import pytest
import skimage.data
import torch

from platform.models import create

SMALL = {
    "nafnet": dict(size="small", width=8, enc_blk_nums=[1, 1], middle_blk_num=1, dec_blk_nums=[1, 1]),
    "convnext_unet": dict(size="nano"),
    "unet": dict(size="small", base_filters=8),
    "attention_unet": dict(size="small", base_filters=8),
    "swinir": dict(size="small", embed_dim=12, depths=[1], num_heads=[2], window_size=4),
    "mambair": dict(size="small", embed_dim=8, depths=[1]),
    "lut3d": dict(size="local", init="identity"),
}


@pytest.mark.parametrize("name", sorted(SMALL))
def test_an_untrained_residual_network_returns_its_input(name):
    torch.manual_seed(0)
    model = create(name, **SMALL[name]).eval()
    x = torch.from_numpy(skimage.data.astronaut()[100:141, 200:263].astype(np.float32) / 127.5 - 1)
    x = x.permute(2, 0, 1)[None]
    with torch.no_grad():
        y = model(x)
    assert y.shape == x.shape
    assert float((y - x).abs().max()) < 1e-5, name
    # ... and it is a network, not a constant: one step on a graded target changes its output.
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loss = (model(x) - (0.8 * x + 0.1)).abs().mean()
    loss.backward()
    opt.step()
    with torch.no_grad():
        assert float((model.eval()(x) - x).abs().max()) > 1e-4


def test_identity_start_can_be_switched_off():
    torch.manual_seed(0)
    model = create("nafnet", **SMALL["nafnet"], identity_init=False).eval()
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        assert float((model(x) - x).abs().max()) > 1e-3


def _graded_lut_model():
    """A pure lut3d (17³) holding a real, smooth grade with values past [0, 1] at the edges."""
    from platform.data.samples import colour_grade

    model = create("lut3d", size="lut", lut_size=17, init="identity")
    with torch.no_grad():
        nodes = (model.identity.permute(1, 2, 3, 0).numpy() + 1) / 2  # (S, S, S, 3) r, g, b in [0, 1]
        graded = colour_grade(nodes.reshape(-1, 1, 3)).reshape(nodes.shape) * 1.08 - 0.04
        model.offset[:3] = torch.from_numpy(graded * 2 - 1).permute(3, 0, 1, 2) - model.identity
    return model.eval()


def test_cube_export_reads_back_in_colour_science_within_1e3(tmp_path):
    import colour

    from platform.export import export
    from tests.test_inference_helpers import save_checkpoint, tiny_config

    config = tiny_config()
    config["model"] = {"architecture": "lut3d", "size": "lut", "options": {"lut_size": 17, "init": "identity"}}
    model = _graded_lut_model()
    save_checkpoint(tmp_path / "ckpt", model, config)
    report = export(str(tmp_path / "ckpt"), "cube", tmp_path / "look.cube", report=lambda s: None)
    text = (tmp_path / "look.cube").read_text().splitlines()
    assert "LUT_3D_SIZE 17" in text and len([ln for ln in text if ln[:1].isdigit() or ln[:1] == "-"]) == 17 ** 3

    # An independent reader and interpolator applied to a real photo vs the model's own output.
    lut = colour.read_LUT(str(tmp_path / "look.cube"))
    img = skimage.data.coffee()[:120, :160].astype(np.float64) / 255
    theirs = np.clip(lut.apply(img), 0, 1)
    with torch.no_grad():
        x = torch.from_numpy(img.astype(np.float32)).permute(2, 0, 1)[None] * 2 - 1
        ours = ((model(x).clamp(-1, 1) + 1) / 2)[0].permute(1, 2, 0).numpy()
    assert np.abs(theirs - ours).max() < 1e-3
    assert report.max_abs_diff < 1e-3 and np.abs(ours - img).max() > 0.05  # a real grade, not the identity


def test_only_a_pure_lut_exports_to_cube():
    from platform.errors import ConfigError
    from platform.models.lut3d import cube_text

    with pytest.raises(ConfigError, match="pure lut3d"):
        cube_text(create("lut3d", size="local"))
    with pytest.raises(ConfigError, match="pure lut3d"):
        cube_text(create("nafnet", **SMALL["nafnet"]))


def test_lut3d_fit_start_equals_the_least_squares_floor():
    from platform import floors

    rng = np.random.default_rng(0)
    x = rng.random((30000, 3))
    y = np.clip(np.stack([x[:, 0] ** 0.7, x[:, 1] * 0.9 + 0.05, x[:, 2] ** 1.3], 1), 0, 1)
    model = create("lut3d", size="local")
    model.init_from_pairs(x, y)
    floor = floors.fit_lut(x, y)
    probe = torch.rand(1, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        a, b = model.eval()(probe), floor(probe)
    assert float((a - b).abs().max()) < 2e-3  # 17³ resampled to 33³: trilinear of trilinear


def test_lut3d_fitted_lut_trains_at_its_own_learning_rate_factor():
    """`lut_lr` (default 0.1 with init: fit, 1 with identity) gives the LUT nodes their own optimiser
    group; 0 keeps the fitted LUT as it is while the residual learns."""
    from platform.train.pretrained import optimizer_groups

    assert create("lut3d", size="local").lut_lr == 0.1
    assert create("lut3d", size="local", init="identity").lut_lr == 1.0
    with pytest.raises(Exception, match="lut_lr"):
        create("lut3d", size="local", lut_lr=-1)

    model = create("lut3d", size="local", lut_lr=0.1)
    groups = optimizer_groups(model, None, 1e-3, 0.0)
    assert [g["lr_factor"] for g in groups] == [1.0, 0.1] and groups[1]["lr"] == pytest.approx(1e-4)
    assert groups[1]["params"] == [model.offset]
    assert len(optimizer_groups(create("lut3d", size="local", init="identity"), None, 1e-3, 0.0)) == 1

    torch.manual_seed(0)
    model = create("lut3d", size="local", lut_lr=0.0)
    opt = torch.optim.AdamW(optimizer_groups(model, None, 1e-2, 0.0), lr=1e-2, weight_decay=0.0)
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    before = model.offset.detach().clone()
    for _ in range(3):
        opt.zero_grad()
        (model(x) - 0.5 * x).abs().mean().backward()
        opt.step()
    assert torch.equal(model.offset.detach(), before)
    assert float(model.local.out.weight.detach().abs().max()) > 0  # the residual learnt
