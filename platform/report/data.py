"""Everything a search report shows, read back from MLflow (the search's single record).

A search is found by its MLflow parent run id, its Tune experiment folder (the parent's
``tune_experiment_path`` tag) or its space / experiment name (the newest parent run).
Reading from MLflow rather than from Tune's folders means a report can be written anywhere
the tracking store is reachable, long after the Ray cluster is gone.
"""

from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from platform.errors import ConfigError

log = logging.getLogger(__name__)

PARENT_TAG = "mlflow.parentRunId"
EXPERIMENT_TAG = "tune_experiment_path"


@dataclass
class TrialData:
    trial_id: str
    run_id: str
    params: dict[str, Any]
    curve: list[tuple[int, float]]  # (epoch, metric)
    best: float | None
    stop: str
    rung: int
    epochs: int
    start: int
    metrics: dict[str, float]
    spend_usd: float | None = None

    @property
    def warm(self) -> bool:
        """Started from an earlier champion's weights (a warm-started search, some tensor transferred)."""
        return self.metrics.get("warm_init_transferred", 0.0) > 0

    @property
    def category(self) -> str:
        s = self.stop
        if s == "completed":
            return "completed"
        if s.startswith("early-stopped"):
            return "early-stopped"
        if s.startswith("stopped by budget"):
            return "budget"
        if s.startswith(("failed", "error")):
            return "failed"
        return "other"


@dataclass
class SearchData:
    name: str
    parent_run_id: str
    run_name: str
    metric: str
    mode: str
    params: dict[str, str]
    metrics: dict[str, float]
    tags: dict[str, str]
    searched: list[str]
    log_keys: set[str]
    trials: list[TrialData] = field(default_factory=list)
    cost: str | None = None
    milestones: list[int] = field(default_factory=list)
    warm: dict | None = None  # warm_start.json: the earlier searches this one learnt from

    @property
    def warm_started(self) -> bool:
        return self.warm is not None or "warm_start.weights" in self.tags

    def floors(self) -> dict[str, dict[str, float]]:
        """The classical baselines scored before the trials: ``floor.<name>.<metric>`` metrics of the
        parent run as {name: {metric: value}} (empty for searches that logged none)."""
        out: dict[str, dict[str, float]] = {}
        for key, value in self.metrics.items():
            parts = key.split(".", 2)
            if len(parts) == 3 and parts[0] == "floor":
                out.setdefault(parts[1], {})[parts[2]] = value
        return dict(sorted(out.items()))

    def ranked(self) -> list[TrialData]:
        ok = [t for t in self.trials if t.best is not None]
        return sorted(ok, key=lambda t: t.best, reverse=(self.mode == "max"))


def _is_run_id(ref: str) -> bool:
    return bool(re.fullmatch(r"[0-9a-f]{32}", ref))


def find_parent(client, ref: str):
    """The parent run for a run id, an experiment folder or a search/experiment name."""
    if _is_run_id(ref):
        return client.get_run(ref)
    exps = client.search_experiments()
    path = ref if "://" in ref else str(Path(ref).expanduser().resolve())
    if Path(ref).exists() or "://" in ref:
        runs = client.search_runs([e.experiment_id for e in exps], filter_string=f"tags.{EXPERIMENT_TAG} = '{path}'")
        if runs:
            return runs[0]
        raise ConfigError(f"no MLflow search run refers to the experiment folder {path}; check MLFLOW_TRACKING_URI.")
    exp = client.get_experiment_by_name(ref)
    if exp is None:
        names = ", ".join(sorted(e.name for e in exps if e.name != "Default")) or "(none)"
        raise ConfigError(f"no search {ref!r} in the MLflow store {client.tracking_uri}; give a parent run id, an "
                          f"experiment folder or one of: {names}.")
    runs = [r for r in client.search_runs([exp.experiment_id], order_by=["attributes.start_time DESC"],
                                          max_results=200) if PARENT_TAG not in r.data.tags]
    if not runs:
        raise ConfigError(f"MLflow experiment {ref!r} has no search (parent) run yet.")
    return runs[0]


def _parse(value: str) -> Any:
    try:
        return yaml.safe_load(value)
    except yaml.YAMLError:
        return value


