"""``python -m platform.distill --teacher models:/NAME@champion [SPACE] ...``: distil a champion into students."""

from __future__ import annotations

import argparse
import logging
import sys

from platform.errors import ConfigError, cli_main
from platform.logs import setup_logging


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m platform.distill",
        description="Train small students from a registered teacher: the teacher labels the shot's frames once "
                    "(cached), then a Ray Tune search over students (architecture, size, λ of the distillation term, "
                    "temperature, learning rate) runs on the ground truth and the teacher's outputs. The best "
                    "student is registered as NAME_student and promoted to its `champion` alias under the usual "
                    "rules (docs/distillation.md).")
    p.add_argument("space", nargs="?", default=None,
                   help="student space in search_spaces/ (default: distill_img2img, or distill_segmentation for a "
                        "segmentation teacher) or a YAML path")
    p.add_argument("--teacher", required=True, metavar="MODEL_URI",
                   help="models:/NAME@champion, models:/NAME/VERSION, or a checkpoint path")
    p.add_argument("--unlabelled", metavar="DIR_OR_VIDEO",
                   help="ungraded frames of the shot (a folder of images or a video): task.unlabelled")
    p.add_argument("--max-frames", type=int, help="read at most this many unlabelled frames")
    p.add_argument("--data", help="labelled data folder or sample:<name> (default: the teacher's training data)")
    p.add_argument("--quick", action="store_true", help="apply the space's `quick` profile")
    p.add_argument("--max-trials", type=int, help="number of student trials")
    p.add_argument("--time-budget", metavar="DURATION", help="wall-clock budget of the search (e.g. 10m)")
    p.add_argument("--experiment", help="registered name of the students (default: NAME_student)")
    p.add_argument("--address", help="Ray cluster address (default: $RAY_ADDRESS, else a local Ray)")
    p.add_argument("--storage", help="Ray storage path or URI for results and checkpoints")
    p.add_argument("--no-promote", action="store_true", help="register nothing and leave the champion alone")
    p.add_argument("--num-cpus", type=int, help="logical CPUs for a local Ray")
    p.add_argument("--num-gpus", type=int, help="GPUs of a local Ray")
    p.add_argument("--device", default="cpu", help="where the teacher labels the frames (cpu, cuda)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one value of the space, e.g. --set distill.weight=2 (VALUE is YAML; repeatable)")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


@cli_main
def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    setup_logging(logging.DEBUG if args.verbose else logging.INFO)
    from platform.distill.run import DistillOptions, run_distill
    from platform.search.__main__ import parse_overrides
    from platform.search.timebox import parse_duration

    for flag, value in (("--max-trials", args.max_trials), ("--max-frames", args.max_frames)):
        if value is not None and value < 1:
            raise ConfigError(f"{flag} is {value}; give a number >= 1.")
    run_distill(DistillOptions(
        teacher=args.teacher, space=args.space, data=args.data, unlabelled=args.unlabelled, max_frames=args.max_frames,
        quick=args.quick, max_trials=args.max_trials,
        time_budget=parse_duration(args.time_budget) if args.time_budget is not None else None,
        overrides=parse_overrides(args.overrides), experiment=args.experiment, address=args.address,
        storage=args.storage, promote=not args.no_promote, num_cpus=args.num_cpus, num_gpus=args.num_gpus,
        device=args.device))
    return 0


if __name__ == "__main__":
    sys.exit(main())
