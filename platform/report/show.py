"""A show's page: one row per shot with its search, champion, floors and gain.

``python -m platform.report --show NAME [NAME ...]``: each NAME is a show (the ``show:`` key of a
search space, a tag on its searches' MLflow parent runs) or one search (parent run id,
experiment folder or name). Each shot (MLflow experiment) is listed once, with its newest
search: trials, best value, the best floor, the registry's champion (version, score, the floor
it was promoted over and its gain; without a champion, the best trial's margin over the best
floor) and where a warm-started search learnt from, linked to the search's own report (written
next to the page when it is missing). Shots are listed in the order their searches started.
"""

from __future__ import annotations

import html
import logging
import math
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from string import Template

from platform.config import REPO_ROOT
from platform.errors import ConfigError

log = logging.getLogger(__name__)

TEMPLATE = REPO_ROOT / "dashboards" / "show_report.html"
PARENT_TAG = "mlflow.parentRunId"


@dataclass
class Shot:
    name: str  # the experiment: search and registered-model name
    run_id: str
    run_name: str
    metric: str
    mode: str
    trials: int
    best: float | None
    floor: tuple[str, float] | None
    champion: str | None = None  # version
    champion_score: float | None = None
    gain: float | None = None  # champion score - the floor it was promoted over (else the best trial's margin)
    start: int = 0
    warm_from: str = ""
    report: Path | None = None


def find_shots(client, names: list[str]) -> list:
    """The newest search of each shot that ``names`` designate (parent runs, in order)."""
    from platform.report.data import find_parent

    found: dict[str, object] = {}
    for name in names:
        runs = _tagged(client, name)
        if not runs:
            try:
                runs = [find_parent(client, name)]
            except ConfigError:
                raise ConfigError(f"--show {name}: no search carries the tag show={name!r} and no search is called "
                                  f"that in {client.tracking_uri}. Set `show: {name}` in the shots' search spaces "
                                  "(or --set show=NAME) and run them, or give search names.") from None
        for run in runs:
            found.setdefault(run.info.experiment_id, run)
    return sorted(found.values(), key=lambda r: r.info.start_time)


def _tagged(client, show: str) -> list:
    ids = [e.experiment_id for e in client.search_experiments()]
    if not ids:
        return []
    runs = client.search_runs(ids, filter_string=f"tags.show = '{show}'", order_by=["attributes.start_time DESC"],
                              max_results=1000)
    return [r for r in runs if PARENT_TAG not in r.data.tags]


def shot(client, parent) -> Shot:
    """What the show page says about one shot's search."""
    p, tags = parent.data.params, parent.data.tags
    metric, mode = p.get("metric", "val_psnr"), p.get("mode", "max")
    name = client.get_experiment(parent.info.experiment_id).name
    s = Shot(name, parent.info.run_id, parent.info.run_name or parent.info.run_id, metric, mode,
             int(tags.get("trials", 0) or 0), parent.data.metrics.get(f"best_{metric}"),
             _best_floor(parent.data.metrics, metric, mode))
    s.start = parent.info.start_time
    s.warm_from = _learnt_from(tags)
    _champion(client, s)
    if s.champion is None and s.best is not None and s.floor is not None:
        s.gain = s.best - s.floor[1] if mode == "max" else s.floor[1] - s.best
    return s


def _learnt_from(tags: dict) -> str:
    """``shot_a + weights models:/shot_a@champion (v3)`` from a warm-started search's tags."""
    searches = re.sub(r" \([0-9a-f]{32}\)", "", tags.get("warm_start.searches", ""))
    weights = tags.get("warm_start.weights", "")
    if weights and tags.get("warm_start.weights_version"):
        weights += f" (v{tags['warm_start.weights_version']})"
    return " + ".join(x for x in (searches, f"weights {weights}" if weights else "") if x)


def _best_floor(metrics: dict, metric: str, mode: str) -> tuple[str, float] | None:
    floors = [(k.split(".")[1], v) for k, v in metrics.items()
              if k.startswith("floor.") and k.endswith(f".{metric}") and math.isfinite(v)]
    return (max if mode == "max" else min)(floors, key=lambda f: f[1]) if floors else None


