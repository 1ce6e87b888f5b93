"""Quality against cost for a teacher and its students: the Pareto table and plot.

A *point* is one deployable model: its quality (validation PSNR, IoU...) and what it costs to
run (ms per 1080p frame on this CPU, parameters, MACs per 1080p frame; see
:mod:`platform.compress.cost`). A point is on the front when no other point is at least as
good in quality and at most as costly in time, and strictly better in one of them. The report
shows the section when the search's parent run holds ``compress/pareto.json``
(:func:`points_json`; written by ``python -m platform.bench compress`` with ``--out`` and by
the distillation and pruning runs that log it).
"""

from __future__ import annotations

import html
import io
import json
import math
from dataclasses import asdict, dataclass

ARTIFACT = "compress/pareto.json"


@dataclass
class Point:
    name: str
    quality: float
    ms_per_frame: float
    params: int | None = None
    macs: float | None = None
    role: str = "student"  # teacher | student


def front(points: list[Point], mode: str = "max") -> list[Point]:
    """The non-dominated points (quality ``mode`` max or min, time per frame lower is better),
    in increasing time."""
    sign = 1.0 if mode == "max" else -1.0
    ok = [p for p in points if math.isfinite(p.quality) and math.isfinite(p.ms_per_frame)]

    def dominates(a: Point, b: Point) -> bool:
        better_q, cheaper = sign * a.quality >= sign * b.quality, a.ms_per_frame <= b.ms_per_frame
        return better_q and cheaper and (sign * a.quality > sign * b.quality or a.ms_per_frame < b.ms_per_frame)

    return sorted((p for p in ok if not any(dominates(q, p) for q in ok if q is not p)), key=lambda p: p.ms_per_frame)


def table(points: list[Point], metric: str = "val_psnr", mode: str = "max",
          frame: str = "1080p") -> tuple[list[str], list[list]]:
    """(headers, rows): every point with its speed-up and quality change against the teacher
    (the first point with role ``teacher``, else the first point) and whether it is on the front."""
    on = {id(p) for p in front(points, mode)}
    ref = next((p for p in points if p.role == "teacher"), points[0] if points else None)
    headers = ["model", "role", metric, f"Δ {metric}", f"ms / {frame} frame", "speed-up", "params (M)",
               f"GMACs / {frame}", "front"]
    rows = []
    for p in points:
        rows.append([p.name, p.role, p.quality, p.quality - ref.quality if ref else None, p.ms_per_frame,
                     ref.ms_per_frame / p.ms_per_frame if ref and p.ms_per_frame > 0 else None,
                     p.params / 1e6 if p.params is not None else None,
                     p.macs / 1e9 if p.macs is not None else None, "yes" if id(p) in on else ""])
    return headers, rows


def plot(points: list[Point], metric: str = "val_psnr", mode: str = "max", frame: str = "1080p") -> bytes | None:
    """PNG: quality against ms per frame (log scale), the front as a red step line."""
    if not points:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    on = front(points, mode)
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for p in points:
        colour = "tab:red" if p in on else "tab:blue"
        ax.scatter(p.ms_per_frame, p.quality, s=70 if p.role == "teacher" else 35, color=colour,
                   marker="*" if p.role == "teacher" else "o", zorder=3)
        ax.annotate(p.name, (p.ms_per_frame, p.quality), fontsize=7, xytext=(3, 3), textcoords="offset points")
    if len(on) > 1:
        ax.plot([p.ms_per_frame for p in on], [p.quality for p in on], color="tab:red", lw=1,
                drawstyle="steps-post" if mode == "max" else "steps-pre")
    ax.set_xscale("log")
    ax.set_xlabel(f"ms per {frame} frame (CPU)")
    ax.set_ylabel(metric)
    ax.set_title("teacher (star) and students: quality vs cost, front in red")
    ax.grid(alpha=0.3, which="both")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def points_json(points: list[Point], metric: str, mode: str, frame: str = "1080p") -> str:
    """``frame``: the frame size the times and MACs were measured on."""
    return json.dumps({"metric": metric, "mode": mode, "frame": frame, "points": [asdict(p) for p in points]},
                      indent=1)


def from_json(text: str) -> tuple[list[Point], str, str, str]:
    """(points, metric, mode, frame)."""
    data = json.loads(text)
    return ([Point(**p) for p in data.get("points", [])], data.get("metric", "val_psnr"), data.get("mode", "max"),
            str(data.get("frame", "1080p")))


def load(client, run_id: str) -> tuple[list[Point], str, str, str] | None:
    """The points logged on ``run_id`` (``compress/pareto.json``) as :func:`from_json` gives them, or None."""
    from pathlib import Path

    try:
        return from_json(Path(client.download_artifacts(run_id, ARTIFACT)).read_text())
    except Exception:  # none logged (most searches): the report goes on without the section
        return None


def section(points: list[Point], metric: str, mode: str, frame: str, table_fn, img_fn) -> str:
    """The report's HTML section (``table_fn``/``img_fn``: the report's own table and image helpers)."""
    if not points:
        return ""
    headers, rows = table(points, metric, mode, frame)
    return (f"<h2>Teacher and students: {html.escape(metric)} vs cost</h2>"
            f'<div class="fig">{img_fn(plot(points, metric, mode, frame), "teacher and students Pareto plot")}</div>'
            + table_fn(headers, rows)
            + f'<p class="note">ms per {html.escape(frame)} frame measured on a CPU with the project\'s inference '
              f"benchmark; MACs counted at {html.escape(frame)} (convolutions and matrix products).</p>")
