"""Warm start: what earlier searches learnt, handed to a new search of a related shot.

``warm_start.searches`` (``--warm-start SEARCH ...``) names earlier searches in MLflow: a parent
run id, an experiment name or a space name (the newest finished search of it). From each one
:func:`gather` reads every trial's configuration (its MLflow params) and best value of the
metric, and maps them onto the new space:

* **points**: the best ``warm_start.points`` configurations of each earlier search are evaluated
  first (Optuna parameters; a value the new space cannot take is left out and sampled instead;
  duplicates removed);
* **trials**: every earlier trial whose values all lie in the new space becomes a completed
  Optuna trial with the new space's distributions (:meth:`WarmStart.feed`), so TPE starts
  informed. A trial with a value outside the new space (a choice that vanished, a range that
  shrank, another architecture) is dropped with a log note.

The trials given to the sampler carry the user attribute ``warm_start`` (their search's run id)
and live only in the Optuna study: Tune never runs them, so they are never counted, reported or
promoted as trials of the new search. The searches, their best values and what was used are
recorded on the new search's MLflow parent run (tags ``warm_start.*`` and ``warm_start.json``).
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass, field
from typing import Any

from platform.errors import ConfigError
from platform.search.conditional import PointSuggester, SpaceModel, distribution, flatten_point

log = logging.getLogger(__name__)

PARENT_TAG = "mlflow.parentRunId"
SPACE_TAG = "search_space"
TAG = "warm_start"  # user attribute of the earlier trials in the Optuna study
RUN_ID = re.compile(r"[0-9a-f]{32}")


@dataclass(frozen=True)
class EarlierTrial:
    """One trial of an earlier search, as MLflow recorded it."""

    search: str  # the earlier search's parent run id
    trial_id: str
    run_id: str
    config: dict[str, Any]  # dotted key -> value the trial ran with
    value: float  # its best value of the search metric
    cost: float | None = None


@dataclass
class Source:
    """An earlier search and its finished trials (best first)."""

    ref: str
    run_id: str
    name: str
    run_name: str
    metric: str
    mode: str
    trials: list[EarlierTrial]
    fed: int = 0
    dropped: list[str] = field(default_factory=list)

    @property
    def best(self) -> EarlierTrial | None:
        return self.trials[0] if self.trials else None


@dataclass
class Mapped:
    """An earlier trial as Optuna parameters and distributions of the new space."""

    trial: EarlierTrial
    params: dict[str, Any]
    distributions: dict[str, Any]


@dataclass
class WarmStart:
    sources: list[Source]
    points: list[dict]  # Optuna parameters, evaluated first
    mapped: list[Mapped]  # given to the sampler

    def feed(self, study) -> int:
        """Add the earlier trials to ``study`` as completed, tagged trials (once: a restored study
        that has them already is left alone); returns how many it holds."""
        import optuna

        if any(TAG in t.user_attrs for t in study.get_trials(deepcopy=False)):
            return sum(TAG in t.user_attrs for t in study.get_trials(deepcopy=False))
        for m in self.mapped:
            values = [m.trial.value] if len(study.directions) == 1 else [m.trial.value, m.trial.cost]
            study.add_trial(optuna.trial.create_trial(
                params=m.params, distributions=m.distributions, values=values,
                user_attrs={TAG: m.trial.search, "source_trial": m.trial.trial_id, "source_run": m.trial.run_id}))
        return len(self.mapped)

    def summary(self) -> dict:
        """What the new search learnt from where, for MLflow and the report."""
        return {"sources": [_source_summary(s) for s in self.sources], "points": self.points,
                "trials_fed": len(self.mapped)}


def _source_summary(s: Source) -> dict:
    best = s.best
    return {"ref": s.ref, "run_id": s.run_id, "name": s.name, "run_name": s.run_name, "metric": s.metric,
            "mode": s.mode, "best": best.value if best else None, "best_trial": best.trial_id if best else None,
            "best_config": best.config if best else None, "trials": len(s.trials), "fed": s.fed,
            "dropped": s.dropped[:50]}


# --------------------------------------------------------------------------- finding earlier searches
def find_search(client, ref: str):
    """The parent run of an earlier search: a run id, an experiment name or a space name."""
    if RUN_ID.fullmatch(ref):
        return _parent_by_id(client, ref)
    exp = client.get_experiment_by_name(ref)
    runs = _parents(client, [exp.experiment_id]) if exp is not None else []
    if not runs:
        ids = [e.experiment_id for e in client.search_experiments()]
        runs = _parents(client, ids, f"tags.{SPACE_TAG} LIKE '%/{ref}.yaml'") if ids else []
    finished = [r for r in runs if r.info.status == "FINISHED"]
    if finished:
        return finished[0]
    raise ConfigError(_unknown_search(client, ref, bool(runs)))


def _parent_by_id(client, run_id: str):
    from mlflow.exceptions import MlflowException

    try:
        run = client.get_run(run_id)
    except MlflowException:
        raise ConfigError(f"--warm-start {run_id}: no MLflow run with that id in {client.tracking_uri}. Give the "
                          "parent run id printed when the earlier search started, or its experiment name, and "
                          "check MLFLOW_TRACKING_URI.") from None
    parent = run.data.tags.get(PARENT_TAG)
    if parent:
        raise ConfigError(f"--warm-start {run_id}: that MLflow run is one trial of search {parent}; give the "
                          f"search's parent run id ({parent}) or its experiment name.")
    return run


def _parents(client, experiment_ids: list[str], filter_string: str = "") -> list:
    runs = client.search_runs(experiment_ids, filter_string=filter_string, max_results=1000,
                              order_by=["attributes.start_time DESC"])
    return [r for r in runs if PARENT_TAG not in r.data.tags and SPACE_TAG in r.data.tags]


def _unknown_search(client, ref: str, unfinished: bool) -> str:
    if unfinished:
        return (f"--warm-start {ref}: the searches of {ref!r} in {client.tracking_uri} did not finish; give the "
                "parent run id of the one to learn from (an unfinished search is taken when named by its id).")
    names = sorted(e.name for e in client.search_experiments() if e.name != "Default")
    return (f"--warm-start {ref}: no search {ref!r} in the MLflow store {client.tracking_uri}. Give an earlier "
            f"search's parent run id, experiment name or space name (experiments there: "
            f"{', '.join(names) or 'none'}), and check MLFLOW_TRACKING_URI.")


def read_source(client, ref: str, parent, cost_metric: str | None = None) -> Source:
    """An earlier search's finished trials, best first."""
    p = parent.data.params
    metric, mode = p.get("metric", "val_psnr"), p.get("mode", "max")
    pid = parent.info.run_id
    children = client.search_runs([parent.info.experiment_id], filter_string=f"tags.{PARENT_TAG} = '{pid}'",
                                  max_results=10000)
    trials = [t for t in (_earlier_trial(client, pid, run, metric, mode, cost_metric) for run in children) if t]
    trials.sort(key=lambda t: t.value, reverse=(mode == "max"))
    return Source(ref, pid, client.get_experiment(parent.info.experiment_id).name, parent.info.run_name or pid,
                  metric, mode, trials)


