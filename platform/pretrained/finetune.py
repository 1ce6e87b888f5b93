"""Fine-tuning helpers: learning-rate groups, backbone freezing and warm-up for pretrained layers.

Framework-agnostic functions of ``(model, loaded_names, options)``; ``loaded_names`` is
:attr:`LoadReport.loaded_names` (the parameters that received pretrained values: the
"backbone"); every other parameter is "new" (the head, or layers that did not fit).

Typical trainer wiring::

    report = load_weights(model, path)
    opts = FinetuneOptions(backbone_lr_factor=0.1, freeze_epochs=2, warmup_epochs=3)
    optimizer = torch.optim.AdamW(param_groups(model, report.loaded_names, lr, opts))
    for epoch in range(epochs):
        model.train()
        apply_backbone_freeze(model, report.loaded_names, epoch, opts)   # after model.train()
        set_epoch_lrs(optimizer, epoch, opts, base_lr=schedule(epoch))   # or LambdaLR(lr_lambdas(...))
        ...

The pretrained group's learning rate is ``base_lr * backbone_lr_factor * pretrained_lr_scale(epoch)``
and the new group's ``base_lr * head_lr_factor``; with ``freeze_epochs=F, warmup_epochs=W`` the
scale is 0 for epochs ``0..F-1``, then ``1/(W+1), 2/(W+1), ..., W/(W+1)`` and 1 from epoch ``F+W``.

Freezing modes: ``"requires_grad"`` (default) turns gradients off for the backbone (saves
compute; under DistributedDataParallel build DDP with ``find_unused_parameters=True`` or use
``"lr"``), ``"lr"`` keeps gradients and sets the backbone's learning rate to 0 (DDP-safe;
Adam's moment estimates still update during the frozen epochs).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from torch import nn

from platform.errors import ConfigError
from platform.pretrained.loading import _strip_wrappers

PRETRAINED_GROUP = "pretrained"
NEW_GROUP = "new"


@dataclass(frozen=True)
class FinetuneOptions:
    """How pretrained ("backbone") and new ("head") parameters are trained."""

    backbone_lr_factor: float = 0.1
    head_lr_factor: float = 1.0
    freeze_epochs: int = 0
    warmup_epochs: int = 0
    freeze_mode: str = "requires_grad"  # or "lr"
    freeze_norm_stats: bool = True  # keep running stats of frozen BatchNorm layers

    def __post_init__(self) -> None:
        for name in ("backbone_lr_factor", "head_lr_factor"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value < 0:
                raise ConfigError(f"finetune.{name} = {value!r}: expected a number >= 0 (e.g. 0.1).")
        for name in ("freeze_epochs", "warmup_epochs"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ConfigError(f"finetune.{name} = {value!r}: expected a whole number of epochs >= 0.")
        if self.freeze_mode not in ("requires_grad", "lr"):
            raise ConfigError(f"finetune.freeze_mode = {self.freeze_mode!r}: use 'requires_grad' or 'lr'.")

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any] | None, *, where: str = "finetune") -> FinetuneOptions:
        """Options from a YAML/search-space mapping; unknown fields are a :class:`ConfigError`."""
        data = dict(data or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"{where}: unknown field(s) {unknown}; known fields are {sorted(known)}.")
        return cls(**data)

    def as_params(self, prefix: str = "finetune_") -> dict[str, Any]:
        """Flat mapping for MLflow params."""
        return {f"{prefix}{k}": v for k, v in asdict(self).items()}


def _loaded(loaded_names: Iterable[str]) -> set[str]:
    return {_strip_wrappers(n) for n in loaded_names}


def split_parameters(model: nn.Module, loaded_names: Iterable[str]
                     ) -> tuple[list[tuple[str, nn.Parameter]], list[tuple[str, nn.Parameter]]]:
    """``(pretrained, new)`` lists of ``(name, parameter)``; wrapper prefixes are ignored."""
    loaded = _loaded(loaded_names)
    pretrained, new = [], []
    for name, param in model.named_parameters():
        (pretrained if _strip_wrappers(name) in loaded else new).append((name, param))
    return pretrained, new


def param_groups(model: nn.Module, loaded_names: Iterable[str], lr: float,
                 options: FinetuneOptions | None = None, **group_kwargs: Any) -> list[dict[str, Any]]:
    """Optimizer parameter groups: pretrained at ``lr * backbone_lr_factor``, new at ``lr * head_lr_factor``.

    Each group carries ``name``, ``lr_factor`` and ``pretrained`` (extra keys torch optimizers keep),
    which :func:`set_epoch_lrs` and :func:`lr_lambdas` read. Empty groups are left out; frozen
    parameters are included so that unfreezing needs no new optimizer. ``group_kwargs`` (e.g.
    ``weight_decay``) are copied into every group.
    """
    options = options or FinetuneOptions()
    pretrained, new = split_parameters(model, loaded_names)
    groups = []
    for name, items, factor, is_pre in ((PRETRAINED_GROUP, pretrained, options.backbone_lr_factor, True),
                                       (NEW_GROUP, new, options.head_lr_factor, False)):
        if items:
            groups.append({"params": [p for _, p in items], "lr": lr * factor, "name": name,
                           "lr_factor": factor, "pretrained": is_pre, "param_names": [n for n, _ in items],
                           **group_kwargs})
    return groups


def pretrained_lr_scale(epoch: float, options: FinetuneOptions) -> float:
    """Multiplier of the pretrained group's learning rate at (possibly fractional) ``epoch``."""
    if epoch < options.freeze_epochs:
        return 0.0
    if options.warmup_epochs <= 0:
        return 1.0
    k = math.floor(epoch - options.freeze_epochs)
    return min(1.0, (k + 1) / (options.warmup_epochs + 1))


