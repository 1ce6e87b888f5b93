"""Weighted sums of registered loss components, built from a dict spec.

Spec format (a dict, e.g. from a search-space YAML)::

    {"l1": 1.0, "lpips": 0.1, "laplacian": 0.5, "ssim": 0.2}        # name -> weight
    {"vgg": {"weight": 0.1, "layers": ["relu2_2", "relu3_3"]}}      # name -> weight + options
    {"edges": {"type": "sobel", "weight": 0.3, "mode": "magnitude"}} # own label, explicit type

Reserved keys in an options dict: ``weight`` (default 1.0), ``type`` (the registered
loss; default: the label) and ``input`` (how ``pred``/``target`` are adapted for this
component: ``"identity"`` (default); ``"sigmoid"`` — binary logits become the image
``2*sigmoid(pred) - 1`` and the {0, 1} mask ``2*mask - 1``, so image losses (vgg, sobel,
lpips, ssim...) can score a segmentation head in [-1, 1]; ``"softmax"`` — idem with
``2*softmax - 1`` and the one-hot target; target pixels outside the valid labels
(``ignore_index``) take the prediction's value there, so they add nothing).
Everything else is passed to the component's constructor.

Weights must be non-negative numbers; a weight of 0 drops the component before it is
built (it costs nothing). Unknown names, unknown options and negative weights raise
:class:`platform.errors.ConfigError` naming the component.
"""

from __future__ import annotations

import inspect
import logging
import math
import numbers
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from platform.errors import ConfigError
from platform.losses.base import LOSSES
from platform.pretrained import WeightsUnavailableError

log = logging.getLogger(__name__)

INPUTS = ("identity", "sigmoid", "softmax")
_RESERVED = ("weight", "type", "input")

PRESETS: dict[str, dict[str, Any]] = {
    # the composite background-removal loss a*BCE + b*Dice + c*Perceptual + d*Edge with
    # a=1.0, b=1.0, c=0.5, d=0.3; perceptual (VGG) and edge (Sobel) terms score the predicted
    # mask sigmoid(logits) against the true mask, both mapped to [-1, 1].
    "background_removal": {
        "bce": 1.0,
        "dice": 1.0,
        "vgg": {"weight": 0.5, "input": "sigmoid"},
        "sobel": {"weight": 0.3, "input": "sigmoid"},
    },
    # The hybrid image loss L1 + LPIPS + Laplacian + SSIM for VFX looks; these lambdas are the
    # platform's starting point for the search (not tuned values).
    "vfx_hybrid": {"l1": 1.0, "lpips": 0.1, "laplacian": 0.5, "ssim": 0.2},
}


def check_weight(value: Any, where: str) -> float:
    """A finite non-negative float, or ConfigError naming ``where``."""
    # numbers.Real also admits numpy scalars, which search samplers may hand over.
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigError(f"{where}: weight must be a non-negative number, got {value!r}")
    weight = float(value)
    if not math.isfinite(weight) or weight < 0:
        raise ConfigError(f"{where}: weight must be a non-negative number, got {value!r}")
    return weight


def _accepted_options(cls: type) -> tuple[list[str], bool]:
    params = list(inspect.signature(cls.__init__).parameters.values())[1:]
    takes_kwargs = any(p.kind is p.VAR_KEYWORD for p in params)
    names = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    return names, takes_kwargs


