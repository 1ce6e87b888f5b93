"""Small helpers shared by the architecture modules (padding, parameter counts, weights)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from platform.errors import ConfigError


def pad_amount(size: int, multiple: int) -> int:
    """Pixels to add to ``size`` to reach the next multiple of ``multiple``."""
    return (multiple - size % multiple) % multiple


def pad_to_multiple(x: torch.Tensor, multiple: int, mode: str = "reflect") -> torch.Tensor:
    """Pad an NCHW tensor at the bottom/right so that H and W are multiples of ``multiple``.

    ``mode`` is a :func:`torch.nn.functional.pad` mode; ``reflect`` needs the pad to be
    smaller than the dimension, so it falls back to ``replicate`` for tiny inputs.
    """
    h, w = x.shape[-2:]
    ph, pw = pad_amount(h, multiple), pad_amount(w, multiple)
    if ph == 0 and pw == 0:
        return x
    if mode == "reflect" and (ph >= h or pw >= w):
        mode = "replicate"
    if mode == "constant":
        return F.pad(x, (0, pw, 0, ph))
    return F.pad(x, (0, pw, 0, ph), mode=mode)


def identity_start(layer: torch.nn.Module) -> None:
    """Zero the last layer of a residual branch, so that ``x + branch(x)`` starts as the exact identity
    (the first optimiser steps cannot make the picture worse than the input; ReZero/Fixup-style)."""
    torch.nn.init.zeros_(layer.weight)
    if getattr(layer, "bias", None) is not None:
        torch.nn.init.zeros_(layer.bias)


def count_params(model: torch.nn.Module) -> int:
    """Number of parameters of ``model`` (used by platform.bench as well)."""
    return sum(p.numel() for p in model.parameters())


def check_channels(name: str, **channels: int) -> None:
    for key, value in channels.items():
        if not isinstance(value, int) or value < 1:
            raise ConfigError(f"model {name!r}: {key} must be a positive integer, got {value!r}.")


def no_pretrained(name: str, pretrained: bool) -> None:
    """Raise a clear error for models that have no released/pretrained weights."""
    if pretrained:
        raise ConfigError(
            f"model {name!r} has no pretrained weights in this platform; set pretrained: false "
            "(or load a checkpoint of your own with the trainer's resume/init option)."
        )


def load_state_file(path_or_state: str | Path | Mapping[str, Any]) -> Mapping[str, Any]:
    """Load a checkpoint from disk (CPU, weights only) or pass a dict through."""
    if isinstance(path_or_state, Mapping):
        return path_or_state
    path = Path(path_or_state)
    if not path.is_file():
        raise ConfigError(f"checkpoint file {str(path)!r} does not exist.")
    return torch.load(path, map_location="cpu", weights_only=True)


def timm_pretrained_kwargs(timm_name: str) -> dict[str, Any]:
    """Keyword arguments making ``timm.create_model`` load ``timm/<timm_name>.pth`` from the store.

    The weight file comes from :func:`platform.pretrained.resolve` (raises
    ``WeightsUnavailableError`` when missing); timm then loads it from that local file
    (``pretrained_cfg_overlay={'file': ...}``) and never touches the network. timm's own
    checkpoint filter still runs, so the classifier is dropped and ``in_chans != 3`` is adapted.
    """
    from platform.pretrained import resolve

    path = resolve(f"timm/{timm_name}.pth")
    return {"pretrained": True, "pretrained_cfg_overlay": {"file": str(path)}}
