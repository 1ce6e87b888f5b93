"""``python -m platform.bench quality``: what a search's champion is worth on frames it never saw.

The bundled ``vfx_grade`` set (10 photos: film grain in, a filmic grade out) is split once: two
*test* frames are kept out of everything; the search gets the other eight (its own validation
split holds out two of those for model selection). Then:

1. the quality floors (identity, colour polynomial, 3D LUT) are fitted on the search's eight
   frames, all the labelled data the search had;
2. ``nafnet_fewshot --quick`` runs (about 3 minutes of CPU), then the same profile with
   ``--time-budget 10m``;
3. each search's registered model and each floor are scored on the two test frames at native
   resolution, with the platform's own validation (PSNR / SSIM).

It prints the table (floors, quick, 10 minutes, with the margin over the best floor and each
search's wall time) and writes it as JSON with ``--out``. A champion that does not beat the best
floor here is not worth using, whatever its validation score said.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

log = logging.getLogger(__name__)

TEST_FRAMES = ("00_astronaut", "07_motorcycle_left")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m platform.bench quality", description=__doc__.split("\n\n")[0])
    p.add_argument("--budgets", default="quick,10m",
                   help="comma-separated: 'quick' (the --quick profile as is) and/or durations such as 10m")
    p.add_argument("--space", default="nafnet_fewshot", help="search space (its --quick profile is used)")
    p.add_argument("--test-frames", default=",".join(TEST_FRAMES), help="file stems kept out of the search")
    p.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    return p


def split_sample(root: Path, test: list[str]) -> tuple[Path, Path]:
    """(a copy of vfx_grade without the test frames for the search, the whole set)."""
    from platform.data.samples import ensure_sample

    src = ensure_sample("vfx_grade")
    missing = [t for t in test if not (src / "input" / f"{t}.png").exists()]
    if missing:
        from platform.errors import ConfigError

        raise ConfigError(f"--test-frames {', '.join(missing)} are not frames of vfx_grade.")
    for part in ("input", "target"):
        for f in sorted((src / part).iterdir()):
            if f.stem not in test:
                (root / "search" / part).mkdir(parents=True, exist_ok=True)
                shutil.copy2(f, root / "search" / part / f.name)
    return root / "search", src


def test_task(whole: Path, test: list[str]):
    """A task whose validation items are exactly the test frames, at native resolution."""
    from platform import tasks

    return tasks.create("img2img", {"data": str(whole), "crop": 64, "crops_per_epoch": 8, "val_holdout": list(test)})


def floors_on_test(search_dir: Path, test) -> dict[str, dict[str, float]]:
    """Floors fitted on every frame the search had, scored on the test frames."""
    from platform import floors, tasks

    fit_on = tasks.create("img2img", {"data": str(search_dir), "crop": 64, "crops_per_epoch": 8, "val_holdout": 0})
    fit_on.train_pairs = fit_on.train_pairs or fit_on.val_pairs
    return {f.name: floors.score(test, f.module) for f in floors.fit_floors(fit_on)}


def run_budget(budget: str, space: str, data: Path, test) -> dict:
    from platform import floors
    from platform.pyfunc import load_torch_model
    from platform.search import SearchOptions, run_search
    from platform.search.timebox import parse_duration

    seconds = None if budget == "quick" else parse_duration(budget)
    name = f"bench_quality_{budget}"
    t0 = time.monotonic()
    out = run_search(SearchOptions(space, quick=True, data=str(data), experiment=name, time_budget=seconds))
    wall = time.monotonic() - t0
    model, _ = load_torch_model(f"models:/{name}/{out.promotion.version}")
    return {"budget": budget, "wall_s": wall, "validation": out.best[out.spec["search"]["metric"]],
            "promoted": out.promotion.promoted, "reason": out.promotion.reason,
            "architecture": out.best.get("model.architecture") or out.spec["model"]["architecture"],
            "test": floors.score(test, model), "timebox": out.timebox}


def table(floor_scores: dict, runs: list[dict]) -> str:
    best_name, best = max(((n, s["val_psnr"]) for n, s in floor_scores.items()), key=lambda v: v[1])
    lines = ["| model | test PSNR (dB) | test SSIM | vs best floor | search wall time | promoted |",
             "|---|---|---|---|---|---|"]
    for n, s in sorted(floor_scores.items(), key=lambda kv: kv[1]["val_psnr"]):
        lines.append(f"| floor `{n}` | {s['val_psnr']:.2f} | {s['val_ssim']:.3f} | {s['val_psnr'] - best:+.2f} | - | - |")
    for r in runs:
        s = r["test"]
        lines.append(f"| search `{r['budget']}` ({r['architecture']}) | {s['val_psnr']:.2f} | {s['val_ssim']:.3f} | "
                     f"{s['val_psnr'] - best:+.2f} | {r['wall_s'] / 60:.1f} min | {'yes' if r['promoted'] else 'no'} |")
    return "\n".join(lines) + f"\n\nbest floor: `{best_name}`; test frames never seen by the searches."


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    from platform.logs import quiet_third_party

    quiet_third_party()
    budgets = [b.strip() for b in args.budgets.split(",") if b.strip()]
    here = Path.cwd()
    os.environ.setdefault("PLATFORM_DATA_DIR", str((here / ".cache" / "data").resolve()))  # reuse the sample cache
    with tempfile.TemporaryDirectory(prefix="bench-quality-") as tmp:
        os.chdir(tmp)  # a private ./mlruns: the user's registry is left alone
        try:
            names = args.test_frames.split(",")
            search_dir, whole = split_sample(Path(tmp) / "data", names)
            test = test_task(whole, names)
            floor_scores = floors_on_test(search_dir, test)
            runs = [run_budget(b, args.space, search_dir, test) for b in budgets]
        finally:
            os.chdir(here)
    print(table(floor_scores, runs))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"floors": floor_scores, "runs": runs}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
