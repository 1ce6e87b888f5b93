"""MambaIR's pure-PyTorch selective scan vs a step-by-step reference; SwinIR attention maths."""

from __future__ import annotations

import pytest
import torch

from platform.models.mambair import SS2D, linear_scan, selective_scan, selective_scan_sequential
from platform.models.swinir import WindowAttention, shifted_window_mask


@pytest.mark.parametrize("length", [1, 2, 3, 5, 8, 13, 64, 97])
def test_linear_scan_matches_a_python_loop(length):
    g = torch.Generator().manual_seed(length)
    a = torch.rand(2, 3, length, 4, generator=g, dtype=torch.float64)
    b = torch.randn(2, 3, length, 4, generator=g, dtype=torch.float64)
    h, expected = torch.zeros(2, 3, 4, dtype=torch.float64), []
    for t in range(length):
        h = a[:, :, t] * h + b[:, :, t]
        expected.append(h)
    assert torch.allclose(linear_scan(a, b), torch.stack(expected, dim=2), atol=1e-12)


def _inputs(bsz=2, groups=4, d=3, n=5, length=37, seed=0):
    g = torch.Generator().manual_seed(seed)
    dim = groups * d
    return dict(
        u=torch.randn(bsz, dim, length, generator=g), delta=torch.randn(bsz, dim, length, generator=g),
        A=-torch.rand(dim, n, generator=g) * 4, B=torch.randn(bsz, groups, n, length, generator=g),
        C=torch.randn(bsz, groups, n, length, generator=g), D=torch.randn(dim, generator=g),
        z=torch.randn(bsz, dim, length, generator=g), delta_bias=torch.randn(dim, generator=g),
    )


@pytest.mark.parametrize("segment_elements", [None, 2 * 12 * 5 * 7, 1])  # one segment, 7-step segments, 1-step
def test_selective_scan_matches_the_sequential_reference(segment_elements):
    kw = _inputs()
    ref, ref_h = selective_scan_sequential(**kw, delta_softplus=True, return_last_state=True)
    y, h = selective_scan(**kw, delta_softplus=True, return_last_state=True, segment_elements=segment_elements)
    assert y.dtype == torch.float32 and y.shape == ref.shape
    assert torch.allclose(y.double(), ref, atol=1e-5, rtol=1e-5)
    assert torch.allclose(h.double(), ref_h, atol=1e-5, rtol=1e-5)


def test_selective_scan_gradients_match_the_reference():
    kw = _inputs(length=23, seed=3)
    kw64 = {k: v.double().requires_grad_() for k, v in kw.items()}
    kw32 = {k: v.clone().requires_grad_() for k, v in kw.items()}
    ref = selective_scan_sequential(**kw64, delta_softplus=True)
    out = selective_scan(**kw32, delta_softplus=True, segment_elements=2 * 12 * 5 * 6)  # checkpointed segments
    weight = torch.randn(ref.shape, dtype=torch.float64)
    (ref * weight).sum().backward()
    (out * weight.float()).sum().backward()
    for key in kw:
        assert torch.allclose(kw32[key].grad.double(), kw64[key].grad, atol=1e-4, rtol=1e-4), key


def test_selective_scan_without_groups_and_strong_decay():
    g = torch.Generator().manual_seed(5)
    u, delta = torch.randn(1, 6, 50, generator=g), torch.rand(1, 6, 50, generator=g) * 20  # decay down to e^-320
    A, B, C = -torch.rand(6, 4, generator=g) * 16, torch.randn(1, 4, 50, generator=g), torch.randn(1, 4, 50, generator=g)
    y = selective_scan(u, delta, A, B, C)
    assert torch.isfinite(y).all()
    assert torch.allclose(y.double(), selective_scan_sequential(u, delta, A, B, C), atol=1e-4)


def test_ss2d_scans_four_directions():
    """Every output pixel sees every input pixel (rows, columns, both reversed)."""
    torch.manual_seed(0)
    ss2d = SS2D(d_model=8, d_state=4).eval()
    x = torch.randn(1, 5, 7, 8, requires_grad=True)
    ss2d(x)[0, 0, 3].sum().backward()  # one pixel in the first row
    assert (x.grad.abs().sum(-1) > 0).all()


def test_swinir_window_attention_matches_explicit_softmax():
    torch.manual_seed(0)
    attn = WindowAttention(dim=12, window_size=4, num_heads=3).eval()
    with torch.no_grad():
        attn.relative_position_bias_table.normal_()
    h, w = 8, 12
    mask = shifted_window_mask(h, w, 4, 2, torch.device("cpu"))
    nw = mask.shape[0]
    x = torch.randn(2 * nw, 16, 12)
    with torch.no_grad():
        out = attn(x, mask=mask)
        qkv = attn.qkv(x).reshape(2 * nw, 16, 3, 3, 4).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0] * 4**-0.5, qkv[1], qkv[2]
        logits = q @ k.transpose(-2, -1)
        bias = attn.relative_position_bias_table[attn.relative_position_index.view(-1)].view(16, 16, 3).permute(2, 0, 1)
        logits = (logits + bias).view(2, nw, 3, 16, 16) + mask.unsqueeze(1)
        ref = (logits.view(-1, 3, 16, 16).softmax(-1) @ v).transpose(1, 2).reshape(2 * nw, 16, 12)
        ref = attn.proj(ref)
    assert torch.allclose(out, ref, atol=1e-5)
    # windows touching the wrapped border have masked pairs, the top-left one has none
    assert mask[0].eq(0).all() and mask[-1].lt(0).any()
