"""The search's side of the quality floors and of promotion: which data, which tasks, where logged.

The floors of a search are fitted and scored on the same footing as its trials: one task per
replica of ``search.repeat`` over folds (the floors averaged over the folds, like the trials'
mean), the task of the search otherwise. They go to the MLflow parent run as metrics
``floor.<name>.<metric>`` (tag ``floor.best``: the strongest on the search's metric), with, for
image tasks, each floor's output on the first validation frame as ``floors/<name>.png`` beside
``floors/input.png`` and ``floors/target.png`` (the report shows them against the champion).
"""

from __future__ import annotations

import copy
import logging
import time

import numpy as np

from platform import floors as floors_lib

log = logging.getLogger(__name__)


def replica_tasks(spec, task) -> list:
    """The task of each replica of a repeated search (k folds), else ``[task]`` (seeds share data)."""
    repeat = spec["search"]["repeat"]
    if repeat["over"] != "fold" or int(repeat["k"]) < 2:
        return [task]
    from platform import tasks

    out = []
    for i in range(int(repeat["k"])):
        cfg = copy.deepcopy(dict(spec["task"]))
        cfg.update(folds=int(repeat["k"]), fold=i)
        out.append(tasks.create(cfg["name"], cfg, seed=spec["train"]["seed"]))
    return out


def promotion_task(spec, task):
    """The data the registered weights are re-evaluated on: replica 0's validation fold when the
    search repeats over folds (those weights never trained on it), else the search's own split."""
    return replica_tasks(spec, task)[0]


def compute_floors(spec, task) -> dict[str, dict[str, float]]:
    if not spec["promotion"]["floors"]:
        return {}
    t0 = time.monotonic()
    scores = floors_lib.floor_scores(replica_tasks(spec, task))
    metric = spec["search"]["metric"]
    log.info("quality floors (%.1f s): %s", time.monotonic() - t0,
             ", ".join(f"{n} {s.get(metric, float('nan')):.4f}" for n, s in scores.items()))
    return scores


def log_floors(client, run_id: str, scores: dict, spec, task) -> None:
    """Floors as parent-run metrics and tag, and (image tasks) their previews as artifacts."""
    import mlflow

    metric, mode = spec["search"]["metric"], spec["search"]["mode"]
    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[mlflow.entities.Metric(f"floor.{n}.{m}", float(v), now, 0)
                                      for n, s in scores.items() for m, v in s.items() if np.isfinite(v)])
    best = floors_lib.best_floor(scores, metric, mode)
    if best:
        client.set_tag(run_id, "floor.best", best[0])
    if task.output_kind_class().image_like:
        try:
            for name, image in floor_previews(task).items():
                client.log_image(run_id, image, f"floors/{name}.png")
        except Exception:  # previews are for the report; the floors' numbers stand without them
            log.warning("could not log the floors' preview images", exc_info=True)


def floor_previews(task) -> dict[str, np.ndarray]:
    """8-bit RGB frames: the first validation input, its target and every floor's output."""
    import torch

    from platform.data.paired import from_model_range, to_model_range

    _, x_np, y_np = next(iter(task.val_items()))
    out = {"input": x_np, "target": y_np}
    x = to_model_range(x_np)[None]
    for f in floors_lib.fit_floors(task):
        with torch.no_grad():
            out[f.name] = from_model_range(f.module(x).clamp(-1, 1)[0])
    return {k: (np.clip(v[..., :3], 0, 1) * 255 + 0.5).astype(np.uint8) for k, v in out.items()}


def format_floors(scores: dict, best_trial: dict | None, metric: str, mode: str) -> str:
    """The floors beside the best trial, strongest first, with the trial's margin over each."""
    if not scores:
        return "(no floors)"
    rows = sorted(scores.items(), key=lambda kv: kv[1].get(metric, float("nan")), reverse=mode == "max")
    best = best_trial.get(metric) if best_trial else None
    lines = [f"{'':<16}{metric:>12}  margin of the best trial"]
    if best is not None:
        lines.append(f"{'best trial':<16}{best:>12.4f}")
    for name, s in rows:
        v = s.get(metric, float("nan"))
        margin = "" if best is None else f"{(best - v) if mode == 'max' else (v - best):+.4f}"
        lines.append(f"{'floor ' + name:<16}{v:>12.4f}  {margin}")
    return "\n".join(lines)
