"""A validated search spec as Ray Tune pieces: parameter space, searcher and scheduler.

Searchers (``search.searcher.name``): ``optuna`` (TPE by default, or ``sampler: random``),
``random`` (Optuna's random sampler) and ``grid`` (Optuna's grid sampler over every choice,
ranges as ``grid_points`` values: the hand-tuned grid over λ this platform replaces, kept as a
baseline). All three take the define-by-run space of :mod:`platform.search.conditional`, so
conditional spaces and ``points_to_evaluate`` work with each. Schedulers
(``search.scheduler.name``): ``asha`` (default), ``hyperband``, ``bohb`` (HyperBand for BOHB + the
TuneBOHB searcher; needs the optional ``hpbandster`` and ``ConfigSpace``, see
:func:`require_bohb_packages`), ``pbt`` (population based training over the continuous keys) and
``fifo``. The searcher is wrapped in Tune's ``ConcurrencyLimiter`` and in the
budget's :class:`~platform.search.budget.BudgetLimiter`.
"""

from __future__ import annotations

import logging
from typing import Any

from platform.config import SearchSpec, is_searchable
from platform.errors import ConfigError
from platform.search.conditional import SpaceModel, _to_tune, expand_points

log = logging.getLogger(__name__)

COST_METRICS = {"params": "cost_params_m", "latency": "cost_latency_ms"}


def to_domain(dist: dict) -> Any:
    """One ``{kind: args}`` leaf as a Ray Tune domain."""
    return _to_tune(dist)


def searched_keys(node: Any, prefix: str = "") -> list[str]:
    """Dotted names of every searched key of ``node`` (conditional values included)."""
    return [prefix + p.split(".", 1)[1] for p in SpaceModel({"_": node}).searched_paths()]


def cost_metric(spec: SearchSpec) -> str | None:
    name = spec["search"]["cost"]["metric"]
    return COST_METRICS.get(name)


def uses_tune_domains(spec: SearchSpec) -> bool:
    """PBT and BOHB take Tune domains in the param space rather than a define-by-run searcher."""
    return spec["search"]["scheduler"]["name"] in ("pbt", "bohb")


def param_space(spec: SearchSpec, run_info: dict, model: SpaceModel | None = None) -> dict:
    """The trial sections with Ray Tune domains, plus ``_run`` (non-conditional spaces only)."""
    model = model or SpaceModel.from_spec(spec)
    space: dict[str, Any] = dict(model.tune_space("a Ray Tune param_space"))
    space["_run"] = dict(run_info)
    return space


def tuner_param_space(spec: SearchSpec, run_info: dict, model: SpaceModel | None = None) -> dict:
    """What the driver's Tuner gets: only ``_run`` when an Optuna searcher builds the whole trial
    config (define-by-run), the sections with Tune domains for PBT/BOHB."""
    if uses_tune_domains(spec):
        return param_space(spec, run_info, model)
    return {"_run": dict(run_info)}


def num_samples(spec: SearchSpec, model: SpaceModel) -> int:
    s = spec["search"]
    n = int(s["num_trials"])
    if s["budget"]["max_trials"]:
        n = min(n, int(s["budget"]["max_trials"]))
    if s["searcher"]["name"] == "grid":
        size = 1
        for values in model.grid(s["searcher"]["grid_points"]).values():
            size *= len(values)
        size += len(s["points_to_evaluate"] or [])
        if size < n:
            n = size
        elif size > n:
            log.warning("the grid has %d points but the search runs %d trials (search.num_trials); raise "
                        "num_trials to cover the whole grid", size, n)
    return n


def make_searcher(spec: SearchSpec, model: SpaceModel | None = None, budget_key: str | None = None, warm=None):
    """The search algorithm (wrapped for concurrency and budget), or None for PBT. ``warm``: a
    :class:`~platform.search.warmstart.WarmStart` whose points go first and whose earlier trials
    are given to Optuna's sampler."""
    from ray import tune

    s = spec["search"]
    sched = s["scheduler"]["name"]
    model = model or SpaceModel.from_spec(spec)
    points = expand_points(s["points_to_evaluate"], model, "search.points_to_evaluate")
    if warm is not None:
        points = warm.points + [p for p in points if p not in warm.points]
    if sched == "pbt":
        if points:
            log.warning("search.points_to_evaluate is ignored with PBT (it starts from random configs)")
        return None
    if sched == "bohb":
        searcher = _bohb_searcher(spec)
    else:
        searcher = _optuna_searcher(spec, model, points)
        if warm is not None and warm.mapped:
            log.info("warm start: %d earlier trial(s) given to the %s sampler", warm.feed(searcher._ot_study),
                     s["searcher"]["name"])
    searcher = tune.search.ConcurrencyLimiter(searcher, max_concurrent=s["max_concurrent"])
    if budget_key is not None:
        from platform.search.budget import BudgetLimiter

        searcher = BudgetLimiter(searcher, budget_key)
    return searcher


