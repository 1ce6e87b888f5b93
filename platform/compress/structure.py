"""A pruned network's shape as JSON, so that it can be rebuilt from its config without pickles.

Structured pruning changes layer widths (a convolution's ``out_channels``, a norm's features,
a depthwise convolution's ``groups``) and the shapes of their tensors. :func:`describe` records,
for every module whose own tensors changed shape, those shapes and the plain attributes
(numbers, strings, tuples) that differ from a freshly built network; :func:`apply` replays them
on a fresh network, whose ``load_state_dict`` then accepts the pruned weights. The record lives
in the trial config as ``config["_pruned"]`` (JSON text in checkpoints, read with
``weights_only=True``). Written by hand because torch-pruning's own ``tp.state_dict`` stores
modules' whole ``__dict__``, which only a pickle can hold.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from platform.errors import ConfigError

_PLAIN = (int, float, bool, str, type(None))
_SKIP = {"training"}


def _plain(value: Any) -> bool:
    if isinstance(value, _PLAIN):
        return True
    return isinstance(value, (list, tuple)) and all(isinstance(v, _PLAIN) for v in value)


def _own_tensors(module: nn.Module) -> dict[str, torch.Tensor]:
    out = {k: v for k, v in module._parameters.items() if v is not None}
    out.update({k: v for k, v in module._buffers.items() if v is not None})
    return out


def _attrs(module: nn.Module) -> dict[str, Any]:
    return {k: v for k, v in vars(module).items() if not k.startswith("_") and k not in _SKIP and _plain(v)}


def describe(pruned: nn.Module, fresh: nn.Module) -> dict[str, dict]:
    """{module name: {"shapes": {tensor: shape}, "attrs": {attr: value}}} for the modules of
    ``pruned`` whose tensors differ in shape from those of ``fresh`` (the unpruned architecture)."""
    fresh_modules = dict(fresh.named_modules())
    out: dict[str, dict] = {}
    for name, module in pruned.named_modules():
        ref = fresh_modules.get(name)
        if ref is None:
            raise ConfigError(f"pruning added a module {name!r}; only widths may change.")
        mine, theirs = _own_tensors(module), _own_tensors(ref)
        shapes = {k: list(v.shape) for k, v in mine.items() if k in theirs and v.shape != theirs[k].shape}
        if not shapes:
            continue
        ref_attrs = _attrs(ref)
        attrs = {k: (list(v) if isinstance(v, tuple) else v) for k, v in _attrs(module).items()
                 if k in ref_attrs and v != ref_attrs[k]}
        out[name] = {"shapes": shapes, "attrs": attrs}
    return out


def apply(model: nn.Module, structure: dict[str, dict]) -> nn.Module:
    """Give ``model`` (freshly built) the widths recorded by :func:`describe`, in place; the
    tensors it resizes are left uninitialised (a ``load_state_dict`` follows)."""
    modules = dict(model.named_modules())
    for name, entry in structure.items():
        module = modules.get(name)
        if module is None:
            raise ConfigError(f"config _pruned names a module {name!r} that this architecture does not have; "
                              "the pruned record belongs to another network.")
        for attr, value in entry.get("attrs", {}).items():
            old = getattr(module, attr, None)
            setattr(module, attr, tuple(value) if isinstance(old, tuple) and isinstance(value, list) else value)
        for key, shape in entry.get("shapes", {}).items():
            old = _own_tensors(module).get(key)
            if old is None:
                raise ConfigError(f"config _pruned: module {name!r} has no tensor {key!r}.")
            new = torch.empty(shape, dtype=old.dtype, device=old.device)
            if key in module._parameters:
                module._parameters[key] = nn.Parameter(new, requires_grad=old.requires_grad)
            else:
                module._buffers[key] = new
    return model