def _champion(client, s: Shot) -> None:
    from mlflow.exceptions import MlflowException

    try:
        v = client.get_model_version_by_alias(s.name, "champion")
    except MlflowException:
        return
    tags = v.tags or {}
    s.champion = str(v.version)
    s.champion_score = _float(tags.get("promotion.score"))
    floor = tags.get("promotion.floor", "none")
    base = _float(floor.split("=", 1)[1]) if "=" in floor else (s.floor[1] if s.floor else None)
    if s.champion_score is not None and base is not None:
        s.gain = s.champion_score - base if s.mode == "max" else base - s.champion_score


def _float(text: str | None) -> float | None:
    try:
        return float(text) if text not in (None, "none") else None
    except ValueError:
        return None


def ensure_report(client, s: Shot, folder: Path) -> Path | None:
    """The shot's search report next to the page (written when missing; a failure is only logged)."""
    path = folder / f"{s.run_name}.html"
    if path.is_file():
        return path
    try:
        from platform.report import build_report

        return build_report(s.run_id, client=client, out=path)
    except Exception:
        log.warning("could not write the report of %s", s.run_name, exc_info=True)
        return None


def render(shots: list[Shot], title: str, folder: Path) -> str:
    rows = "".join(_row(s, folder) for s in shots)
    gains = [s.gain for s in shots if s.gain is not None]
    cards = [("shots", str(len(shots))), ("with a champion", str(sum(s.champion is not None for s in shots))),
             ("warm-started", str(sum(bool(s.warm_from) for s in shots))),
             ("mean gain over the floor", f"{sum(gains) / len(gains):+.3f}" if gains else "-")]
    values = {"title": html.escape(title), "generated": time.strftime("%Y-%m-%d %H:%M:%S"),
              "cards": "".join(f'<div class="card"><div class="k">{html.escape(k)}</div><div class="v">'
                               f"{html.escape(v)}</div></div>" for k, v in cards),
              "rows": rows}
    return Template(TEMPLATE.read_text()).safe_substitute(values)


def _row(s: Shot, folder: Path) -> str:
    unit = " dB" if "psnr" in s.metric else ""
    link = (f'<a href="{html.escape(os.path.relpath(s.report, folder))}">{html.escape(s.run_name)}</a>'
            if s.report else html.escape(s.run_name))
    cells = [html.escape(s.name), link, str(s.trials), _num(s.best, unit),
             f"{html.escape(s.floor[0])} {_num(s.floor[1], unit)}" if s.floor else "-",
             f"v{html.escape(s.champion)} {_num(s.champion_score, unit)}" if s.champion else "none",
             _num(s.gain, unit, signed=True) + ("" if s.champion or s.gain is None else " (best trial)")]
    learnt = html.escape(s.warm_from) or "cold"
    return "<tr>" + "".join(f"<td>{c}</td>" for c in cells) + f'<td class="wrap">{learnt}</td></tr>'


def _num(v: float | None, unit: str = "", signed: bool = False) -> str:
    if v is None:
        return "-"
    return f"{v:+.3f}{unit}" if signed else f"{v:.3f}{unit}"


def build_show(names: list[str], client=None, out: str | Path | None = None) -> Path:
    """Write the page for ``names`` (shows or searches); returns its path."""
    from platform import tracking

    if client is None:
        import mlflow
        from mlflow.tracking import MlflowClient

        mlflow.set_tracking_uri(tracking.tracking_uri())
        client = MlflowClient()
    title = " + ".join(names)
    path = Path(out) if out else Path("mlruns") / "reports" / f"show-{'-'.join(names)}.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    shots = [shot(client, run) for run in find_shots(client, names)]
    for s in shots:
        s.report = ensure_report(client, s, path.parent)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(render(shots, f"Show: {title}", path.parent))
    os.replace(tmp, path)
    return path.resolve()