def _searched_keys(client, parent_id: str) -> list[str]:
    try:
        from platform.search.conditional import SpaceModel, trial_tree

        local = client.download_artifacts(parent_id, "resolved_spec.json")
        cfg = json.loads(Path(local).read_text())
        return SpaceModel(trial_tree(cfg)).searched_paths()
    except Exception:  # no resolved spec logged (an older or failed search): no searched paths
        return []


def _log_keys(client, parent_id: str) -> set[str]:
    try:
        from platform.search.conditional import SpaceModel, trial_tree

        local = client.download_artifacts(parent_id, "resolved_spec.json")
        cfg = json.loads(Path(local).read_text())
        model = SpaceModel(trial_tree(cfg))
        return {p.path for p in model.params.values() if p.kind == "loguniform"}
    except Exception:  # no resolved spec logged (an older or failed search): linear axes
        return set()


def load_search(client, ref: str) -> SearchData:
    parent = find_parent(client, ref)
    pid = parent.info.run_id
    p = parent.data.params
    metric, mode = p.get("metric", "val_psnr"), p.get("mode", "max")
    cost = {"params": "cost_params_m", "latency": "cost_latency_ms"}.get(p.get("cost", "none"))
    searched = _searched_keys(client, pid)
    data = SearchData(name=client.get_experiment(parent.info.experiment_id).name, parent_run_id=pid,
                      run_name=parent.info.run_name or pid, metric=metric, mode=mode, params=dict(p),
                      metrics=dict(parent.data.metrics), tags=dict(parent.data.tags), searched=searched,
                      log_keys=_log_keys(client, pid), cost=cost)
    if "warm_start.searches" in parent.data.tags:
        data.warm = _json_artifact(client, pid, "warm_start.json")
    try:
        from platform.search.budget import rung_milestones

        if p.get("scheduler") in ("asha", "hyperband", "bohb"):
            data.milestones = rung_milestones(int(p["grace_period"]), float(p["reduction_factor"]), int(p["max_t"]))
    except (KeyError, ValueError):
        pass
    children = client.search_runs([parent.info.experiment_id], filter_string=f"tags.{PARENT_TAG} = '{pid}'",
                                  max_results=10000)
    for run in sorted(children, key=lambda r: r.info.start_time):
        rid = run.info.run_id
        hist = sorted((int(m.step), float(m.value)) for m in client.get_metric_history(rid, metric))
        finite = [v for _, v in hist if math.isfinite(v)]
        best = (max(finite) if mode == "max" else min(finite)) if finite else None
        tags = run.data.tags
        params = {k: _parse(v) for k, v in run.data.params.items()}
        epochs = int(tags.get("epochs") or (hist[-1][0] if hist else 0))
        data.trials.append(TrialData(
            trial_id=tags.get("trial_id", rid[:8]), run_id=rid, params=params, curve=hist, best=best,
            stop=tags.get("stop_reason", "running" if run.info.status == "RUNNING" else run.info.status.lower()),
            rung=int(tags.get("rung") or 0), epochs=epochs, start=run.info.start_time,
            metrics=dict(run.data.metrics), spend_usd=run.data.metrics.get("spend_usd")))
    if not data.searched:
        # No resolved spec (an older search): the parameters that differ between trials.
        keys = set().union(*(t.params for t in data.trials)) if data.trials else set()
        data.searched = sorted(k for k in keys if len({json.dumps(t.params.get(k), default=str)
                                                       for t in data.trials}) > 1)
    return data


def _json_artifact(client, run_id: str, name: str) -> dict | None:
    try:
        return json.loads(Path(client.download_artifacts(run_id, name)).read_text())
    except Exception:  # missing or unreadable: the report goes on without it
        log.info("no %s on run %s", name, run_id)
        return None


def validation_grid(client, run_id: str) -> bytes | None:
    """The last validation grid PNG logged by a trial run."""
    try:
        arts = [a.path for a in client.list_artifacts(run_id, "validation") if a.path.endswith(".png")]
    except Exception:  # no artefacts (or no store): the report goes without the grid
        return None
    if not arts:
        return None
    local = client.download_artifacts(run_id, max(arts))
    return Path(local).read_bytes()
