"""The report's figures, as PNG bytes (matplotlib, Agg; Optuna's matplotlib visualisation).

Optuna's plots need a study: :func:`rebuild_study` makes one from the search's trials (each
trial's best value of the search metric, its searched parameters with distributions taken
from the values seen), so importances (fANOVA) and parallel coordinates come from Optuna's
own, tested code whatever searcher ran the search.
"""

from __future__ import annotations

import io
import logging
import math
import warnings
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from platform.report.data import SearchData

log = logging.getLogger(__name__)

CATEGORY_STYLE = {"completed": "-", "early-stopped": "--", "budget": "-.", "failed": ":", "other": "-"}


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _ax_png(ax) -> bytes:
    fig = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
    return _png(fig)


def rebuild_study(data: SearchData):
    """An Optuna study with one finished trial per search trial that produced the metric."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize" if data.mode == "max" else "minimize",
                                study_name=data.run_name)
    values: dict[str, list[Any]] = {k: [] for k in data.searched}
    for t in data.trials:
        for k in data.searched:
            if k in t.params and t.params[k] is not None:
                values[k].append(t.params[k])
    dists = {}
    for k, vs in values.items():
        if not vs:
            continue
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vs):
            lo, hi = float(min(vs)), float(max(vs))
            log_scale = k in data.log_keys and lo > 0
            if all(isinstance(v, int) for v in vs) and not log_scale:
                dists[k] = optuna.distributions.IntDistribution(int(lo), int(hi))
            else:
                dists[k] = optuna.distributions.FloatDistribution(lo, hi, log=log_scale)
        else:
            dists[k] = optuna.distributions.CategoricalDistribution(sorted({str(v) for v in vs}))
    for t in sorted(data.trials, key=lambda t: t.start):
        params, tdists = {}, {}
        for k, d in dists.items():
            if k in t.params and t.params[k] is not None:
                v = t.params[k]
                params[k] = str(v) if isinstance(d, optuna.distributions.CategoricalDistribution) else v
                tdists[k] = d
        state = optuna.trial.TrialState.COMPLETE if t.best is not None else optuna.trial.TrialState.FAIL
        study.add_trial(optuna.trial.create_trial(
            state=state, value=t.best if t.best is not None else None, params=params, distributions=tdists,
            user_attrs={"trial_id": t.trial_id, "stop": t.stop}))
    return study


def importances(study) -> dict[str, float]:
    """Optuna's parameter importances over the parameters every finished trial has."""
    import optuna

    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if len(done) < 2:
        return {}
    common = set.intersection(*(set(t.params) for t in done))
    varying = [k for k in sorted(common) if len({str(t.params[k]) for t in done}) > 1]
    if not varying:
        return {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return optuna.importance.get_param_importances(study, params=varying)


def _optuna_plot(fn, study, **kwargs) -> bytes | None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna's matplotlib plots are "experimental"
        try:
            ax = fn(study, **kwargs)
        except Exception as exc:  # too few trials / parameters for this plot
            log.info("plot %s skipped: %s", fn.__name__, exc)
            plt.close("all")
            return None
    return _ax_png(ax)


def history_plot(study) -> bytes | None:
    from optuna.visualization.matplotlib import plot_optimization_history

    return _optuna_plot(plot_optimization_history, study)


def importance_plot(study, imps: dict[str, float]) -> bytes | None:
    if not imps:
        return None
    from optuna.visualization.matplotlib import plot_param_importances

    return _optuna_plot(plot_param_importances, study, params=list(imps))


def parallel_plot(study) -> bytes | None:
    import optuna

    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if len(done) < 2 or not any(t.params for t in done):
        return None
    common = sorted(set.intersection(*(set(t.params) for t in done)))
    if not common:
        return None
    from optuna.visualization.matplotlib import plot_parallel_coordinate

    return _optuna_plot(plot_parallel_coordinate, study, params=common)


def curves_plot(data: SearchData) -> bytes | None:
    trials = [t for t in data.trials if t.curve]
    if not trials:
        return None
    fig, ax = plt.subplots(figsize=(9, 4.8))
    top = max((t.rung for t in trials), default=0)
    cmap = plt.get_cmap("viridis")
    for t in trials:
        xs = [e for e, v in t.curve if math.isfinite(v)]
        ys = [v for _, v in t.curve if math.isfinite(v)]
        if not xs:
            continue
        color = cmap(t.rung / max(1, top)) if top else cmap(0.5)
        ax.plot(xs, ys, CATEGORY_STYLE[t.category], color=color, lw=1.6, alpha=0.9)
        ax.annotate(t.trial_id[-5:], (xs[-1], ys[-1]), fontsize=7, color=color)
    for m in data.milestones:
        ax.axvline(m, color="0.85", lw=0.8, zorder=0)
    floor_lines(ax, data)
    ax.set_xlabel("epoch")
    ax.set_ylabel(data.metric)
    ax.set_title("learning curves: colour = rung reached, line = stop reason")
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], ls=CATEGORY_STYLE[c], color="0.3", label=c)
               for c in sorted({t.category for t in trials})]
    handles += [Line2D([], [], color=cmap(r / max(1, top)) if top else cmap(0.5), lw=3, label=f"rung {r}")
                for r in sorted({t.rung for t in trials})]
    ax.legend(handles=handles, fontsize=8, loc="best")
    ax.grid(alpha=0.3)
    return _png(fig)