def _earlier_trial(client, search: str, run, metric: str, mode: str, cost_metric: str | None):
    values = [m.value for m in client.get_metric_history(run.info.run_id, metric) if math.isfinite(m.value)]
    if not values:
        return None
    config = {k: parse_value(v) for k, v in run.data.params.items()}
    cost = run.data.metrics.get(cost_metric) if cost_metric else None
    return EarlierTrial(search, run.data.tags.get("trial_id", run.info.run_id[:8]), run.info.run_id, config,
                        max(values) if mode == "max" else min(values), cost)


def parse_value(text: str) -> Any:
    """A trial config value back from its MLflow param text (``str(value)``)."""
    import yaml

    if text == "None":
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


# --------------------------------------------------------------------------- mapping onto the new space
class Outside(Exception):
    """An earlier trial has a value the new space cannot take."""


def map_trial(model: SpaceModel, trial: EarlierTrial) -> Mapped:
    """``trial`` as Optuna parameters of ``model``; raises :class:`Outside` (naming the value)."""
    _check_architecture(model, trial)
    where = f"trial {trial.trial_id}"
    reader = PointSuggester(_searched(model, trial.config), where, strict=True)
    try:
        model.resolve(reader, tolerant=True)
    except ConfigError as exc:
        raise Outside(str(exc)) from None
    if not reader.params:
        raise Outside(f"{where}: sets none of the keys this space searches.")
    dists = {name: distribution(model.params[name]) for name in reader.params}
    return Mapped(trial, dict(reader.params), dists)


