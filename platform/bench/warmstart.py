"""``python -m platform.bench warmstart``: a warm-started search of a second shot against a cold one.

Two related shots of one show: ``vfx_grade`` (shot A) and ``vfx_grade_b`` (shot B: the same grade
and grain on other pictures). On one local Ray, with CPU-sized trials (``--model lut3d``, the
quick profile's 3D LUT + residual U-Net, by default; ``--model nafnet``, a width-8 NAFNet):

1. shot A is searched cold (a finished search of an earlier shot: 4 trials of up to 24 epochs)
   and its best model becomes the champion ``bench_warm_shot_a``;
2. shot B is searched cold (ASHA + TPE);
3. shot B is searched again, warm-started from A's search (its best configuration first, its
   trials given to TPE) and A's champion (``--init-from models:/bench_warm_shot_a@champion``).

It prints the best validation PSNR each search of B had reached against the epochs it had
spent (all trials, in the order their epochs finished), the epochs the warm search needed to
reach the cold search's best, and that as a share of the cold search's epochs (target <= 30 %).
``--ablation`` adds two searches of B that take one half each: A's search knowledge only
(``--warm-start``) and A's champion's weights only (``--init-from``).
The show page of the three searches is written too (``python -m platform.report --show``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

from platform.bench.search import best_at, curve

log = logging.getLogger(__name__)

SHOW = "bench_show"
# The searched spaces: the quick profile's lut3d (a 3D LUT fitted to the pairs + a residual U-Net,
# what `--quick` trains on a laptop) and the CPU NAFNet of the engine tests, both CPU-sized.
SPACES = {
    "lut3d": {
        "task": {"crop": 64, "crops_per_epoch": 64, "batch_size": 8, "val_max_side": 256},
        "model": {"architecture": "lut3d", "size": "local", "options": {}},
        "loss": {"l1": {"uniform": [0.7, 1.0]}, "lpips": 0.0, "laplacian": {"uniform": [0.0, 0.5]},
                 "ssim": {"uniform": [0.0, 0.3]}},
        "optimizer": {"lr": {"loguniform": [5.0e-4, 1.0e-2]}, "betas": [0.9, 0.99], "weight_decay": 0.0},
        "schedule": {"warmup_epochs": 1},
    },
    "nafnet": {
        "task": {"crop": 48, "crops_per_epoch": 32, "batch_size": 4, "val_max_side": 192},
        "model": {"options": {"width": 8}},
        "loss": {"l1": {"uniform": [0.5, 1.0]}, "lpips": 0.0, "ssim": {"uniform": [0.0, 0.5]},
                 "laplacian": {"uniform": [0.0, 1.0]}},
        "optimizer": {"lr": {"loguniform": [1.0e-4, 3.0e-3]}},
    },
}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m platform.bench warmstart", description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, default=8, help="trials of each search of shot B")
    p.add_argument("--epochs", type=int, default=12, help="epochs of a full trial of shot B")
    p.add_argument("--source-trials", type=int, default=4, help="trials of the search of shot A")
    p.add_argument("--source-epochs", type=int, default=24, help="epochs of a full trial of shot A")
    p.add_argument("--concurrency", type=int, default=2, help="trials at a time")
    p.add_argument("--model", choices=sorted(SPACES), default="lut3d", help="the searched space (default lut3d)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ablation", action="store_true", help="also search B with A's knowledge only and with A's "
                                                           "weights only")
    p.add_argument("--workdir", help="folder for MLflow and Ray results (default: a temporary folder)")
    p.add_argument("--json", help="also write the curves and figures to this JSON file")
    return p


def _overrides(model: str, data: str, trials: int, epochs: int, concurrency: int, seed: int, **extra) -> dict:
    from platform.search.presets import cpu_nafnet

    space = SPACES[model]
    search = {"num_trials": trials, "max_concurrent": concurrency, "report": extra.pop("report", False),
              "points_to_evaluate": [], "timebox": {"seconds": None},
              "scheduler": {"name": "asha", "grace_period": 2, "reduction_factor": 2, "max_t": epochs},
              "searcher": {"name": "optuna", "sampler": "tpe", "n_startup_trials": 3, "seed": seed}}
    overrides = {**space, "task": {**space["task"], "data": data}, "search": search, "show": SHOW,
                 "train": {"epochs": epochs, "image_every": epochs, "seed": seed},
                 "resources": {"gpus_per_worker": 0, "cpus_per_worker": 1}, **extra}
    return cpu_nafnet(overrides) if model == "nafnet" else overrides  # lut3d: the quick profile's model


def _search(name: str, overrides: dict, **options) -> dict:
    from platform.search import SearchOptions, run_search

    t0 = time.perf_counter()
    out = run_search(SearchOptions("nafnet_fewshot", quick=True, experiment=name, overrides=overrides, **options))
    c = curve(out.rows)
    return {"experiment": name, "parent_run_id": out.parent_run_id, "trials": len(out.rows),
            "epochs": c[-1][0] if c else 0, "best": c[-1][1] if c else None, "wall_s": time.perf_counter() - t0,
            "curve": c, "report": out.report_path,
            "promoted": bool(out.promotion and out.promotion.promoted)}


KNOWLEDGE = {"warm_start": ["bench_warm_shot_a"]}
WEIGHTS = {"init_from": "models:/bench_warm_shot_a@champion"}
VARIANTS = {"warm": ("warm-started from A", {**KNOWLEDGE, **WEIGHTS}),
            "knowledge": ("A's search knowledge only", KNOWLEDGE), "weights": ("A's weights only", WEIGHTS)}


def run(args) -> dict:
    a = args
    # Another searcher seed for shot A: with B's, A's first (random) configuration would be B's too.
    source = _search("bench_warm_shot_a", _overrides(a.model, "sample:vfx_grade", a.source_trials, a.source_epochs,
                                                     a.concurrency, a.seed + 1, promotion={"floors": False}))
    if not source["promoted"]:
        raise SystemExit("shot A's search promoted no champion; nothing to warm-start from")
    out = {"source": source, "cold": _search("bench_cold_shot_b", _b(a), promote=False)}
    for key in ["warm"] + (["knowledge", "weights"] if a.ablation else []):
        out[key] = _search(f"bench_{key}_shot_b", _b(a, report=key == "warm"), promote=False, **VARIANTS[key][1])
        out[key]["reached_at"] = next((e for e, b in out[key]["curve"] if b >= out["cold"]["best"]), None)
        out[key]["share"] = out[key]["reached_at"] / out["cold"]["epochs"] if out[key]["reached_at"] else None
    return out


def _b(a, report: bool = False) -> dict:
    return _overrides(a.model, "sample:vfx_grade_b", a.trials, a.epochs, a.concurrency, a.seed, report=report)


def table(r: dict) -> str:
    cold, source = r["cold"], r["source"]
    runs = [("cold", cold)] + [(VARIANTS[k][0], r[k]) for k in VARIANTS if k in r]
    lines = [(f"shot A (vfx_grade, cold): {source['trials']} trials, {source['epochs']} epochs, best val_psnr "
             f"{source['best']:.3f} dB -> champion models:/bench_warm_shot_a@champion"),
             "",
             "shot B (vfx_grade_b)        trials  epochs  best val_psnr  reached cold best  wall",
             "---------------------------  ------  ------  -------------  -----------------  ------"]
    for name, s in runs:
        at = "-" if s is cold else (f"{s['reached_at']} ep ({100 * s['share']:.0f} %)" if s["reached_at"] else "never")
        lines.append(f"{name:<27}  {s['trials']:>6}  {s['epochs']:>6}  {s['best']:>10.3f} dB  {at:>17}  "
                     f"{s['wall_s']:>5.0f}s")
    lines += ["", "best val_psnr of shot B against epochs spent:",
              "epochs  " + "  ".join(f"{k:>10}" for k in ["cold"] + [k for k in VARIANTS if k in r])]
    top = max(s["epochs"] for _, s in runs)
    for m in sorted({m for m in (1, 2, 3, 4, 6, 8, cold["epochs"] // 4, cold["epochs"] // 2, cold["epochs"], top)
                     if 0 < m <= top}):
        lines.append(f"{m:>6}  " + "  ".join(_cell(best_at(s["curve"], m)) for _, s in runs))
    warm = r["warm"]
    verdict = "met" if warm["share"] is not None and warm["share"] <= 0.30 else "missed"
    reached = (f"after {warm['reached_at']} epochs = {100 * warm['share']:.0f} % of the cold search's "
               f"{cold['epochs']}" if warm["reached_at"] else "never")
    lines += ["", (f"the warm search reached the cold best ({cold['best']:.3f} dB) {reached} (target <= 30 %: "
                  f"{verdict})")]
    return "\n".join(lines) + "\n"


def _cell(v: float | None) -> str:
    return f"{v:>10.3f}" if v is not None else f"{'-':>10}"


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from platform.logs import quiet_third_party, setup_logging

    setup_logging(logging.INFO)
    quiet_third_party()
    out_json = Path(args.json).resolve() if args.json else None
    os.environ.setdefault("PLATFORM_DATA_DIR", str(Path(".cache/data").resolve()))  # the samples, built once
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-warmstart-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    os.chdir(work)
    os.environ["PLATFORM_KEEP_RAY"] = "1"  # one Ray for the three searches
    try:
        result = run(args)
    finally:
        import ray

        if ray.is_initialized():
            ray.shutdown()
    from platform.report.show import build_show

    show = build_show([SHOW])
    sys.stdout.write(table(result) + f"show page: {show}\nwarm search's report: {result['warm']['report']}\n")
    if out_json:
        out_json.write_text(json.dumps(result, indent=1, default=str))
    return 0
