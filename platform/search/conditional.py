"""Conditional search spaces as an Optuna define-by-run space.

A validated search spec (see :mod:`platform.config`) may hold, besides fixed values and
distributions (``{choice: [...]}``, ``{uniform: [lo, hi]}``...), two conditional nodes::

    model:
      architecture: {choice: [nafnet, convnext_unet]}
      size: {switch: model.architecture,
             cases: {nafnet: {choice: [small, base]}, convnext_unet: {choice: [nano, tiny]}}}
    loss:
      l1: 1.0
      lpips: {optional: {uniform: [0.05, 0.5]}}   # on/off is searched; λ only when on (else 0)

:class:`SpaceModel` turns the sections of a trial into a define-by-run function for
``OptunaSearch(space=...)``: only the parameters that matter for a trial are suggested (a
ConvNeXt trial never samples a NAFNet size; a disabled component never samples its λ), so
TPE's per-parameter models see no values that meant nothing. Each distribution gets a
stable Optuna name: its dotted key, plus ``[case]`` inside a switch case (the choices of
``model.size`` differ per architecture, and Optuna needs one distribution per name) and
``?`` for the on/off flag of an optional value.

The same model translates ``points_to_evaluate`` (plain dotted keys, or ``{preset: NAME}``
from :mod:`platform.search.presets`) into Optuna parameters, enumerates a grid for the grid
searcher, and converts a plain (non-conditional) space into Ray Tune domains for the
schedulers that need them (PBT, BOHB).
"""

from __future__ import annotations

import copy
import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from platform.config import get_path, is_conditional, is_search_node, is_searchable
from platform.errors import ConfigError

log = logging.getLogger(__name__)

SECTIONS_IN_TRIAL = ("task", "model", "loss", "optimizer", "schedule", "train", "pretrained", "resources")
CONTINUOUS = ("uniform", "loguniform", "quniform", "randint")


@dataclass(frozen=True)
class Param:
    """One Optuna parameter of the space."""

    name: str  # unique Optuna name, e.g. "model.size[nafnet]" or "loss.lpips?"
    path: str  # the dotted config key it sets, e.g. "model.size"
    kind: str  # choice | grid | uniform | loguniform | quniform | randint | flag
    args: tuple

    @property
    def options(self) -> list[Any]:
        return [True, False] if self.kind == "flag" else list(self.args)

    def contains(self, value: Any) -> bool:
        if self.kind in ("choice", "grid", "flag"):
            return any(_same(value, o) for o in self.options)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        low, high = self.args
        return float(low) - 1e-12 <= float(value) <= float(high) + 1e-12


