"""The trials of a finished search: one row per trial (best first), the Pareto front, the table
in the log, and the best surviving checkpoint of a trial on local or remote storage."""

from __future__ import annotations

import contextlib
import logging
import math
import tempfile
from pathlib import Path
from typing import Any

from platform.config import SearchSpec

log = logging.getLogger("platform.search")


def summarise(results, stop_reasons: dict[str, str], run_ids: dict[str, str], spec: SearchSpec, model=None,
              budget=None) -> list[dict]:
    """One row per trial, best first: its best value, epochs, stop reason, MLflow run and searched settings."""
    from platform.search.conditional import SpaceModel
    from platform.search.space import cost_metric

    metric, mode = spec["search"]["metric"], spec["search"]["mode"]
    cost = cost_metric(spec)
    keys = (model or SpaceModel.from_spec(spec)).searched_paths()
    rows = []
    for res in results:
        cfg = res.config or {}
        name = Path(res.path).name
        trial_id = (res.metrics or {}).get("trial_id") or (name.removeprefix("trial_"))
        df = res.metrics_dataframe
        best_val = best_ssim = best_cost = None
        epochs = 0
        if df is not None and len(df) and metric in df:
            col = df[metric].dropna()
            col = col[col.apply(lambda v: abs(v) != float("inf"))]  # NaN already dropped
            if len(col):
                idx = col.idxmax() if mode == "max" else col.idxmin()
                best_val = float(df.loc[idx, metric])
                best_ssim = float(df.loc[idx, "val_ssim"]) if "val_ssim" in df else None
                best_cost = float(df.loc[idx, cost]) if cost and cost in df else None
        if df is not None and len(df):
            epochs = int(df["epoch"].max()) if "epoch" in df else len(df)
        reason = stop_reasons.get(trial_id)
        if reason is None:
            reason = f"failed (exception): {res.error}" if res.error else "unknown"
        row = {"trial": trial_id, "epochs": epochs, "stop": reason, metric: best_val, "val_ssim": best_ssim,
               "run_id": run_ids.get(trial_id), "result": res}
        if cost:
            row[cost] = best_cost
        if budget is not None and trial_id in budget.trials:
            row["spend_usd"] = budget.trials[trial_id].usd
        for k in keys:
            node: Any = cfg
            for part in k.split("."):
                node = node.get(part) if isinstance(node, dict) else None
            row[k] = node
        rows.append(row)
    rows.sort(key=lambda r: (r[metric] is None, -(r[metric] or 0) if mode == "max" else (r[metric] or 0)))
    return rows


def pareto_front(rows: list[dict], metric: str, mode: str, cost: str) -> list[dict]:
    """Rows not dominated in (metric, lower cost)."""
    pts = [r for r in rows if r.get(metric) is not None and r.get(cost) is not None]
    sign = 1 if mode == "max" else -1
    front = []
    for r in pts:
        q, c = sign * r[metric], r[cost]
        dominated = any((sign * o[metric] >= q and o[cost] <= c) and (sign * o[metric] > q or o[cost] < c)
                        for o in pts if o is not r)
        if not dominated:
            front.append(r)
    return sorted(front, key=lambda r: r[cost])


def format_table(rows: list[dict], metric: str) -> str:
    if not rows:
        return "(no trials)"
    extra = [k for k in ("cost_params_m", "cost_latency_ms", "spend_usd") if any(k in r for r in rows)]
    cols = ["trial"] + [k for k in rows[0] if "." in k] + ["epochs", metric, "val_ssim"] + extra + ["stop"]

    def cell(v):
        if isinstance(v, float):
            return f"{v:.4g}"
        return "-" if v is None else str(v)

    table = [[c for c in cols]] + [[cell(r.get(c)) for c in cols] for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(cols))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def best_checkpoint(row: dict, metric: str, mode: str):
    """The best surviving checkpoint of a trial (Tune's own, or the Train run's reported path) as a
    ``ray.train.Checkpoint`` on the experiment's storage (a local folder, or ``bucket/key`` on S3)."""
    from pyarrow.fs import FileType, LocalFileSystem
    from ray.train import Checkpoint

    res = row["result"]
    fs = getattr(res, "filesystem", None) or LocalFileSystem()
    best = None

    def consider(value, path: str, filesystem) -> None:
        nonlocal best
        if value is None or not math.isfinite(value) or (best is not None and not (
                value > best[0] if mode == "max" else value < best[0])):
            return
        if filesystem.get_file_info(path).type != FileType.Directory:
            return  # pruned by the retention policy
        best = (value, Checkpoint(path, filesystem))

    for ckpt, metrics in (res.best_checkpoints or []):
        consider(metrics.get(metric), ckpt.path, ckpt.filesystem or fs)
    df = res.metrics_dataframe
    if df is not None and "checkpoint_path" in df and metric in df:
        for _, r in df.dropna(subset=["checkpoint_path", metric]).iterrows():
            consider(float(r[metric]), str(r["checkpoint_path"]), fs)
    return best[1] if best else None


def checkpoint_uri(ckpt) -> str:
    """A checkpoint's address for humans and tags: the folder, or ``s3://bucket/key``."""
    kind = getattr(ckpt.filesystem, "type_name", "local")
    return ckpt.path if kind == "local" else f"{kind}://{ckpt.path}"


@contextlib.contextmanager
def local_checkpoint(ckpt):
    """The checkpoint as a local folder: itself when local, else downloaded to a temporary one."""
    if getattr(ckpt.filesystem, "type_name", "local") == "local":
        yield ckpt.path
        return
    with tempfile.TemporaryDirectory(prefix="best-ckpt-") as tmp:
        log.info("downloading the best checkpoint %s", checkpoint_uri(ckpt))
        yield ckpt.to_directory(tmp)