def _optuna_searcher(spec: SearchSpec, model: SpaceModel, points: list[dict]):
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    s = spec["search"]
    sea = s["searcher"]
    if sea["name"] == "grid":
        sampler = optuna.samplers.GridSampler(model.grid(sea["grid_points"]), seed=sea["seed"])
    elif sea["name"] == "random" or sea["sampler"] == "random":
        sampler = optuna.samplers.RandomSampler(seed=sea["seed"])
    else:
        sampler = optuna.samplers.TPESampler(seed=sea["seed"], n_startup_trials=sea["n_startup_trials"])
    metric, mode = s["metric"], s["mode"]
    cost = cost_metric(spec)
    if cost and s["cost"]["optimize"]:
        metric, mode = [metric, cost], [mode, "min"]
    return OptunaSearch(space=model, sampler=sampler, metric=metric, mode=mode, points_to_evaluate=points or None)


BOHB_INSTALL = ".venv/bin/pip install hpbandster==0.7.4 ConfigSpace==1.2.2"


def require_bohb_packages(source: str = "search.scheduler") -> None:
    """``scheduler: bohb`` needs hpbandster and ConfigSpace, an optional extra (not in requirements.txt:
    hpbandster's last release is from 2018); a ConfigError naming the install command when they are absent."""
    try:
        import ConfigSpace  # noqa: F401  (only checked for)
        import hpbandster  # noqa: F401  (only checked for)
    except ImportError:
        raise ConfigError(
            f"{source}: scheduler bohb needs the optional packages hpbandster and ConfigSpace, which are not "
            f"installed here. Install them with `{BOHB_INSTALL}` (the test stack, requirements-test.txt, has "
            "them), or use scheduler: {name: hyperband} with the optuna searcher (HyperBand's brackets with "
            "TPE).") from None


def _bohb_searcher(spec: SearchSpec):
    require_bohb_packages(spec.source)
    from ray.tune.search.bohb import TuneBOHB

    s = spec["search"]
    return TuneBOHB(metric=s["metric"], mode=s["mode"], seed=s["searcher"]["seed"])


def make_scheduler(spec: SearchSpec, model: SpaceModel | None = None):
    sch = spec["search"]["scheduler"]
    name = sch["name"]
    if name == "fifo":
        return None
    common = dict(time_attr=sch["time_attr"], max_t=sch["max_t"])
    if name == "asha":
        from platform.search.resume import ResumableASHA

        return ResumableASHA(grace_period=sch["grace_period"], reduction_factor=sch["reduction_factor"], **common)
    if name == "hyperband":
        from ray.tune.schedulers import HyperBandScheduler

        return HyperBandScheduler(reduction_factor=sch["reduction_factor"], **common)
    if name == "bohb":
        from ray.tune.schedulers import HyperBandForBOHB

        return HyperBandForBOHB(reduction_factor=sch["reduction_factor"], **common)
    if name == "pbt":
        from ray.tune.schedulers import PopulationBasedTraining

        model = model or SpaceModel.from_spec(spec)
        keys = sch["mutate"] or model.continuous_paths()
        mutations: dict[str, Any] = {}
        for key in keys:
            node = _node_at(model.tree, key)
            if not is_searchable(node):
                raise ConfigError(f"search.scheduler.mutate names `{key}`, which is not a searched key "
                                  f"(searched: {', '.join(model.searched_paths())}).")
            _set_nested(mutations, key, to_domain(node))
        if not mutations:
            raise ConfigError("scheduler pbt needs at least one searched key to mutate (e.g. optimizer.lr or a "
                              "loss weight with {uniform: [lo, hi]}).")
        return PopulationBasedTraining(time_attr=sch["time_attr"], perturbation_interval=sch["perturbation_interval"],
                                       quantile_fraction=sch["quantile_fraction"],
                                       resample_probability=sch["resample_probability"],
                                       hyperparam_mutations=mutations)
    raise ConfigError(f"unknown scheduler {name!r}")


def _node_at(tree: dict, dotted: str) -> Any:
    node: Any = tree
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def _set_nested(d: dict, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    for p in parts[:-1]:
        d = d.setdefault(p, {})
    d[parts[-1]] = value
