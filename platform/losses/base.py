"""The loss registry and helpers shared by the loss modules.

A loss component is an ``nn.Module`` class registered under a name; its constructor
takes the component's options (keyword arguments from the YAML/dict spec) and its
``forward(pred, target)`` returns a scalar tensor::

    @register_loss("l1", kind="image")
    class L1Loss(nn.Module):
        def forward(self, pred, target): ...

Metadata used by :func:`platform.losses.create` and the docs: ``kind`` ("image" or
"segmentation": what ``pred``/``target`` are), ``pretrained`` (True when the component
needs weight files from the pretrained store) and ``minimum`` (the value for a perfect
prediction when it is not 0).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch

from platform.metrics._common import fp32_math
from platform.registry import Registry

LOSSES = Registry("loss function")


def register_loss(name: str, **meta: Any) -> Callable[[type], type]:
    """Class decorator: register an ``nn.Module`` loss component under ``name``."""
    meta.setdefault("kind", "image")
    meta.setdefault("pretrained", False)
    return LOSSES.register(name, **meta)


def fp32_forward(forward: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    """Decorate ``forward(self, pred, target)`` to run in float32 with autocast off.

    Hand-written losses (SSIM statistics, FFT amplitudes, pyramids, soft Dice sums)
    lose most of their digits in bfloat16/float16; the cast costs nothing next to the
    network that produced ``pred``. The result is a float32 scalar.
    """

    @functools.wraps(forward)
    def wrapper(self, pred: torch.Tensor, target: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        with fp32_math(pred.device):
            pred = pred.float() if pred.is_floating_point() else pred
            target = target.float() if target.is_floating_point() else target
            return forward(self, pred, target, *args, **kwargs)

    return wrapper


def check_same_shape(pred: torch.Tensor, target: torch.Tensor, name: str) -> None:
    """Image losses compare tensors element-wise: refuse silent broadcasting."""
    if pred.shape != target.shape:
        raise ValueError(f"loss {name!r}: pred and target must have the same shape, got {tuple(pred.shape)} "
                         f"and {tuple(target.shape)}")
    if pred.ndim != 4:
        raise ValueError(f"loss {name!r}: expected (B, C, H, W) image tensors, got shape {tuple(pred.shape)}")
