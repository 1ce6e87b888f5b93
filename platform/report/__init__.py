"""The HTML report of a search: ``python -m platform.report SEARCH`` (also written at the end of
every search and logged to its MLflow parent run under ``report/``).

One self-contained page (images embedded as base64, opens offline): headline cards (best
value, trials, spend), the optimisation history, Optuna's parameter importances (on a study
rebuilt from the trials), parallel coordinates, learning curves coloured by rung and styled
by stop reason (with the floors, the classical baselines, as horizontal lines), the Pareto front
of quality vs cost when the search measured a cost (and, when its parent run holds
``compress/pareto.json``, the teacher and its students: ``pareto``), the best trials' validation grids side by
side, the floors table, the champion at full resolution (a before/after wipe against the
target, the runner-up and the floors, and 1:1 crops where it differs most from the target; see
``compare``, which also bounds the page's size), the spend and a table of every trial; for a
warm-started search, where its knowledge came from and warm vs cold learning curves (``warm``).
The template is ``dashboards/search_report.html``; ``show`` writes one page for a show's shots.

::

    from platform.report import build_report
    path = build_report("nafnet_fewshot")          # newest search of that space
    path = build_report(parent_run_id, out="r.html")
"""

from __future__ import annotations

import base64
import html
import logging
import math
import os
import time
from pathlib import Path
from string import Template
from typing import Any

from platform.config import REPO_ROOT

log = logging.getLogger(__name__)

TEMPLATE = REPO_ROOT / "dashboards" / "search_report.html"


def _img(png: bytes | None, alt: str) -> str:
    if not png:
        return f'<p class="note">({html.escape(alt)}: not enough finished trials for this plot)</p>'
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.4g}"
    return html.escape(str(v))