def floor_lines(ax, data: SearchData) -> None:
    """Each floor's value of the search metric as a labelled horizontal line."""
    for name, values in data.floors().items():
        v = values.get(data.metric)
        if v is None or not math.isfinite(v):
            continue
        ax.axhline(v, color="tab:red", lw=1, ls=(0, (4, 3)), alpha=0.8, zorder=1)
        ax.annotate(f"floor: {name} {v:.3g}", (0, v), xycoords=("axes fraction", "data"), xytext=(3, 2),
                    textcoords="offset points", fontsize=7, color="tab:red")


def pareto_plot(data: SearchData, front_ids: set[str]) -> bytes | None:
    if not data.cost:
        return None
    pts = [(t, t.metrics.get(data.cost)) for t in data.trials if t.best is not None and t.metrics.get(data.cost)]
    if not pts:
        return None
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for t, c in pts:
        on = t.trial_id in front_ids
        ax.scatter(c, t.best, s=60 if on else 25, color="tab:red" if on else "tab:blue", zorder=3 if on else 2)
        ax.annotate(t.trial_id[-5:], (c, t.best), fontsize=7)
    front = sorted(((c, t.best) for t, c in pts if t.trial_id in front_ids))
    if len(front) > 1:
        ax.plot([c for c, _ in front], [v for _, v in front], color="tab:red", lw=1, drawstyle="steps-post")
    ax.set_xlabel(data.cost)
    ax.set_ylabel(data.metric)
    ax.set_title("Pareto front (red): quality vs cost")
    ax.grid(alpha=0.3)
    return _png(fig)


def pareto_ids(data: SearchData) -> set[str]:
    if not data.cost:
        return set()
    pts = [(t.trial_id, t.best, t.metrics.get(data.cost)) for t in data.trials
           if t.best is not None and t.metrics.get(data.cost) is not None]
    sign = 1 if data.mode == "max" else -1
    out = set()
    for tid, q, c in pts:
        if not any((sign * q2 >= sign * q and c2 <= c) and (sign * q2 > sign * q or c2 < c)
                   for tid2, q2, c2 in pts if tid2 != tid):
            out.add(tid)
    return out


def warm_curves_plot(data: SearchData, reference: SearchData | None = None) -> bytes | None:
    """Learning curves of the trials that started from the earlier champion (warm) against those
    that started from scratch (cold): this search's, and ``reference``'s (a cold search of the same
    data) as thin dashed lines."""
    styles = {"warm": ("tab:orange", "-", 1.6), "cold": ("tab:blue", "-", 1.6), "ref": ("tab:blue", "--", 0.9)}
    groups = [("warm" if t.warm else "cold", t) for t in data.trials if t.curve]
    groups += [("ref", t) for t in (reference.trials if reference else []) if t.curve]
    if not groups:
        return None
    fig, ax = plt.subplots(figsize=(9, 4.8))
    for kind, t in groups:
        colour, ls, lw = styles[kind]
        pts = [(e, v) for e, v in t.curve if math.isfinite(v)]
        if pts:
            ax.plot([e for e, _ in pts], [v for _, v in pts], ls=ls, color=colour, lw=lw, alpha=0.85, marker="o", ms=3)
    floor_lines(ax, data)
    from matplotlib.lines import Line2D

    labels = {"warm": "warm: from the earlier champion", "cold": "cold: from scratch",
              "ref": f"cold search {reference.run_name}" if reference else ""}
    kinds = list(dict.fromkeys(k for k, _ in groups))
    ax.legend(handles=[Line2D([], [], color=styles[k][0], ls=styles[k][1], lw=2, label=labels[k]) for k in kinds],
              fontsize=8, loc="best")
    ax.set_xlabel("epoch")
    ax.set_ylabel(data.metric)
    ax.set_title("learning curves: warm vs cold trials")
    ax.grid(alpha=0.3)
    return _png(fig)