def _same(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a == b if isinstance(a, bool) or isinstance(b, bool) else a == b


def _encode(option: Any) -> Any:
    """Optuna categorical choices must be scalars; lists/dicts go as JSON strings."""
    return option if option is None or isinstance(option, (bool, int, float, str)) else json.dumps(option)


class _Unknown(Exception):
    """A point to evaluate does not fix this value (Optuna will sample it)."""


Unknown = _Unknown  # raised by a suggester that cannot give a value (see SpaceModel.resolve)
UNKNOWN = object()


def trial_tree(config: dict) -> dict:
    """The sections of a validated config that make a trial's config: :data:`SECTIONS_IN_TRIAL`,
    plus ``warm_start: {init, weights}`` when the search starts trials from an earlier champion
    (``init`` may be searched), ``distill`` in a distillation search and ``compress.prune`` in a
    pruning search (its sparsity may be searched)."""
    tree = {s: config[s] for s in SECTIONS_IN_TRIAL if s in config}
    warm = config.get("warm_start") or {}
    if warm.get("weights"):
        tree["warm_start"] = {"init": warm.get("init", "champion"), "weights": warm["weights"]}
    if (config.get("distill") or {}).get("teacher"):  # a distillation search: λ, T, ... may be searched
        tree["distill"] = config["distill"]
    prune = (config.get("compress") or {}).get("prune") or {}
    if prune.get("sparsity"):  # searched ({choice: ...}) or a fixed fraction above 0
        tree["compress"] = {"prune": prune}
    return tree


def distribution(p: Param):
    """The Optuna distribution :class:`OptunaSuggester` asks for ``p`` (earlier trials given to the
    sampler must carry the very same one, or Optuna refuses the name)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if p.kind in ("choice", "grid", "flag"):
        return CategoricalDistribution([_encode(o) for o in p.options])
    low, high = p.args
    if p.kind == "uniform":
        return FloatDistribution(float(low), float(high))
    if p.kind == "loguniform":
        return FloatDistribution(float(low), float(high), log=True)
    if p.kind == "quniform":
        return FloatDistribution(float(low), float(high), step=1.0)
    if p.kind == "randint":
        return IntDistribution(int(low), int(high))
    raise ValueError(p.kind)


# --------------------------------------------------------------------------- suggesters
class OptunaSuggester:
    """Asks an ``optuna.Trial`` (or Ray's capturing wrapper around one) for each parameter."""

    def __init__(self, trial):
        # Ray's OptunaSearch wraps the trial to capture suggested values under their Optuna names
        # and merges them into the config; we return the whole config ourselves, so suggest on the
        # raw trial and keep our internal names (``model.size[nafnet]``) out of the trial config.
        self.trial = getattr(trial, "ot_trial", trial)

    def __call__(self, p: Param) -> Any:
        t = self.trial
        if p.kind in ("choice", "grid", "flag"):
            options = p.options
            encoded = [_encode(o) for o in options]
            picked = t.suggest_categorical(p.name, encoded)
            return options[encoded.index(picked)]
        low, high = p.args
        if p.kind == "uniform":
            return t.suggest_float(p.name, float(low), float(high))
        if p.kind == "loguniform":
            return t.suggest_float(p.name, float(low), float(high), log=True)
        if p.kind == "quniform":
            return t.suggest_float(p.name, float(low), float(high), step=1.0)
        if p.kind == "randint":
            return t.suggest_int(p.name, int(low), int(high))
        raise ValueError(p.kind)


class PointSuggester:
    """Reads parameters from a user's point (dotted key -> value) and records Optuna names."""

    def __init__(self, point: dict[str, Any], where: str, strict: bool):
        self.point, self.where, self.strict = point, where, strict
        self.params: dict[str, Any] = {}
        self.used: set[str] = set()

    def __call__(self, p: Param) -> Any:
        if p.path not in self.point:
            raise _Unknown(p.path)
        value = self.point[p.path]
        self.used.add(p.path)
        if p.kind == "flag":
            on = not (isinstance(value, (int, float)) and not isinstance(value, bool) and value == 0) \
                and value is not None and value is not False
            self.params[p.name] = on
            return on
        if not p.contains(value):
            if self.strict:
                allowed = ", ".join(map(repr, p.options)) if p.kind in ("choice", "grid") else f"[{p.args[0]}, {p.args[1]}]"
                raise ConfigError(f"{self.where}: `{p.path}` is {value!r}, outside its search space here ({allowed}).")
            log.info("%s: %s=%r is outside this space; it will be sampled instead", self.where, p.path, value)
            raise _Unknown(p.path)
        self.params[p.name] = _encode(value) if p.kind in ("choice", "grid") else value
        return value


# --------------------------------------------------------------------------- the model
class SpaceModel:
    """The searchable sections of a spec; callable as an Optuna define-by-run function."""

    def __init__(self, sections: dict[str, Any]):
        self.tree = copy.deepcopy(sections)
        self.params: dict[str, Param] = {}
        for key, node in self.tree.items():
            self._collect(node, key, "")

    @classmethod
    def from_spec(cls, spec) -> SpaceModel:
        return cls(trial_tree(spec.config))

    # ---------------------------------------------------------------- static structure
    def _collect(self, node: Any, path: str, ctx: str) -> None:
        if is_searchable(node):
            kind, args = next(iter(node.items()))
            self._add(Param(path + ctx, path, kind, tuple(args)))
        elif is_conditional(node):
            if "switch" in node:
                for case, value in node["cases"].items():
                    self._collect(value, path, f"{ctx}[{case}]")
                if "default" in node:
                    self._collect(node["default"], path, f"{ctx}[default]")
            else:
                self._add(Param(f"{path}{ctx}?", path, "flag", (True, False)))
                self._collect(node["optional"], path, ctx)
        elif isinstance(node, dict):
            for k, v in node.items():
                self._collect(v, f"{path}.{k}", ctx)

    def _add(self, p: Param) -> None:
        self.params[p.name] = p

    @property
    def conditional(self) -> bool:
        return any(is_conditional(n) for n in _nodes(self.tree))

    def searched_paths(self) -> list[str]:
        """Dotted keys a searcher sets (each once, in file order)."""
        return list(dict.fromkeys(p.path for p in self.params.values()))

    def continuous_paths(self) -> list[str]:
        return list(dict.fromkeys(p.path for p in self.params.values() if p.kind in CONTINUOUS))

    # ---------------------------------------------------------------- resolution
    def resolve(self, suggest: Callable[[Param], Any], tolerant: bool = False) -> dict:
        """The trial's concrete sections, asking ``suggest`` for every parameter that matters.
        ``tolerant``: a ``suggest`` that raises :class:`Unknown` leaves that value (and what
        depends on it) as :data:`UNKNOWN` instead of failing."""
        return _Resolver(self.tree, suggest, tolerant=tolerant).run()

    def __call__(self, trial) -> dict:
        """Define-by-run entry point for ``OptunaSearch(space=model)``."""
        return self.resolve(OptunaSuggester(trial))

    def sample(self, trial) -> dict:
        return self(trial)

    # ---------------------------------------------------------------- points to evaluate
    def point_to_params(self, point: dict, where: str = "points_to_evaluate", strict: bool = True) -> dict:
        """Optuna parameters (``{name: value}``) for a point given as dotted keys / nested dicts."""
        flat = flatten_point(point)
        known = set(self.searched_paths())
        unknown = [k for k in flat if k not in known]
        if unknown and strict:
            raise ConfigError(f"{where}: {', '.join(f'`{k}`' for k in unknown)} "
                              f"{'is' if len(unknown) == 1 else 'are'} not searched in this space; searched keys: "
                              f"{', '.join(sorted(known)) or '(none)'}.")
        s = PointSuggester({k: v for k, v in flat.items() if k in known}, where, strict)
        _Resolver(self.tree, s, tolerant=True).run()
        return s.params

    # ---------------------------------------------------------------- grid
    def grid(self, points: int) -> dict[str, list]:
        """Optuna ``GridSampler`` space: every option, ranges as ``points`` values."""
        if self.conditional:
            raise ConfigError("the grid searcher needs a space without switch/optional values; use the optuna or "
                              "random searcher for conditional spaces (or spell the grid out with {grid: [...]}).")
        out: dict[str, list] = {}
        for p in self.params.values():
            if p.kind in ("choice", "grid"):
                out[p.name] = [_encode(o) for o in p.options]
            else:
                out[p.name] = _range_points(p, points)
        return out

    # ---------------------------------------------------------------- Ray Tune domains
    def tune_space(self, why: str) -> dict:
        """Sections with Tune domains (for PBT / BOHB, which take no define-by-run space)."""
        if self.conditional:
            raise ConfigError(f"{why} cannot search a conditional space (switch/optional values); use "
                              "scheduler asha or hyperband with the optuna or random searcher.")
        return {k: _to_tune(v) for k, v in self.tree.items()}


class _Resolver:
    """Evaluates the tree depth-first; a ``switch`` resolves the key it depends on first."""

    def __init__(self, tree: dict, suggest: Callable[[Param], Any], tolerant: bool = False):
        self.tree, self.suggest, self.tolerant = tree, suggest, tolerant
        self.memo: dict[str, Any] = {}
        self.active: set[str] = set()

    def run(self) -> dict:
        return {k: self.value(k) for k in self.tree}

    def value(self, path: str) -> Any:
        if path in self.memo:
            return self.memo[path]
        if path in self.active:
            raise ConfigError(f"search space: `{path}` depends on itself through switch values.")
        self.active.add(path)
        try:
            node = get_path(self.tree, path)
        except KeyError:
            raise ConfigError(f"search space: a switch refers to `{path}`, which does not exist.") from None
        out = self.eval(node, path, "")
        self.active.discard(path)
        self.memo[path] = out
        return out

    def eval(self, node: Any, path: str, ctx: str) -> Any:
        if is_searchable(node):
            kind, args = next(iter(node.items()))
            try:
                return self.suggest(Param(path + ctx, path, kind, tuple(args)))
            except _Unknown:
                if self.tolerant:
                    return UNKNOWN
                raise
        if is_conditional(node):
            if "switch" in node:
                ref = self.value(node["switch"])
                if ref is UNKNOWN:
                    return UNKNOWN
                for case, sub in node["cases"].items():
                    if str(case) == str(ref):
                        return self.eval(sub, path, f"{ctx}[{case}]")
                if "default" in node:
                    return self.eval(node["default"], path, f"{ctx}[default]")
                raise ConfigError(f"search space: `{path}` has no case for {node['switch']} = {ref!r}.")
            try:
                on = self.suggest(Param(f"{path}{ctx}?", path, "flag", (True, False)))
            except _Unknown:
                if self.tolerant:
                    return UNKNOWN
                raise
            return self.eval(node["optional"], path, ctx) if on else copy.deepcopy(node.get("off", 0.0))
        if isinstance(node, dict):
            out = {}
            for k, v in node.items():
                sub = f"{path}.{k}"
                out[k] = self.memo[sub] if (not ctx and sub in self.memo) else self.eval(v, sub, ctx)
                if not ctx:
                    self.memo[sub] = out[k]
            return out
        return copy.deepcopy(node)


# --------------------------------------------------------------------------- helpers
def _nodes(node: Any):
    yield node
    if isinstance(node, dict) and not is_searchable(node):
        for v in (node.get("cases", {}).values() if is_conditional(node) and "switch" in node else node.values()):
            yield from _nodes(v)


def flatten_point(point: dict, prefix: str = "") -> dict[str, Any]:
    """``{"model": {"size": "base"}, "optimizer.lr": 1e-3}`` -> dotted keys."""
    out: dict[str, Any] = {}
    for k, v in point.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v and not is_search_node(v):
            out.update(flatten_point(v, key + "."))
        else:
            out[key] = v
    return out


def _range_points(p: Param, n: int) -> list:
    low, high = float(p.args[0]), float(p.args[1])
    if n == 1:
        vals = [math.sqrt(low * high) if p.kind == "loguniform" else (low + high) / 2]
    elif p.kind == "loguniform":
        vals = [math.exp(math.log(low) + i * (math.log(high) - math.log(low)) / (n - 1)) for i in range(n)]
    else:
        vals = [low + i * (high - low) / (n - 1) for i in range(n)]
    if p.kind in ("randint", "quniform"):
        rounded = [round(v) for v in vals]
        return list(dict.fromkeys(rounded)) if p.kind == "randint" else [float(v) for v in dict.fromkeys(rounded)]
    return [float(f"{v:.6g}") for v in vals]


def _to_tune(node: Any) -> Any:
    from ray import tune

    if is_searchable(node):
        kind, args = next(iter(node.items()))
        if kind == "choice":
            return tune.choice(list(args))
        if kind == "grid":
            return tune.grid_search(list(args))
        low, high = args
        if kind == "uniform":
            return tune.uniform(float(low), float(high))
        if kind == "loguniform":
            return tune.loguniform(float(low), float(high))
        if kind == "randint":
            return tune.randint(int(low), int(high) + 1)
        if kind == "quniform":
            return tune.quniform(float(low), float(high), 1)
        raise ValueError(kind)
    if isinstance(node, dict):
        return {k: _to_tune(v) for k, v in node.items()}
    return copy.deepcopy(node)


def expand_points(points: list, model: SpaceModel, where: str) -> list[dict]:
    """``search.points_to_evaluate`` as Optuna parameter dicts (presets expanded)."""
    from platform.search.presets import PRESETS

    out = []
    for i, point in enumerate(points or []):
        at = f"{where}[{i}]"
        if not isinstance(point, dict) or not point:
            raise ConfigError(f"{at} is {point!r}; give a mapping of dotted keys to values "
                              "(e.g. {optimizer.lr: 1.0e-3}) or {preset: NAME}.")
        point = dict(point)
        strict = True
        if "preset" in point:
            name = point.pop("preset")
            if name not in PRESETS:
                raise ConfigError(f"{at}: unknown preset {name!r}; presets: {', '.join(sorted(PRESETS))}.")
            # A preset covers more keys than any one space searches: keep the ones this space searches.
            base = {k: v for k, v in PRESETS[name]["values"].items() if k in set(model.searched_paths())}
            point = {**base, **flatten_point(point)}
            strict = False
        params = model.point_to_params(point, at, strict=strict)
        if params:
            out.append(params)
        else:
            log.warning("%s sets none of the searched keys of this space; skipped", at)
    return out
