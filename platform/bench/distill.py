"""``python -m platform.bench distill``: a student at least 4x faster than its teacher, within 0.5 dB of it.

On the bundled ``vfx_grade`` set (film grain in, a filmic grade out), two *test* frames are kept
out of everything (as in ``platform.bench quality``); the searches get the other eight. The shot's
"ungraded frames" are those eight photos under new film-grain draws (``--unlabelled-per-frame``
each: the same shot, other frames of grain, no target). Then:

1. the teacher: a 6-minute ``nafnet_fewshot --quick`` search with the lut3d size fixed to
   ``--teacher-size`` (default ``local_large``: the residual U-Net at width 32; or ``--teacher URI``);
2. the student: ``python -m platform.distill --teacher models:/bench_distill/V distill_img2img --quick``
   with the student size fixed to ``--student-size`` (default ``local_small``: width 8), the λ of
   the distillation term and the learning rate searched, the teacher's outputs on the labelled
   and ungraded frames as extra targets;
3. teacher and student are scored on the two test frames at native resolution (PSNR, SSIM), and
   timed on 1080p frames on this CPU with the project's predict path
   (``Predictor.run``: padding, tiling, host frame in and out; an untimed warm-up), teacher and
   student alternating frame by frame (the median of ``--frames`` each, and the per-round spread).

It prints teacher/student PSNR, ms per 1080p frame, parameters, the speed-up and the PSNR gap,
and whether the issue's bar (>= 4x faster, within 0.5 dB) is met; ``--out`` writes JSON.

``--task segmentation`` runs the segmentation half instead (the ``matte`` sample, a student within
2 IoU points at >= 3x speed): see :mod:`platform.bench.distill_seg`.
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

log = logging.getLogger(__name__)

NAME = "bench_distill"


def parser() -> argparse.ArgumentParser:
    from platform.bench.distill_seg import add_arguments
    from platform.bench.quality import TEST_FRAMES

    p = argparse.ArgumentParser(prog="python -m platform.bench distill", description=__doc__.split("\n\n")[0])
    p.add_argument("--task", choices=("img2img", "segmentation"), default="img2img",
                   help="img2img: vfx_grade, nafnet/lut3d students; segmentation: matte, seg_fpn_lite students")
    p.add_argument("--teacher", help="an existing teacher (models:/NAME/VERSION or a checkpoint) instead of a "
                                     "quick search; it is scored on the same test frames")
    p.add_argument("--teacher-budget", default="6m", help="'quick' (its 3 minutes) or a duration for the teacher search")
    p.add_argument("--student-budget", default="3m", help="wall-clock budget of the student search")
    p.add_argument("--student-size", default="local_small",
                   help="lut3d size of the students (null: the space's choice)")
    p.add_argument("--unlabelled-per-frame", type=int, default=3, help="ungraded grain draws per search photo")
    p.add_argument("--frames", type=int, default=None,
                   help="timed 1080p frames per model (interleaved rounds; default 5, 3 for segmentation)")
    p.add_argument("--teacher-size", default="local_large",
                   help="lut3d size of the teacher search (the quick profile's own is local)")
    p.add_argument("--test-frames", default=",".join(TEST_FRAMES), help="file stems kept out of both searches")
    p.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    add_arguments(p)
    return p


def write_unlabelled(folder: Path, test: list[str], per_frame: int) -> Path:
    """Ungraded frames of the shot: the search photos under new grain draws (no targets)."""
    from platform.data.io import write_image
    from platform.data.photos import photos
    from platform.data.samples import film_grain

    out = folder / "ungraded"
    for i, (name, photo) in enumerate(photos()):
        if f"{i:02d}_{name}" in test:
            continue
        for k in range(per_frame):
            write_image(out / f"{i:02d}_{name}_g{k}.png", film_grain(photo, seed=50_000 + 100 * i + k))
    return out


def teacher_uri(args, data: Path) -> str:
    if args.teacher:
        return args.teacher
    from platform.search import SearchOptions, run_search
    from platform.search.timebox import parse_duration

    seconds = None if args.teacher_budget == "quick" else parse_duration(args.teacher_budget)
    overrides = {"model": {"size": args.teacher_size}} if args.teacher_size != "local" else {}
    out = run_search(SearchOptions("nafnet_fewshot", quick=True, data=str(data), experiment=NAME, time_budget=seconds,
                                   overrides=overrides))
    return f"models:/{NAME}/{out.promotion.version}"


def quality(model, config: dict, test) -> dict:
    """Test-frame PSNR/SSIM at native resolution and the parameter count."""
    from platform import floors

    model = model.to("cpu").eval()
    scores = floors.score(test, model)
    return {"psnr": scores["val_psnr"], "ssim": scores["val_ssim"],
            "params": sum(p.numel() for p in model.parameters()),
            "model": f"{config['model']['architecture']}/{config['model'].get('size')}"}


def speed(models: dict[str, tuple], rounds: int) -> tuple[dict[str, float], dict]:
    """Median ms per 1080p frame on the CPU of each ``{role: (model, config)}`` and the teacher/student
    speed ratio with its per-round spread, timed in interleaved rounds (one frame of each per round,
    :func:`platform.bench._measure.interleave`): a shared machine's load falls on both alike. Each
    frame runs the predict path (``Predictor.run``: padding, tiling, host frame in and out) after an
    untimed warm-up frame."""
    import statistics

    import torch

    from platform.bench._measure import interleave, speed_ratio
    from platform.bench.predict import photo_frame
    from platform.inference import InferenceOptions
    from platform.tasks import predictor as task_predictor

    frame = photo_frame(1920, 1080)
    steps = {}
    for role, (model, config) in models.items():
        predictor = task_predictor(model.to("cpu").eval(), config, torch.device("cpu"), InferenceOptions(precision="fp32"))
        predictor.run(frame)  # warm-up
        steps[role] = (lambda p=predictor: p.run(frame))
    times = interleave(steps, rounds, 1, torch.device("cpu"))
    ms = {role: 1000 * statistics.median(t) for role, t in times.items()}
    return ms, {**speed_ratio(times, "student", "teacher"), "ms_per_round": {r: [1000 * v for v in t]
                                                                            for r, t in times.items()}}


def verdict(teacher: dict, student: dict) -> dict:
    speedup = teacher["ms_1080p"] / student["ms_1080p"]
    gap = student["psnr"] - teacher["psnr"]
    return {"speedup": speedup, "psnr_gap_db": gap, "met": speedup >= 4.0 and gap >= -0.5}


def table(teacher: dict, student: dict, v: dict) -> str:
    lines = ["| model | test PSNR (dB) | test SSIM | ms / 1080p frame (CPU) | parameters |", "|---|---|---|---|---|"]
    for role, r in (("teacher", teacher), ("student", student)):
        lines.append(f"| {role} `{r['model']}` | {r['psnr']:.2f} | {r['ssim']:.3f} | {r['ms_1080p']:.0f} | "
                     f"{r['params'] / 1e3:.0f}k |")
    return ("\n".join(lines) + f"\n\nstudent: {v['speedup']:.1f}x faster, {v['psnr_gap_db']:+.2f} dB against the "
            f"teacher -> bar (>= 4x, within 0.5 dB) {'MET' if v['met'] else 'NOT met'}")


def run(args) -> dict:
    from platform.bench.quality import split_sample, test_task
    from platform.distill.run import DistillOptions, run_distill
    from platform.pyfunc import load_any, load_torch_model
    from platform.search.timebox import parse_duration

    names = args.test_frames.split(",")
    root = Path.cwd()
    search_dir, whole = split_sample(root / "data", names)
    unlabelled = write_unlabelled(root / "data", names, args.unlabelled_per_frame)
    test = test_task(whole, names)
    t0 = time.monotonic()
    uri = teacher_uri(args, search_dir)
    teacher_wall = time.monotonic() - t0
    overrides = {"model": {"size": args.student_size}} if args.student_size not in (None, "", "null") else {}
    t0 = time.monotonic()
    out = run_distill(DistillOptions(teacher=uri, space="distill_img2img", quick=True, data=str(search_dir),
                                     unlabelled=str(unlabelled), time_budget=parse_duration(args.student_budget),
                                     overrides=overrides))
    student_wall = time.monotonic() - t0
    t_loaded = load_any(out.teacher.load_uri)
    s_model, s_config = load_torch_model(f"models:/{out.search.spec.name}/{out.search.promotion.version}")
    ms, ratio = speed({"teacher": (t_loaded.model, t_loaded.config), "student": (s_model, s_config)}, args.frames)
    teacher = {**quality(t_loaded.model, t_loaded.config, test), "ms_1080p": ms["teacher"], "uri": uri,
               "search_wall_s": teacher_wall}
    student = {**quality(s_model, s_config, test), "ms_1080p": ms["student"], "search_wall_s": student_wall,
               "promoted": out.search.promotion.promoted, "reason": out.search.promotion.reason,
               "cache": out.cache, "trial": {k: v for k, v in out.search.best.items()
                                             if k.startswith(("distill.", "optimizer.", "model."))}}
    return {"teacher": teacher, "student": student, "verdict": verdict(teacher, student), "timing": ratio}


def run_segmentation(args) -> dict:
    from platform.bench.distill_seg import run as seg_run

    return seg_run(args)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.frames is None:
        args.frames = 3 if args.task == "segmentation" else 5
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    from platform.logs import quiet_third_party

    quiet_third_party()
    here = Path.cwd()
    os.environ.setdefault("PLATFORM_DATA_DIR", str((here / ".cache" / "data").resolve()))  # reuse the sample cache
    if args.teacher and "://" not in args.teacher and Path(args.teacher).exists():
        args.teacher = str(Path(args.teacher).resolve())
    with tempfile.TemporaryDirectory(prefix="bench-distill-") as tmp:
        os.chdir(tmp)  # a private ./mlruns and teacher cache: the user's registry is left alone
        try:
            result = run_segmentation(args) if args.task == "segmentation" else run(args)
        finally:
            os.chdir(here)
    if args.task == "segmentation":
        from platform.bench.distill_seg import table as seg_table

        print(seg_table(result))
    else:
        print(table(result["teacher"], result["student"], result["verdict"]))
        t = result["timing"]
        print(f"speed ratio per round: {t['round_min']:.1f}x .. {t['round_max']:.1f}x over {t['rounds']} interleaved "
              "rounds")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
