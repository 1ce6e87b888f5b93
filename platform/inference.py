"""Full-resolution inference helpers shared by validation, the registry model and predict."""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F


def size_multiple(model: torch.nn.Module) -> int:
    model = getattr(model, "module", model)  # DDP
    return int(getattr(model, "size_multiple", 1) or 1)


def autocast_for(device: torch.device, precision: str):
    """The autocast context for a precision name ("fp32", "bf16", "fp16")."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if precision == "fp16" and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()


def pad_forward(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Run ``model`` on ``x`` (NCHW) at any size: reflect-pad to the model's multiple, crop back."""
    m = size_multiple(model)
    h, w = x.shape[-2:]
    ph, pw = (-h) % m, (-w) % m
    if ph or pw:
        mode = "reflect" if ph < h and pw < w else "replicate"
        x = F.pad(x, (0, pw, 0, ph), mode=mode)
    y = model(x)
    return y[..., :h, :w]


@torch.inference_mode()
def predict_image(model: torch.nn.Module, x: torch.Tensor, precision: str = "fp32") -> torch.Tensor:
    """Deterministic full-frame prediction in [-1, 1] (float32) for an NCHW batch."""
    with autocast_for(x.device, precision):
        y = pad_forward(model, x)
    return y.float().clamp_(-1.0, 1.0)
