"""Structured channel pruning with torch-pruning's dependency graph, and its honest opposite.

:func:`prune_structured` removes whole channels: torch-pruning traces the network once, groups
every layer whose channels are tied (a convolution's outputs, the norm and the depthwise
convolution after it, the residual additions, NAFNet's SimpleGate halves and its per-channel
``beta``/``gamma``) and cuts each group by the same indices, ranked by the L2 norm of the group's
weights. The result is a smaller dense network: fewer parameters, fewer MACs, faster on any
kernel. Kept whole: the output layers (their channel count is the task's) and convolutions
feeding a ``PixelShuffle`` (whose channel blocks torch-pruning does not model). A lut3d model is
pruned in its local residual CNN only (the LUT nodes are not channels).

:func:`prune_unstructured` is ``torch.nn.utils.prune`` magnitude pruning: it zeroes weights but
keeps every tensor dense, so a dense kernel does the same work; it exists to measure that
(:mod:`platform.bench.compress` prints its time next to the dense model's).
"""

from __future__ import annotations

import copy
import itertools
import logging
import warnings
from collections.abc import Callable

import torch
from torch import nn

from platform.compress import structure
from platform.errors import ConfigError

log = logging.getLogger(__name__)

EXAMPLE_SIDE = 64


def check_sparsity(sparsity: float, where: str = "sparsity") -> float:
    s = float(sparsity)
    if not 0.0 <= s < 1.0:
        raise ConfigError(f"{where} is {sparsity!r}: the fraction of channels to remove must be in [0, 1) "
                          "(0.5 removes half of each prunable layer's channels).")
    return s


def _out_channels(module: nn.Module) -> int | None:
    return getattr(module, "out_channels", getattr(module, "out_features", None))


def kept_layers(model: nn.Module, output_channels: set[int]) -> list[nn.Module]:
    """Layers whose output channels must stay: the heads (as many outputs as the task has
    channels or classes) and convolutions whose outputs a PixelShuffle rearranges."""
    keep = [m for m in model.modules()
            if isinstance(m, (nn.Conv2d, nn.Linear, nn.ConvTranspose2d)) and _out_channels(m) in output_channels]
    for seq in model.modules():
        if isinstance(seq, nn.Sequential):
            children = list(seq)
            keep += [a for a, b in itertools.pairwise(children) if isinstance(b, nn.PixelShuffle)]
    return keep


def _target(model: nn.Module, example: torch.Tensor) -> tuple[nn.Module, tuple]:
    """The part of ``model`` that is pruned and its example inputs (a lut3d: the local CNN)."""
    from platform.models.lut3d import LUT3D

    if isinstance(model, LUT3D):
        if model.local is None:
            raise ConfigError(f"a lut3d model without a local residual (size {'lut' if model.weights is None else 'adaptive'})"
                              " has no channels to prune: its LUT is already a few hundred kilobytes.")
        return model.local, (example, example)
    return model, (example,)


def prune_structured(model: nn.Module, sparsity: float, output_channels: set[int], in_channels: int = 3,
                     side: int = EXAMPLE_SIDE) -> nn.Module:
    """A copy of ``model`` with ``sparsity`` of the channels of every prunable group removed."""
    import torch_pruning as tp

    sparsity = check_sparsity(sparsity)
    pruned = copy.deepcopy(model).eval()
    if sparsity == 0.0:
        return pruned
    multiple = int(getattr(model, "size_multiple", 1) or 1)
    side = -(-side // multiple) * multiple
    example = torch.rand(1, in_channels, side, side, generator=torch.Generator().manual_seed(0)) * 2 - 1
    target, inputs = _target(pruned, example)
    with warnings.catch_warnings():  # per-parameter notices about NAFNet's beta/gamma (pruned on dim 1, correctly)
        warnings.simplefilter("ignore")
        pruner = tp.pruner.MetaPruner(target, inputs if len(inputs) > 1 else inputs[0],
                                      importance=tp.importance.GroupMagnitudeImportance(p=2),
                                      pruning_ratio=sparsity, ignored_layers=kept_layers(target, output_channels))
        pruner.step()
    return pruned


def apply_pruned(model: nn.Module, config: dict) -> nn.Module:
    """The trainer's hook: give a freshly built network the widths recorded in ``config["_pruned"]``."""
    recorded = config.get("_pruned")
    return structure.apply(model, recorded) if recorded else model


def pruned_config(config: dict, pruned: nn.Module, fresh: nn.Module, sparsity: float) -> dict:
    """``config`` with the pruned widths recorded, so that the checkpoint rebuilds the pruned network."""
    return {**config, "_pruned": structure.describe(pruned, fresh),
            "compress": {**(config.get("compress") or {}), "prune": {"sparsity": float(sparsity)}}}


def prune_unstructured(model: nn.Module, sparsity: float) -> nn.Module:
    """A copy with ``sparsity`` of each convolution's / linear layer's weights set to zero (L1
    magnitude, ``torch.nn.utils.prune``), made permanent: same shapes, same dense work."""
    from torch.nn.utils import prune

    sparsity = check_sparsity(sparsity)
    pruned = copy.deepcopy(model).eval()
    for module in pruned.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear, nn.ConvTranspose2d)) and sparsity > 0:
            prune.l1_unstructured(module, "weight", amount=sparsity)
            prune.remove(module, "weight")
    return pruned


def zero_fraction(model: nn.Module) -> float:
    """Fraction of exactly-zero weights over all parameters."""
    total = sum(p.numel() for p in model.parameters())
    zeros = sum(int((p == 0).sum()) for p in model.parameters())
    return zeros / max(1, total)


def output_channels(config: dict) -> set[int]:
    """The channel counts of a network's outputs, from the task's model keywords (kept whole)."""
    kwargs = config.get("_model_kwargs") or {}
    keys = ("out_channels", "classes", "coarse_classes", "binary_classes", "num_classes")
    return {int(v) for k, v in kwargs.items() if k in keys and isinstance(v, int)} or {3}


def prune_for_trial(model: nn.Module, config: dict, build: Callable[[dict], nn.Module]) -> tuple[nn.Module, dict]:
    """The trainer's step for ``compress.prune.sparsity`` > 0: the (warm-started) network pruned,
    and the config that records its widths for checkpoints. Pruning is deterministic (weight
    norms), so a resumed trial prunes the same weights to the same shape before its checkpoint loads.
    ``build`` is the trainer's ``build_model`` (the unpruned architecture is the reference)."""
    sparsity = check_sparsity(((config.get("compress") or {}).get("prune") or {}).get("sparsity", 0.0),
                              "compress.prune.sparsity")
    if sparsity == 0.0:
        return model, config
    if not ((config.get("warm_start") or {}).get("init") == "champion" and (config.get("_run") or {}).get("warm_weights")):
        log.warning("compress.prune.sparsity %.2f without a champion's weights (warm_start.init: champion): "
                    "the pruned network starts from its own initialisation", sparsity)
    kwargs = config.get("_model_kwargs") or {}
    pruned = prune_structured(model, sparsity, output_channels(config), int(kwargs.get("in_channels", 3)))
    fresh = build({**config, "_pruned": None})
    before, after = sum(p.numel() for p in model.parameters()), sum(p.numel() for p in pruned.parameters())
    log.info("pruned %.0f%% of the channels: %.2fM -> %.2fM parameters", 100 * sparsity, before / 1e6, after / 1e6)
    return pruned, pruned_config(config, pruned, fresh, sparsity)
