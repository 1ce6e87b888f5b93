"""The report's warm-start section: where a warm-started search's knowledge came from.

The earlier searches (their best value, how many of their trials informed the sampler, how
many were dropped for values outside this space), the configurations evaluated first, the
champion whose weights started the trials, and the learning curves of the trials that started
from it (warm) against those that started from scratch (cold): this search's own (with
``warm_start.init: {choice: [scratch, champion]}``) and those of the newest cold search of the
same data, when there is one. Empty for a cold search.
"""

from __future__ import annotations

import html

from platform.report.data import PARENT_TAG, SearchData, TrialData, load_search


def section(data: SearchData, table, image, client=None) -> str:
    """The section's HTML (``table``/``image`` are the report's own helpers)."""
    if not data.warm_started:
        return ""
    parts = ["<h2>Warm start: where this search's knowledge came from</h2>"]
    parts += _sources(data, table) + _weights(data) + _curves(data, cold_reference(client, data), table, image)
    return "\n".join(parts)


def cold_reference(client, data: SearchData) -> SearchData | None:
    """The newest finished search of the same data and metric that was not warm-started."""
    where = data.params.get("data")
    if client is None or not where or "'" in where:
        return None
    ids = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(ids, filter_string=f"params.data = '{where}'", order_by=["attributes.start_time DESC"],
                              max_results=200)
    for r in runs:
        tags = r.data.tags
        if (r.info.run_id != data.parent_run_id and PARENT_TAG not in tags and r.info.status == "FINISHED"
                and not any(k.startswith("warm_start.") for k in tags) and r.data.params.get("metric") == data.metric):
            return load_search(client, r.info.run_id)
    return None


def _sources(data: SearchData, table) -> list[str]:
    warm = data.warm or {}
    rows = [[f"{s['name']} ({s['run_name']})", s["run_id"], s.get("best"), s.get("best_trial"), s["trials"], s["fed"],
             len(s.get("dropped") or [])] for s in warm.get("sources", [])]
    if not rows:
        return []
    out = [table(["earlier search", "parent run", f"best {data.metric}", "best trial", "trials", "given to the sampler",
                  "dropped"], rows),
           (f'<p class="note">{len(warm.get("points", []))} configuration(s) of these searches were evaluated first; '
           f'{warm.get("trials_fed", 0)} of their trials informed Optuna\'s sampler from its first suggestion. Those '
           "trials belong to the earlier searches: they are not counted, reported or promoted here.</p>")]
    dropped = [d for s in warm.get("sources", []) for d in (s.get("dropped") or [])]
    if dropped:
        items = "".join(f"<li>{html.escape(d)}</li>" for d in dropped[:8])
        more = f"<li>... {len(dropped) - 8} more</li>" if len(dropped) > 8 else ""
        out.append(f'<p class="note">Dropped (values outside this space):</p><ul class="note">{items}{more}</ul>')
    return out


def _weights(data: SearchData) -> list[str]:
    uri = data.tags.get("warm_start.weights")
    if not uri:
        return []
    version = data.tags.get("warm_start.weights_version")
    warm = [t for t in data.trials if t.warm]
    first = min(warm, key=lambda t: t.start) if warm else None
    counts = ""
    if first is not None:
        m = first.metrics
        counts = (f" Trial {html.escape(first.trial_id)}: {int(m.get('warm_init_transferred', 0))}/"
                  f"{int(m.get('warm_init_target_tensors', 0))} tensors transferred, "
                  f"{int(m.get('warm_init_shape_mismatched', 0))} shape-mismatched, "
                  f"{int(m.get('warm_init_missing', 0))} missing, {int(m.get('warm_init_unexpected', 0))} unexpected.")
    return [(f'<p>Weights: <code>{html.escape(uri)}</code>{f" (version {html.escape(version)})" if version else ""}, a '
            f"{html.escape(data.tags.get('warm_start.weights_architecture', '?'))}: {len(warm)} of {len(data.trials)} "
            f"trial(s) started from them.{counts}</p>")]


def _curves(data: SearchData, reference: SearchData | None, table, image) -> list[str]:
    from platform.report import plots

    groups = [("warm (this search)", [t for t in data.trials if t.warm]),
              ("cold (this search)", [t for t in data.trials if not t.warm])]
    if reference is not None:
        groups.append((f"cold search {reference.run_name} ({reference.name})", reference.trials))
    rows = [[name, len(ts), sum(t.epochs for t in ts), _best(ts, data.mode), _first_epoch(ts, data.mode)]
            for name, ts in groups if ts]
    note = ("" if reference is not None or any(not t.warm for t in data.trials) else
            '<p class="note">No cold trial to compare with: search <code>warm_start.init: {choice: [scratch, '
            "champion]}</code>, or run a cold search of the same data.</p>")
    return ['<div class="fig">' + image(plots.warm_curves_plot(data, reference), "warm vs cold learning curves")
            + "</div>", table(["trials", "count", "epochs trained", f"best {data.metric}",
                               f"best {data.metric} after 1 epoch"], rows) + note]


def _best(trials: list[TrialData], mode: str) -> float | None:
    values = [t.best for t in trials if t.best is not None]
    return (max(values) if mode == "max" else min(values)) if values else None


def _first_epoch(trials: list[TrialData], mode: str) -> float | None:
    values = [v for t in trials for e, v in t.curve[:1] if e == 1]
    return (max(values) if mode == "max" else min(values)) if values else None