def _norm_modules_to_freeze(model: nn.Module, loaded: set[str]) -> list[nn.Module]:
    """BatchNorm-like modules whose own parameters are all pretrained (running stats to keep)."""
    out = []
    for mod_name, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._NormBase) and module.track_running_stats:
            names = [f"{mod_name}.{p}" if mod_name else p for p, _ in module.named_parameters(recurse=False)]
            if names and all(_strip_wrappers(n) in loaded for n in names):
                out.append(module)
    return out


def apply_backbone_freeze(model: nn.Module, loaded_names: Iterable[str], epoch: int,
                          options: FinetuneOptions) -> bool:
    """Freeze (epoch < ``freeze_epochs``) or unfreeze the pretrained parameters; True while frozen.

    Call at each epoch start, *after* ``model.train()`` (which would put frozen BatchNorm layers
    back in training mode). In ``"lr"`` mode gradients stay on and only the learning rate
    (:func:`pretrained_lr_scale`) freezes the backbone.
    """
    loaded = _loaded(loaded_names)
    frozen = epoch < options.freeze_epochs
    if options.freeze_mode == "requires_grad":
        for name, param in model.named_parameters():
            if _strip_wrappers(name) in loaded:
                param.requires_grad_(not frozen)
    if frozen and options.freeze_norm_stats:
        for module in _norm_modules_to_freeze(model, loaded):
            module.eval()
    return frozen


def group_lr_scale(group: Mapping[str, Any], epoch: float, options: FinetuneOptions) -> float:
    return pretrained_lr_scale(epoch, options) if group.get("pretrained") else 1.0


def set_epoch_lrs(optimizer, epoch: float, options: FinetuneOptions, base_lr: float) -> list[float]:
    """Set every group's lr to ``base_lr * lr_factor * scale(epoch)``; returns the lrs set.

    For trainers that compute the scheduled base learning rate themselves each epoch.
    """
    lrs = []
    for group in optimizer.param_groups:
        group["lr"] = base_lr * group.get("lr_factor", 1.0) * group_lr_scale(group, epoch, options)
        lrs.append(group["lr"])
    return lrs


def lr_lambdas(optimizer, options: FinetuneOptions, schedule: Callable[[float], float] | None = None,
               steps_per_epoch: int = 1) -> list[Callable[[int], float]]:
    """Per-group multipliers for ``torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambdas(...))``.

    ``schedule(epoch)`` is the trainer's own multiplier (cosine, step...; default 1). LambdaLR
    counts its ``step()`` calls: pass ``steps_per_epoch`` when it is stepped every batch.
    The groups' initial lrs already include the factors from :func:`param_groups`.
    """
    if steps_per_epoch < 1:
        raise ConfigError(f"steps_per_epoch = {steps_per_epoch!r}: expected >= 1.")
    base = schedule or (lambda epoch: 1.0)

    def make(group: Mapping[str, Any]) -> Callable[[int], float]:
        return lambda step: base(step / steps_per_epoch) * group_lr_scale(group, step / steps_per_epoch, options)

    return [make(group) for group in optimizer.param_groups]
