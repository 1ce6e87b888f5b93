"""A trial that starts from pretrained weights (the trial config's ``pretrained`` section).

The weights come from the project's store (:func:`platform.pretrained.load_pretrained`: strict
when the file fits the model exactly, else a partial load that reports what it transferred).
The parameters that received pretrained values are the "backbone", every other one the "head";
:mod:`platform.pretrained.finetune` gives them their own learning-rate factors, freezes the
backbone for the first epochs and warms its learning rate up afterwards. This module only wires
those pieces into the common trainer.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from platform.errors import ConfigError
from platform.pretrained.finetune import FinetuneOptions, apply_backbone_freeze, lr_lambdas, param_groups

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Finetuning:
    """What the trainer needs after the load: the options, the backbone's names, the load's counts."""

    options: FinetuneOptions
    loaded_names: frozenset[str]
    metrics: dict[str, float]

    def start_epoch(self, model: torch.nn.Module, epoch: int) -> None:
        """Freeze or unfreeze the backbone for ``epoch`` (call after ``model.train()``)."""
        apply_backbone_freeze(model, self.loaded_names, epoch, self.options)


def load_pretrained_weights(model: torch.nn.Module, cfg: dict[str, Any] | None, architecture: str,
                            world_size: int = 1, rank: int = 0) -> Finetuning | None:
    """Load ``cfg["key"]`` into ``model`` (before DDP wraps it); None when no key is set."""
    from platform.pretrained import load_pretrained

    cfg = cfg or {}
    key = cfg.get("key")
    if not key:
        return None
    report = load_pretrained(model, key, cfg.get("strict"), resize=cfg.get("resize", "none"))
    if not report.loaded_names:
        raise ConfigError(f"pretrained.key {key!r}: none of its tensors fits the {architecture} model of this "
                          f"trial ({report.summary()}). Give weights of this architecture, or set pretrained.key "
                          "to null to train from scratch.")
    mode = cfg.get("freeze_mode", "requires_grad")
    if world_size > 1 and mode == "requires_grad" and int(cfg.get("freeze_epochs", 0)) > 0:
        # DDP registers its gradient hooks once; parameters that stop receiving gradients would
        # stall its reduction. Freezing through the learning rate keeps every gradient flowing.
        mode = "lr"
        if rank == 0:
            log.info("DDP trial: the backbone is frozen through its learning rate (pretrained.freeze_mode: lr)")
    options = FinetuneOptions(backbone_lr_factor=float(cfg.get("backbone_lr_factor", 0.1)),
                              head_lr_factor=float(cfg.get("head_lr_factor", 1.0)),
                              freeze_epochs=int(cfg.get("freeze_epochs", 0)),
                              warmup_epochs=int(cfg.get("warmup_epochs", 0)), freeze_mode=mode)
    if rank == 0:
        log.info("pretrained %s: %s", key, report.summary())
    return Finetuning(options, report.loaded_names, report.as_metrics())


def optimizer_groups(model: torch.nn.Module, finetuning: Finetuning | None, lr: float,
                     weight_decay: float) -> list[dict[str, Any]]:
    """AdamW parameter groups: one group, or backbone and head at their learning-rate factors.

    A model may ask for its own factors (``lr_factors()``: {parameter name: factor}, e.g. the lut3d
    family's fitted LUT, which Adam's per-parameter steps would otherwise shake): those parameters
    get a group of their own at ``lr * factor`` (``lr_factor`` in the group, which resumes and PBT
    mutations keep)."""
    if finetuning is None:
        raw = getattr(model, "module", model)
        factors = {n: float(f) for n, f in (raw.lr_factors() if hasattr(raw, "lr_factors") else {}).items()
                   if float(f) != 1.0}
        named = [(n, p) for n, p in raw.named_parameters() if p.requires_grad]
        rest = [p for n, p in named if n not in factors]
        groups = [{"params": rest, "name": "all", "lr_factor": 1.0}] if rest else []
        for f in sorted(set(factors.values())):
            params = [p for n, p in named if factors.get(n) == f]
            if params:
                groups.append({"params": params, "name": f"lr_x{f:g}", "lr": lr * f, "lr_factor": f})
        return groups
    return param_groups(model, finetuning.loaded_names, lr, finetuning.options, weight_decay=weight_decay)


def lr_schedule(optimizer, finetuning: Finetuning | None, per_step: Callable[[int], float],
                steps_per_epoch: int) -> Callable[[int], float] | list[Callable[[int], float]]:
    """The ``LambdaLR`` multiplier(s): the trainer's schedule, times the backbone's freeze/warm-up."""
    if finetuning is None:
        return per_step
    return lr_lambdas(optimizer, finetuning.options, schedule=lambda epoch: per_step(round(epoch * steps_per_epoch)),
                      steps_per_epoch=steps_per_epoch)
