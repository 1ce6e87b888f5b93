"""A student search's teacher and students as quality-against-cost points, logged for the report.

A search is a *student search* when it has a teacher: ``distill.teacher`` (set by
``python -m platform.distill``) or, for a pruning search (``compress.prune``), the champion whose
weights it prunes (``warm_start.weights``). After the best student is registered, the search
driver calls :func:`record`, which

* scores the teacher on the search's own validation frames (the students' footing),
* loads the best surviving checkpoint of every trial (it holds pruned layer widths),
* measures each distinct network once (ms per ``compress.pareto_frame`` frame on this CPU through
  the project's inference benchmark, parameters, MACs): the cost depends on the architecture and
  widths, not on the weights, so twelve trials of three sizes cost three timings,
* and logs the points as ``compress/pareto.json`` on the parent run, which the report draws
  (:mod:`platform.report.pareto`).

One timing per network, not interleaved rounds: the figures order the students; for a ratio to
quote, use ``python -m platform.bench distill`` / ``compress``, which interleave.
"""

from __future__ import annotations

import json
import logging
import re
import tempfile
from pathlib import Path

from platform.model_uri import registered_name
from platform.report.pareto import ARTIFACT, Point, points_json

log = logging.getLogger(__name__)


def teacher_uri(config: dict) -> str | None:
    """What the students of this search learn from or were cut from (None: not a student search)."""
    teacher = (config.get("distill") or {}).get("teacher")
    if teacher:
        return re.sub(r"#sha256:[0-9a-f]+$", "", str(teacher))  # a local checkpoint's cache key
    sparsity = ((config.get("compress") or {}).get("prune") or {}).get("sparsity")
    weights = (config.get("warm_start") or {}).get("weights")
    if weights and sparsity:  # searched ({choice: ...}) or above 0: what trials prune (search.conditional.trial_tree)
        return str(weights)
    return None


class CostMeter:
    """Cost of networks, measured once per distinct architecture and layer widths."""

    def __init__(self, frame: str):
        from platform.frame_size import parse_resolution

        self.label, self.width, self.height = parse_resolution(frame, "compress.pareto_frame")
        self._seen: dict[str, tuple[float, int, float]] = {}

    def __call__(self, model, config: dict) -> tuple[float, int, float]:
        """(ms per frame, parameters, MACs per frame)."""
        from platform.compress.cost import count_macs, count_params, torch_ms_per_frame

        key = json.dumps([config.get("model"), config.get("_pruned")], sort_keys=True, default=str)
        if key not in self._seen:
            channels = int((config.get("_model_kwargs") or {}).get("in_channels", 3))
            self._seen[key] = (torch_ms_per_frame(model, config, self.width, self.height),
                               count_params(model),
                               count_macs(model, self.width, self.height, in_channels=channels))
        return self._seen[key]


def network_name(config: dict) -> str:
    m = config.get("model") or {}
    name = f"{m.get('architecture')}/{m.get('size')}" if m.get("size") else str(m.get("architecture"))
    sparsity = float(((config.get("compress") or {}).get("prune") or {}).get("sparsity") or 0)
    return f"{name} pruned {sparsity:.0%}" if sparsity > 0 else name


def pruned_student_name(config: dict) -> str | None:
    """A pruning search of ``models:/NAME@ALIAS`` registers its students as ``NAME_student``, as
    ``python -m platform.distill`` does (None: not a pruning search of a registered model)."""
    teacher = teacher_uri(config)
    name = registered_name(teacher)
    return f"{name}_student" if name and not (config.get("distill") or {}).get("teacher") else None


def teacher_point(loaded, score: float, meter: CostMeter) -> Point:
    ms, params, macs = meter(loaded.model, loaded.config)
    return Point(f"teacher {network_name(loaded.config)}", score, ms, params, macs, role="teacher")


def student_points(rows: list[dict], metric: str, mode: str, meter: CostMeter) -> list[Point]:
    """One point per trial with a surviving checkpoint: its best validation value and its network's cost."""
    from platform.pyfunc import load_any
    from platform.search.summary import best_checkpoint, local_checkpoint

    points = []
    for i, row in enumerate(rows):
        ckpt = best_checkpoint(row, metric, mode) if row.get(metric) is not None else None
        if ckpt is None:
            continue
        with local_checkpoint(ckpt) as folder:
            loaded = load_any(folder, "cpu")
        ms, params, macs = meter(loaded.model, loaded.config)
        label = f"{network_name(loaded.config)} ({row['trial']}{', best' if i == 0 else ''})"
        points.append(Point(label, float(row[metric]), ms, params, macs))
    return points


def record(client, run_id: str, spec, task, rows: list[dict]) -> tuple[float | None, list[Point]]:
    """(the teacher's validation score, the points): scores the teacher of a student search on the
    search's validation frames (logged as ``teacher_<metric>``), then measures it and every
    student and logs ``compress/pareto.json`` on the parent run ``run_id`` (no points when
    ``compress.pareto_frame`` is null). (None, []) for a search without a teacher."""
    from platform.champion import evaluate
    from platform.pyfunc import load_any

    uri, (metric, mode) = teacher_uri(spec.config), (spec["search"]["metric"], spec["search"]["mode"])
    if not uri or metric not in task.metric_names:  # e.g. a cost metric: no quality to set against cost
        return None, []
    teacher = load_any(uri, "cpu")
    score = float(evaluate(teacher.model.eval(), task, metric))
    client.log_metric(run_id, f"teacher_{metric}", score)
    frame = (spec.config.get("compress") or {}).get("pareto_frame")
    if not frame:
        return score, []
    meter = CostMeter(frame)
    log.info("timing the teacher (%s) and the students on a %s frame for the quality-vs-cost table", uri, meter.label)
    points = [teacher_point(teacher, score, meter)] + student_points(rows, metric, mode, meter)
    with tempfile.TemporaryDirectory(prefix="pareto-") as tmp:
        path = Path(tmp) / Path(ARTIFACT).name
        path.write_text(points_json(points, metric, mode, frame=meter.label))
        client.log_artifact(run_id, str(path), str(Path(ARTIFACT).parent))
    for p in points:
        log.info("%-44s %s %.4f %9.0f ms / %s frame %8.3f M params", p.name, metric, p.quality, p.ms_per_frame,
                 meter.label, (p.params or 0) / 1e6)
    return score, points