def _searched(model: SpaceModel, config: dict) -> dict:
    keys = set(model.searched_paths())
    return {k: v for k, v in flatten_point(config).items() if k in keys}


def _check_architecture(model: SpaceModel, trial: EarlierTrial) -> None:
    mine = (model.tree.get("model") or {}).get("architecture")
    theirs = trial.config.get("model.architecture")
    if isinstance(mine, str) and theirs is not None and theirs != mine:
        raise Outside(f"trial {trial.trial_id}: `model.architecture` is {theirs!r}; this space trains {mine!r}.")


def best_points(model: SpaceModel, source: Source, k: int) -> list[dict]:
    """The best ``k`` distinct configurations of ``source`` as points of ``model`` (values the new
    space cannot take are left to the sampler)."""
    out: list[dict] = []
    for t in source.trials:
        if len(out) >= k:
            break
        where = f"warm start from {source.name}, trial {t.trial_id}"
        params = model.point_to_params(_searched(model, t.config), where, strict=False)
        if params and params not in out:
            out.append(params)
    return out


# --------------------------------------------------------------------------- the whole warm start
def gather(client, spec, model: SpaceModel) -> WarmStart | None:
    """Read ``warm_start.searches`` from MLflow and map them onto ``model`` (None: nothing to do)."""
    cfg = spec["warm_start"]
    refs = list(dict.fromkeys(cfg["searches"]))
    if not refs:
        return None
    s = spec["search"]
    cost = _objective_cost(spec)
    sources = _sources(client, refs, s["metric"], s["mode"], cost)
    points: list[dict] = []
    mapped: list[Mapped] = []
    for source in sources:
        own = best_points(model, source, int(cfg["points"]))
        points += [p for p in own if p not in points]
        mapped += _map_source(model, source, cost) if cfg["trials"] else []
        best = f"{source.best.value:.4g}" if source.best else "-"
        log.info("warm start from %s (%s, best %s %s): %d configuration(s) evaluated first, %d trial(s) given to "
                 "the sampler, %d dropped", source.name, source.run_id, source.metric, best, len(own), source.fed,
                 len(source.dropped))
    return WarmStart(sources, points, mapped)


def _objective_cost(spec) -> str | None:
    from platform.search.space import cost_metric

    return cost_metric(spec) if spec["search"]["cost"]["optimize"] else None


def _sources(client, refs: list[str], metric: str, mode: str, cost: str | None) -> list[Source]:
    sources: dict[str, Source] = {}
    for ref in refs:
        parent = find_search(client, ref)
        source = read_source(client, ref, parent, cost)
        if (source.metric, source.mode) != (metric, mode):
            raise ConfigError(f"--warm-start {ref}: that search optimised {source.metric} ({source.mode}), this one "
                              f"{metric} ({mode}); its values cannot inform this search. Warm-start from a search "
                              "of the same metric.")
        if not source.trials:
            log.warning("warm start from %s: its search %s has no trial with a %s value; nothing to learn from it",
                        ref, source.run_id, metric)
        sources.setdefault(source.run_id, source)
    return list(sources.values())


def _map_source(model: SpaceModel, source: Source, cost: str | None) -> list[Mapped]:
    out = []
    for t in source.trials:
        try:
            if cost and t.cost is None:
                raise Outside(f"trial {t.trial_id}: no {cost} recorded (this search optimises it too).")
            out.append(map_trial(model, t))
        except Outside as exc:
            source.dropped.append(str(exc))
            log.info("warm start from %s: %s Dropped from the sampler's history.", source.name, exc)
    source.fed = len(out)
    return out


# --------------------------------------------------------------------------- MLflow record
def record(client, parent_id: str, warm: WarmStart) -> None:
    """Tags ``warm_start.*`` and ``warm_start.json`` on the new search's parent run."""
    summary = warm.summary()
    client.log_dict(parent_id, summary, "warm_start.json")
    tags = {"warm_start.searches": ", ".join(f"{s.name} ({s.run_id})" for s in warm.sources),
            "warm_start.trials_fed": str(len(warm.mapped)), "warm_start.points": str(len(warm.points))}
    for k, v in tags.items():
        client.set_tag(parent_id, k, v[:5000])