def _table(headers: list[str], rows: list[list[Any]], classes: list[str] | None = None) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = []
    for i, r in enumerate(rows):
        cls = f' class="{classes[i]}"' if classes and classes[i] else ""
        body.append(f"<tr{cls}>" + "".join(f"<td>{_fmt(v)}</td>" for v in r) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _floors_table(data, best) -> str:
    """The floors (classical baselines) beside the best trial, one row each; empty without floors."""
    floors = data.floors()
    if not floors:
        return ""
    metrics = sorted({m for values in floors.values() for m in values}, key=lambda m: (m != data.metric, m))
    rows = [[f"floor: {name}"] + [values.get(m) for m in metrics] for name, values in floors.items()]
    classes = [""] * len(rows)
    if best is not None:
        rows.insert(0, [f"best trial {best.trial_id}"] + [best.best if m == data.metric else best.metrics.get(m)
                                                         for m in metrics])
        classes.insert(0, "best")
    return ('<h2>Floors: the best trial against classical baselines</h2><div class="floors">'
            + _table([""] + metrics, rows, classes) + "</div>")


def _students_section(client, data) -> str:
    """Teacher vs students (quality against ms per 1080p frame, params, MACs) when the parent run
    holds ``compress/pareto.json`` (:mod:`platform.report.pareto`)."""
    if client is None:
        return ""
    from platform.report import pareto

    loaded = pareto.load(client, data.parent_run_id)
    return pareto.section(*loaded, _table, _img) if loaded else ""


def render(data, client=None, ref: str = "") -> str:
    """The report page for a loaded :class:`~platform.report.data.SearchData`."""
    from platform.report import compare, plots, warm
    from platform.report.data import validation_grid

    study = plots.rebuild_study(data)
    imps = {}
    try:
        imps = plots.importances(study)
    except Exception as exc:  # importances need enough varied, finished trials
        log.info("parameter importances skipped: %s", exc)
    ranked = data.ranked()
    best = ranked[0] if ranked else None
    front = plots.pareto_ids(data)

    unit = " dB" if "psnr" in data.metric else ""
    cards = [("best " + data.metric, f"{best.best:.3f}{unit}" if best else "-"),
             ("best trial", best.trial_id if best else "-"),
             ("trials", str(len(data.trials))),
             ("completed", str(sum(t.category == "completed" for t in data.trials))),
             ("stopped early", str(sum(t.category in ("early-stopped", "budget") for t in data.trials))),
             ("failed", str(sum(t.category == "failed" for t in data.trials))),
             ("spend", f"${data.metrics.get('spend_usd', 0.0):.4f}"),
             ("epochs trained", str(sum(t.epochs for t in data.trials)))]
    cards_html = "".join(f'<div class="card"><div class="k">{html.escape(k)}</div><div class="v">{html.escape(v)}</div>'
                         f"</div>" for k, v in cards)

    imp_table = ""
    if imps:
        imp_table = _table(["parameter", "importance"], [[k, v] for k, v in imps.items()])

    pareto = ""
    if data.cost:
        png = plots.pareto_plot(data, front)
        rows = [[t.trial_id, t.best, t.metrics.get(data.cost)] for t in ranked if t.trial_id in front]
        pareto = (f"<h2>Pareto front: {html.escape(data.metric)} vs {html.escape(data.cost)}</h2>"
                  f'<div class="fig">{_img(png, "Pareto front")}</div>'
                  + _table(["trial", data.metric, data.cost], rows)
                  + '<p class="note">Promotion uses the primary metric only; the front shows what quality each '
                    "cost buys.</p>")
    pareto += _students_section(client, data)

    grids = []
    for t in ranked[:3]:
        png = validation_grid(client, t.run_id) if client is not None else None
        if png:
            grids.append(f'<div class="grid"><figure><figcaption>trial {html.escape(t.trial_id)}: '
                         f"{html.escape(data.metric)} {t.best:.3f}{unit}, {t.epochs} epochs</figcaption>"
                         f"{_img(png, 'validation grid')}</figure></div>")
    grids_html = "".join(grids) or '<p class="note">(no validation grids logged)</p>'

    floors_html = _floors_table(data, best)
    cmp = compare.build(client, data) if client is not None else compare.Comparison(note="no MLflow client")

    spend_rows = [[k, data.metrics.get(k)] for k in ("spend_usd", "gpu_hours", "cpu_hours", "search_time_s")
                  if k in data.metrics]
    spend = _table(["", "value"], spend_rows) if spend_rows else '<p class="note">(no spend recorded)</p>'
    if data.params.get("budget_usd") not in (None, "None"):
        spend += f'<p class="note">Dollar budget: ${_fmt(data.params["budget_usd"])}.'
        if data.tags.get("budget_exhausted"):
            spend += f" {html.escape(data.tags['budget_exhausted'])}."
        spend += "</p>"

    keys = data.searched
    headers = ["trial"] + keys + ["epochs", "rung", data.metric] + ([data.cost] if data.cost else []) + \
        ["spend $", "stop"]
    order = ranked + [t for t in data.trials if t.best is None]
    rows, classes = [], []
    for t in order:
        rows.append([t.trial_id] + [t.params.get(k) for k in keys] + [t.epochs, t.rung, t.best]
                    + ([t.metrics.get(data.cost)] if data.cost else []) + [t.spend_usd, t.stop])
        classes.append("best" if best is not None and t is best else ("failed" if t.category == "failed" else ""))

    values = {
        "title": f"Search report: {data.name}",
        "subtitle": html.escape(f"{data.run_name} · {data.params.get('scheduler', '?')} + "
                                f"{data.params.get('searcher', '?')} · metric {data.metric} ({data.mode})"
                                + (f" · repeat {data.params['repeat']}" if data.params.get("repeat", "none x1")
                                   not in ("none x1",) else "")),
        "cards": cards_html,
        "warm": warm.section(data, _table, _img, client),
        "history": _img(plots.history_plot(study), "optimisation history"),
        "importance": _img(plots.importance_plot(study, imps), "parameter importances"),
        "curves": _img(plots.curves_plot(data), "learning curves"),
        "parallel": _img(plots.parallel_plot(study), "parallel coordinates"),
        "importance_table": imp_table,
        "pareto": pareto,
        "grids": grids_html,
        "floors": floors_html,
        "wipe": compare.wipe_html(cmp),
        "crops": compare.crops_html(cmp),
        "spend": spend,
        "trials": _table(headers, rows, classes),
        "generated": time.strftime("%Y-%m-%d %H:%M:%S"),
        "ref": html.escape(ref or data.parent_run_id),
        "parent": data.parent_run_id,
        "tracking": html.escape(str(getattr(client, "tracking_uri", "") or "")),
    }
    return Template(TEMPLATE.read_text()).safe_substitute(values)


def build_report(ref: str, client=None, out: str | Path | None = None) -> Path:
    """Write the report of search ``ref`` (parent run id, experiment folder or name); returns its path."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # no tqdm bars in logs
    from mlflow.tracking import MlflowClient

    from platform import tracking
    from platform.report.data import load_search

    if client is None:
        import mlflow

        mlflow.set_tracking_uri(tracking.tracking_uri())
        client = MlflowClient()
    data = load_search(client, ref)
    page = render(data, client, ref)
    path = Path(out) if out else Path("mlruns") / "reports" / f"{data.run_name}.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(page)
    os.replace(tmp, path)
    return path.resolve()


__all__ = ["build_report", "render"]