def _adapt_sigmoid(pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if pred.ndim == 3:
        pred = pred.unsqueeze(1)
    if target.ndim == 3:
        target = target.unsqueeze(1)
    image = 2 * torch.sigmoid(pred.float()) - 1
    t = target.to(image.dtype)
    valid = (t >= 0) & (t <= 1)
    t = torch.where(valid, 2 * t - 1, image.detach())
    return image, t


def _adapt_softmax(pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    classes = pred.shape[1]
    image = 2 * torch.softmax(pred.float(), dim=1) - 1
    if target.ndim == 4 and target.shape[1] == 1:
        target = target[:, 0]
    labels = target.long()
    valid = (labels >= 0) & (labels < classes)
    one_hot = F.one_hot(labels.clamp(0, classes - 1), classes).permute(0, 3, 1, 2).to(image.dtype)
    t = torch.where(valid.unsqueeze(1), 2 * one_hot - 1, image.detach())
    return image, t


_ADAPTERS = {"sigmoid": _adapt_sigmoid, "softmax": _adapt_softmax}


class HybridLoss(nn.Module):
    """``total = sum_i w_i * L_i(pred, target)`` over the active components.

    ``forward(pred, target) -> (total, parts)``: ``total`` is a differentiable float32
    scalar; ``parts`` maps each component name to its *unweighted* value, detached.
    Attributes: ``weights`` (active components only), ``dropped`` (name -> reason, for
    components left out by ``allow_unavailable``), ``inputs`` (name -> input adapter),
    ``spec`` (the normalised spec of the active components, for logging).
    """

    def __init__(self, components: Mapping[str, nn.Module], weights: Mapping[str, float],
                 inputs: Mapping[str, str] | None = None, dropped: Mapping[str, str] | None = None,
                 spec: Mapping[str, Any] | None = None):
        super().__init__()
        if set(components) != set(weights):
            raise ValueError("HybridLoss: components and weights must have the same names")
        self.components = nn.ModuleDict(dict(components))
        self.weights: dict[str, float] = {name: float(weights[name]) for name in components}
        self.inputs: dict[str, str] = {name: (inputs or {}).get(name, "identity") for name in components}
        self.dropped: dict[str, str] = dict(dropped or {})
        self.spec: dict[str, Any] = dict(spec or {})

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        adapted: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        total = None
        parts: dict[str, torch.Tensor] = {}
        for name, module in self.components.items():
            kind = self.inputs[name]
            if kind == "identity":
                p, t = pred, target
            else:
                if kind not in adapted:
                    adapted[kind] = _ADAPTERS[kind](pred, target)
                p, t = adapted[kind]
            value = module(p, t).float()
            parts[name] = value.detach()
            term = self.weights[name] * value
            total = term if total is None else total + term
        return total, parts

    def extra_repr(self) -> str:
        terms = " + ".join(f"{w:g}*{n}" for n, w in self.weights.items())
        dropped = f", dropped={sorted(self.dropped)}" if self.dropped else ""
        return f"total={terms}{dropped}"


def _parse_entry(label: Any, value: Any) -> tuple[float, str, str, dict[str, Any]]:
    if not isinstance(label, str) or not label or "." in label:
        raise ConfigError(f"loss component name {label!r} must be a non-empty string without dots")
    where = f"loss component {label!r}"
    if isinstance(value, Mapping):
        options = dict(value)
        weight = check_weight(options.pop("weight", 1.0), where)
        type_name = options.pop("type", label)
        input_kind = options.pop("input", "identity")
        if input_kind not in INPUTS:
            raise ConfigError(f"{where}: input must be one of {', '.join(INPUTS)}, got {input_kind!r}")
        return weight, str(type_name), input_kind, options
    return check_weight(value, where), label, "identity", {}


def _build_component(label: str, type_name: str, options: dict[str, Any]) -> nn.Module:
    where = f"loss component {label!r}"
    cls = LOSSES.get(type_name, where=where)
    accepted, takes_kwargs = _accepted_options(cls)
    unknown = [k for k in options if k not in accepted]
    if unknown and not takes_kwargs:
        raise ConfigError(f"{where} ({type_name}): unknown option(s) {', '.join(map(repr, unknown))}; accepted: "
                          f"{', '.join(accepted + list(_RESERVED)) or 'weight, type, input'}")
    try:
        return cls(**options)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where} ({type_name}): {exc}") from exc


def create(spec: Mapping[str, Any] | str, *, allow_unavailable: bool = False) -> HybridLoss:
    """Build a :class:`HybridLoss` from a spec (see the module docstring) or a preset name.

    ``allow_unavailable=True``: a component whose pretrained weights cannot be had
    (:class:`~platform.pretrained.WeightsUnavailableError`, e.g. the LPIPS trunk is not
    in the store) is left out and recorded in ``loss.dropped`` (name -> message) and
    logged once as a warning; otherwise the error propagates. If nothing is left, a
    ConfigError lists the reasons.
    """
    if isinstance(spec, str):
        if spec in PRESETS:
            spec = PRESETS[spec]
        elif spec in LOSSES:
            spec = {spec: 1.0}
        else:
            raise ConfigError(f"unknown loss preset or name {spec!r}; presets: {', '.join(sorted(PRESETS))}; "
                              f"losses: {', '.join(LOSSES.available())}")
    if not isinstance(spec, Mapping) or not spec:
        raise ConfigError(f"a loss spec must be a non-empty mapping of component name -> weight, got {spec!r}")

    parsed = {label: _parse_entry(label, value) for label, value in spec.items()}
    components: dict[str, nn.Module] = {}
    weights: dict[str, float] = {}
    inputs: dict[str, str] = {}
    dropped: dict[str, str] = {}
    normalised: dict[str, Any] = {}
    for label, (weight, type_name, input_kind, options) in parsed.items():
        LOSSES.get(type_name, where=f"loss component {label!r}")  # unknown names fail even at weight 0
        if weight == 0:
            continue
        try:
            module = _build_component(label, type_name, options)
        except WeightsUnavailableError as exc:
            if not allow_unavailable:
                raise
            dropped[label] = str(exc)
            log.warning("loss component %r dropped: %s", label, exc)
            continue
        components[label] = module
        weights[label] = weight
        inputs[label] = input_kind
        normalised[label] = {"type": type_name, "weight": weight, "input": input_kind, **options}
    if not components:
        if dropped:
            reasons = "; ".join(f"{k}: {v}" for k, v in dropped.items())
            raise ConfigError(f"no loss component is left after dropping those without weights ({reasons})")
        raise ConfigError(f"every weight in the loss spec {dict(spec)!r} is 0; give at least one a positive weight")
    return HybridLoss(components, weights, inputs, dropped, normalised)


# Default level weights of the hierarchical loss: the fine level (the primary metric) weighs most.
DEFAULT_LEVEL_WEIGHTS = {"binary": 0.2, "coarse": 0.3, "fine": 0.5}


class HierarchicalLoss(nn.Module):
    """Multi-head loss ``sum_l w_l * L_l(pred[l], target[l])`` (default 0.2/0.3/0.5).

    ``forward(preds, targets)`` takes dicts keyed by level (``"binary"``, ``"coarse"``,
    ``"fine"``) and returns ``(total, parts)`` with ``parts[level]`` = that level's
    unweighted loss (detached). ``weights`` = active level weights; ``levels`` = the
    per-level :class:`HybridLoss` modules; ``dropped`` = ``"level.component"`` -> reason.
    """

    def __init__(self, levels: Mapping[str, HybridLoss], weights: Mapping[str, float]):
        super().__init__()
        self.levels = nn.ModuleDict(dict(levels))
        self.weights: dict[str, float] = {name: float(weights[name]) for name in levels}
        self.dropped: dict[str, str] = {f"{level}.{name}": reason for level, loss in levels.items()
                                        for name, reason in loss.dropped.items()}

    def forward(self, preds: Mapping[str, torch.Tensor],
                targets: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        total = None
        parts: dict[str, torch.Tensor] = {}
        for level, loss in self.levels.items():
            for what, given in (("predictions", preds), ("targets", targets)):
                if level not in given:
                    raise ValueError(f"hierarchical loss: {what} have no level {level!r} (got "
                                     f"{sorted(given)}; expected {sorted(self.levels)})")
            value, _ = loss(preds[level], targets[level])
            parts[level] = value.detach()
            term = self.weights[level] * value
            total = term if total is None else total + term
        return total, parts


def create_hierarchical(
    level_weights: Mapping[str, Any] | None = None,
    base: Mapping[str, Any] | str | None = None,
    *,
    allow_unavailable: bool = False,
) -> HierarchicalLoss:
    """Build the hierarchical (binary / coarse / fine) loss.

    ``level_weights``: level -> weight (default ``{"binary": 0.2, "coarse": 0.3, "fine":
    0.5}``); levels with weight 0 are skipped. ``base``: the loss spec used at every level
    (default ``{"dice": 1.0}``, a Dice loss; mode "auto" makes a 1-channel head
    binary and a C-channel head multiclass), or a dict keyed by level name giving each
    level its own spec.
    """
    if level_weights is None:
        level_weights = DEFAULT_LEVEL_WEIGHTS
    if base is None:
        base = {"dice": 1.0}
    if not isinstance(level_weights, Mapping) or not level_weights:
        raise ConfigError(f"hierarchical loss: level weights must be a non-empty mapping, got {level_weights!r}")
    weights = {str(level): check_weight(w, f"hierarchical loss level {level!r}") for level, w in level_weights.items()}
    active = [level for level, w in weights.items() if w > 0]
    if not active:
        raise ConfigError(f"hierarchical loss: every level weight in {dict(level_weights)!r} is 0")
    per_level = isinstance(base, Mapping) and bool(base) and all(key in weights for key in base)
    levels: dict[str, HybridLoss] = {}
    if per_level:
        missing = [level for level in active if level not in base]
        if missing:
            raise ConfigError(f"hierarchical loss: per-level base specs are missing level(s) {missing}")
        for level in active:
            levels[level] = create(base[level], allow_unavailable=allow_unavailable)
    else:
        shared = create(base, allow_unavailable=allow_unavailable)  # one module set, reused by every level
        levels = {level: shared for level in active}
    return HierarchicalLoss(levels, {level: weights[level] for level in active})
