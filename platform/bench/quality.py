"""``python -m platform.bench quality``: what a search's champion is worth on frames it never saw.

A bundled image-to-image set (``--sample``: ``vfx_grade``, 10 photos with film grain in and a
filmic grade out, by default; ``vfx_grade_b``, other photos and other colours, or ``restore``, blur,
noise and JPEG in and the clean photo out: shots the quick recipe was not tuned on) is split once:
two *test* frames are kept out of everything; the search gets the other eight (its own validation
split holds out two of those for model selection). Then:

1. the quality floors (identity, colour polynomial, 3D LUT) are fitted on the search's eight
   frames, all the labelled data the search had;
2. ``nafnet_fewshot --quick`` runs (about 3 minutes of CPU), then the same profile with
   ``--time-budget 10m``;
3. each search's registered model and each floor are scored on the two test frames at native
   resolution, with the platform's own validation (PSNR / SSIM).

It prints the table (floors, quick, 10 minutes, with the margin over the best floor and each
search's wall time), then one row per test frame with the share of its colours that no frame of
the search shows (what any learned colour map must extrapolate), and writes it all as JSON with
``--out``. A champion that does not beat the best floor here is not worth using, whatever its
validation score said.
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

TEST_FRAMES = ("00_astronaut", "07_motorcycle_left")  # vfx_grade's; other samples: the same positions
SAMPLES = ("vfx_grade", "vfx_grade_b", "restore")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m platform.bench quality", description=__doc__.split("\n\n")[0])
    p.add_argument("--budgets", default="quick,10m",
                   help="comma-separated: 'quick' (the --quick profile as is) and/or durations such as 10m")
    p.add_argument("--space", default="nafnet_fewshot", help="search space (its --quick profile is used)")
    p.add_argument("--sample", default="vfx_grade", choices=SAMPLES, help="bundled image-to-image set")
    p.add_argument("--test-frames", default=None,
                   help="file stems kept out of the search (default: the 1st and 8th frames, by name)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one value of the space in every search, as `platform.search --set` does")
    p.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    return p


def default_test_frames(sample: str) -> list[str]:
    """The 1st and 8th frames by name: ``TEST_FRAMES`` for vfx_grade, the same positions elsewhere."""
    from platform.data.samples import ensure_sample

    stems = sorted(f.stem for f in (ensure_sample(sample) / "input").iterdir())
    return [stems[0], stems[7]]


def split_sample(root: Path, test: list[str], sample: str = "vfx_grade") -> tuple[Path, Path]:
    """(a copy of the sample without the test frames for the search, the whole set)."""
    from platform.data.samples import ensure_sample

    src = ensure_sample(sample)
    missing = [t for t in test if not (src / "input" / f"{t}.png").exists()]
    if missing:
        from platform.errors import ConfigError

        raise ConfigError(f"--test-frames {', '.join(missing)} are not frames of {sample}.")
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


def fit_floors(search_dir: Path) -> dict:
    """{name: module} of the floors fitted on every frame the search had."""
    from platform import floors, tasks

    fit_on = tasks.create("img2img", {"data": str(search_dir), "crop": 64, "crops_per_epoch": 8, "val_holdout": 0})
    fit_on.train_pairs = fit_on.train_pairs or fit_on.val_pairs
    return {f.name: f.module for f in floors.fit_floors(fit_on)}


def unseen_colours(search_dir: Path, frames: list[Path]) -> list[float]:
    """Each frame's share of pixels whose input colour appears in no input frame of the search
    (:mod:`platform.coverage`, the check ``platform.predict`` makes): there a model of the grade
    can only extrapolate."""
    from platform import coverage
    from platform.data.io import read_image

    seen = coverage.occupancy(read_image(f) for f in sorted((search_dir / "input").iterdir()))
    return [coverage.unseen_share(read_image(f), seen) for f in frames]


def per_frame(tasks_by_frame: dict, module) -> dict[str, float]:
    """{test frame: PSNR} of one model."""
    from platform import floors

    return {t: floors.score(task, module)["val_psnr"] for t, task in tasks_by_frame.items()}


def run_budget(budget: str, space: str, data: Path, test, tasks_by_frame: dict, overrides: dict) -> dict:
    from platform import floors
    from platform.pyfunc import load_torch_model
    from platform.search import SearchOptions, run_search
    from platform.search.timebox import parse_duration

    seconds = None if budget == "quick" else parse_duration(budget)
    name = f"bench_quality_{budget}"
    t0 = time.monotonic()
    out = run_search(SearchOptions(space, quick=True, data=str(data), experiment=name, time_budget=seconds,
                                   overrides=overrides))
    wall = time.monotonic() - t0
    model, _ = load_torch_model(f"models:/{name}/{out.promotion.version}")
    return {"budget": budget, "wall_s": wall, "validation": out.best[out.spec["search"]["metric"]],
            "promoted": out.promotion.promoted, "reason": out.promotion.reason,
            "architecture": out.best.get("model.architecture") or out.spec["model"]["architecture"],
            "test": floors.score(test, model), "frames": per_frame(tasks_by_frame, model), "timebox": out.timebox}


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


def frame_table(unseen: dict[str, float], floor_frames: dict[str, dict], runs: list[dict]) -> str:
    """One row per test frame: its unseen colours, each floor's and each search's PSNR."""
    head = ["test frame", "unseen colours", *(f"floor `{n}`" for n in floor_frames),
            *(f"search `{r['budget']}`" for r in runs)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for t, share in unseen.items():
        cells = [f"`{t}`", f"{100 * share:.1f}%", *(f"{v[t]:.2f}" for v in floor_frames.values()),
                 *(f"{r['frames'][t]:.2f}" for r in runs)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n\nPSNR in dB; unseen colours: share of the frame's pixels whose input colour " \
        "(16 levels a channel) no search frame shows."


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    from platform import floors
    from platform.logs import quiet_third_party
    from platform.search.__main__ import parse_overrides

    quiet_third_party()
    budgets = [b.strip() for b in args.budgets.split(",") if b.strip()]
    here = Path.cwd()
    os.environ.setdefault("PLATFORM_DATA_DIR", str((here / ".cache" / "data").resolve()))  # reuse the sample cache
    with tempfile.TemporaryDirectory(prefix="bench-quality-") as tmp:
        os.chdir(tmp)  # a private ./mlruns: the user's registry is left alone
        try:
            names = args.test_frames.split(",") if args.test_frames else default_test_frames(args.sample)
            search_dir, whole = split_sample(Path(tmp) / "data", names, args.sample)
            test = test_task(whole, names)
            by_frame = {t: test_task(whole, [t]) for t in names}
            fitted = fit_floors(search_dir)
            floor_scores = {n: floors.score(test, m) for n, m in fitted.items()}
            floor_frames = {n: per_frame(by_frame, m) for n, m in fitted.items()}
            unseen = dict(zip(names, unseen_colours(search_dir, [whole / "input" / f"{t}.png" for t in names])))
            overrides = parse_overrides(args.overrides)
            runs = [run_budget(b, args.space, search_dir, test, by_frame, overrides) for b in budgets]
        finally:
            os.chdir(here)
    print(f"sample `{args.sample}`, test frames {', '.join(names)}\n")
    print(table(floor_scores, runs))
    print()
    print(frame_table(unseen, floor_frames, runs))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"floors": floor_scores, "floor_frames": floor_frames, "unseen": unseen,
                                        "runs": runs}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
