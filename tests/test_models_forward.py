"""Every registered model and size: forward + backward on CPU, output at the input size,
bit-identical eval outputs, parameter counts within the stated ranges.

Inputs are 1x3x77x131 (odd, not a multiple of any model's ``size_multiple``). Models over
30 GMACs at 256x256 (see docs/models.md) use an odd 1x3x19x27 input instead, MambaIR-base
(1.3 TMACs) 1x3x7x11, to keep the suite fast on 2 CPU cores. CoAtNet/MaxViT encoders only
accept img_size-sized inputs (multiples of it for MaxViT), so they are built with
``img_size=64`` and run on 19x27 (padded to 64x64 inside). UPerNet models run with batch 2
in training mode because their pyramid pooling has BatchNorm on 1x1 maps.
"""

from __future__ import annotations

import pytest
import torch

from platform.models import MODELS, create

FULL = (77, 131)
SMALL = (19, 27)
TINY = (7, 11)
HEAVY = {
    ("attention_unet", "base"), ("unet", "base"), ("nafnet", "large"), ("swinir", "small"), ("swinir", "base"),
    ("mambair", "small"), ("mambair", "base"), ("nafnet-sidd-width64", None), ("nafnet-gopro-width64", None),
    ("nafnet-reds-width64", None),
}
IMG_SIZE_ENCODERS = {"coatnet_0", "maxvit_tiny"}


def _cases() -> list[tuple[str, str | None]]:
    """The zoo's models and sizes (other test modules register tiny doubles at import)."""
    from platform.bench.models import zoo

    return zoo()


CASES = _cases()


def _ids(case: tuple[str, str | None]) -> str:
    return f"{case[0]}-{case[1]}"


def _outputs(y) -> dict[str, torch.Tensor]:
    return y if isinstance(y, dict) else {"out": y}


def test_every_model_is_covered():
    assert len(CASES) >= 30
    names = {n for n, _ in CASES}
    for expected in ("nafnet", "convnext_unet", "unet", "attention_unet", "swinir", "mambair", "seg_unet",
                     "seg_upernet", "hierarchical_upernet", "resnet50_unet", "nafnet-sidd-width64"):
        assert expected in names


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_param_count_in_stated_range(case):
    name, size = case
    meta = MODELS.meta(name)
    nominal = meta["nominal_params"][size]
    with torch.device("meta"):
        model = create(name, size=size)
    params = sum(p.numel() for p in model.parameters())
    assert 0.85 * nominal <= params <= 1.15 * nominal, f"{name}/{size}: {params / 1e6:.2f}M vs {nominal / 1e6:.1f}M"


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_forward_backward_and_determinism(case):
    name, size = case
    kind = MODELS.meta(name)["kind"]
    kwargs = {"img_size": 64} if size in IMG_SIZE_ENCODERS else {}
    torch.manual_seed(0)
    model = create(name, size=size, **kwargs)
    assert isinstance(model.size_multiple, int) and model.size_multiple >= 1
    h, w = TINY if case == ("mambair", "base") else SMALL if case in HEAVY or kwargs else FULL
    batch = 2 if name in ("seg_upernet", "hierarchical_upernet") else 1  # PSP BatchNorm on 1x1 maps
    x = torch.rand(batch, 3, h, w) * 2 - 1

    model.train()
    outs = _outputs(model(x))
    for key, out in outs.items():
        assert out.shape[0] == batch and out.shape[-2:] == (h, w), (key, out.shape)
        assert torch.isfinite(out).all()
    if kind == "img2img":
        assert outs["out"].shape[1] == 3
    loss = sum(out.float().pow(2).mean() for out in outs.values())
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None for g in grads), "some parameters got no gradient"
    assert all(torch.isfinite(g).all() for g in grads)
    first = next(p for p in model.parameters() if p.requires_grad)
    if kind == "img2img" and first.grad.abs().sum() == 0:
        # An identity start (the residual branch's last layer zeroed) blocks the gradient of the
        # earlier layers at step 0 only: after one step of the last layer it flows through.
        torch.optim.SGD(model.parameters(), lr=0.1).step()
        model.zero_grad()
        sum(out.float().pow(2).mean() for out in _outputs(model(x)).values()).backward()
    assert first.grad.abs().sum() > 0, "no gradient reached the first layer"

    model.eval()
    with torch.no_grad():
        y1 = _outputs(model(x[:1]))
        y2 = _outputs(model(x[:1]))
    for key in y1:
        assert torch.equal(y1[key], y2[key]), f"{key}: eval outputs differ between two calls"


@pytest.mark.parametrize("name", ["unet", "attention_unet"])
def test_unets_keep_the_minus_one_one_range(name):
    torch.manual_seed(0)
    model = create(name, size="small", residual=False).eval()
    assert isinstance(model.final, torch.nn.Tanh)
    with torch.no_grad():
        model.outc.weight.mul_(1000)  # push the pre-activation far outside [-1, 1]
        y = model(torch.rand(1, 3, 40, 56) * 2 - 1)
        raw = create(name, size="small", final_activation="none", residual=False).eval()
        raw.load_state_dict(model.state_dict())
        z = raw(torch.rand(1, 3, 40, 56) * 2 - 1)
    assert y.abs().max() <= 1.0 and y.abs().max() > 0.99
    assert z.abs().max() > 1.0
