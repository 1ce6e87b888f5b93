"""Turning a validated search spec into a Ray Tune parameter space, searcher and scheduler."""

from __future__ import annotations

import copy
from typing import Any

from ray import tune

from platform.config import SearchSpec, is_searchable

SECTIONS_IN_TRIAL = ("task", "model", "loss", "optimizer", "schedule", "train", "resources")


def to_domain(dist: dict) -> Any:
    kind, args = next(iter(dist.items()))
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


def _convert(node: Any) -> Any:
    if is_searchable(node):
        return to_domain(node)
    if isinstance(node, dict):
        return {k: _convert(v) for k, v in node.items()}
    return copy.deepcopy(node)


def searched_keys(node: Any, prefix: str = "") -> list[str]:
    """Dotted names of every searchable leaf."""
    if is_searchable(node):
        return [prefix.rstrip(".")]
    if isinstance(node, dict):
        out = []
        for k, v in node.items():
            out.extend(searched_keys(v, f"{prefix}{k}."))
        return out
    return []


def param_space(spec: SearchSpec, run_info: dict) -> dict:
    space = {section: _convert(spec[section]) for section in SECTIONS_IN_TRIAL}
    space["_run"] = dict(run_info)
    return space


def make_searcher(spec: SearchSpec):
    s = spec["search"]
    sea = s["searcher"]
    if sea["name"] == "random":
        return None
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    if sea["sampler"] == "tpe":
        sampler = optuna.samplers.TPESampler(seed=sea["seed"], n_startup_trials=sea["n_startup_trials"])
    else:
        sampler = optuna.samplers.RandomSampler(seed=sea["seed"])
    searcher = OptunaSearch(sampler=sampler, metric=s["metric"], mode=s["mode"])
    return tune.search.ConcurrencyLimiter(searcher, max_concurrent=s["max_concurrent"])


def make_scheduler(spec: SearchSpec):
    sch = spec["search"]["scheduler"]
    if sch["name"] == "fifo":
        return None
    from ray.tune.schedulers import ASHAScheduler

    return ASHAScheduler(time_attr=sch["time_attr"], grace_period=sch["grace_period"],
                         reduction_factor=sch["reduction_factor"], max_t=sch["max_t"])
