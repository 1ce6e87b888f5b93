"""``python -m platform.bench search``: ASHA + TPE vs random search vs the λ grid, same space.

Runs the same small few-shot space (``nafnet_fewshot --quick``, a width-8 NAFNet on 48 px
crops) three times on a local Ray:

* ``asha+tpe``: ASHA early stopping (grace 1 epoch, halving) with Optuna TPE (the default);
* ``random``: Optuna's random sampler, every trial trained to the end (no early stopping);
* ``grid``: the hand-tuned grid over λ (and lr) this platform replaces, every trial trained to the end;

each with the same number of trials, and prints the best validation PSNR each had reached
against the epochs it had spent (epochs counted in the order they finished, across
concurrent trials), then a summary: total epochs, best PSNR, and the best PSNR the others
had reached when they had spent as many epochs as ASHA+TPE did in total (equal budget).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import tempfile
import time
from pathlib import Path

from platform.search.presets import cpu_nafnet

log = logging.getLogger(__name__)

SPACE = {
    "task": {"crop": 48, "crops_per_epoch": 32, "batch_size": 4, "val_max_side": 192},
    "model": {"options": {"width": 8}},
    "loss": {"l1": 1.0, "lpips": 0.0, "ssim": {"uniform": [0.0, 0.5]}, "laplacian": {"uniform": [0.0, 1.0]}},
    "optimizer": {"lr": {"loguniform": [1.0e-4, 3.0e-3]}},
}

STRATEGIES = {
    "asha+tpe": {"scheduler": {"name": "asha", "grace_period": 1, "reduction_factor": 2},
                 "searcher": {"name": "optuna", "sampler": "tpe", "n_startup_trials": 3}},
    "random": {"scheduler": {"name": "fifo"}, "searcher": {"name": "random"}},
    "grid": {"scheduler": {"name": "fifo"}, "searcher": {"name": "grid", "grid_points": 2}},
}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m platform.bench search", description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, default=8, help="trials per strategy (the grid has 2x2x2 = 8 points)")
    p.add_argument("--epochs", type=int, default=6, help="epochs of a full trial")
    p.add_argument("--concurrency", type=int, default=2, help="trials at a time")
    p.add_argument("--strategies", default=",".join(STRATEGIES), help="comma-separated subset of "
                                                                      + ", ".join(STRATEGIES))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", help="folder for MLflow and Ray results (default: a temporary folder)")
    p.add_argument("--json", help="also write the curves and summary to this JSON file")
    return p


def curve(rows: list[dict], metric: str = "val_psnr") -> list[tuple[int, float]]:
    """(epochs spent, best metric so far) after every finished epoch, in wall-clock order."""
    events = []
    for r in rows:
        df = r["result"].metrics_dataframe
        if df is None or metric not in df:
            continue
        for _, e in df.iterrows():
            v = e[metric]
            if not math.isnan(v):
                events.append((float(e.get("timestamp", 0)), float(e.get("time_total_s", 0)), float(v)))
    events.sort()
    out, best = [], float("-inf")
    for i, (_, _, v) in enumerate(events, 1):
        best = max(best, v)
        out.append((i, best))
    return out


def best_at(c: list[tuple[int, float]], epochs: int) -> float | None:
    vals = [b for e, b in c if e <= epochs]
    return vals[-1] if vals else None


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from platform.logs import quiet_third_party, setup_logging

    setup_logging(logging.INFO)
    quiet_third_party()
    from platform.search import SearchOptions, run_search

    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-search-"))
    work.mkdir(parents=True, exist_ok=True)
    os.chdir(work)
    os.environ["PLATFORM_KEEP_RAY"] = "1"  # one Ray for the three searches
    results = {}
    try:
        for name in [s.strip() for s in args.strategies.split(",") if s.strip()]:
            if name not in STRATEGIES:
                raise SystemExit(f"unknown strategy {name!r}; choose from {', '.join(STRATEGIES)}")
            search = {**STRATEGIES[name], "num_trials": args.trials, "max_concurrent": args.concurrency,
                      "report": False}
            search["searcher"] = {**search["searcher"], "seed": args.seed}
            overrides = {**SPACE, "train": {"epochs": args.epochs, "image_every": args.epochs, "seed": args.seed},
                         "search": search}
            t0 = time.perf_counter()
            out = run_search(SearchOptions("nafnet_fewshot", quick=True, overrides=cpu_nafnet(overrides), promote=False,
                                           experiment=f"bench_search_{name.replace('+', '_')}"))
            wall = time.perf_counter() - t0
            c = curve(out.rows)
            results[name] = {"trials": len(out.rows), "epochs": c[-1][0] if c else 0,
                             "best": c[-1][1] if c else None, "wall_s": wall, "curve": c}
    finally:
        import ray

        if ray.is_initialized():
            ray.shutdown()

    ref = results.get("asha+tpe", {}).get("epochs")
    lines = ["strategy    trials  epochs  best val_psnr  best at ASHA's budget  wall",
             "----------  ------  ------  -------------  ---------------------  ------"]
    for name, r in results.items():
        at = best_at(r["curve"], ref) if ref else None
        lines.append(f"{name:<10}  {r['trials']:>6}  {r['epochs']:>6}  {r['best']:>13.3f}  "
                     f"{(f'{at:.3f} @ {ref} ep' if at is not None else '-'):>21}  {r['wall_s']:>5.0f}s")
    lines.append("")
    lines.append("best val_psnr against epochs spent:")
    marks = sorted({m for r in results.values() for m in (max(1, r["epochs"] // 4), r["epochs"] // 2,
                                                          3 * r["epochs"] // 4, r["epochs"]) if m})
    lines.append("epochs  " + "  ".join(f"{n:>10}" for n in results))
    for m in marks:
        cells = []
        for r in results.values():
            v = best_at(r["curve"], m)
            cells.append(f"{v:>10.3f}" if v is not None else f"{'-':>10}")
        lines.append(f"{m:>6}  " + "  ".join(cells))
    sys.stdout.write("\n".join(lines) + "\n")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0
