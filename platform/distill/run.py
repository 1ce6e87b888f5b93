"""Distillation as a search: the teacher labels the shot once, then the ordinary search driver runs.

:func:`run_distill` resolves and pins the teacher (``models:/NAME@champion`` -> the version it
names now), builds the space's task on the data (the teacher's own training data unless
``--data`` says otherwise) plus ``task.unlabelled``, fills the teacher cache for every training
frame (:mod:`platform.distill.teacher`), and hands the search to
:func:`platform.search.driver.run_search` unchanged but for ``distill.teacher`` (and absolute
cache and frame paths, so that Ray workers find them): the same scheduler, searcher, MLflow
tracking, report, floors and promotion. Students are registered as ``NAME_student`` and take
that name's ``champion`` alias under the usual rules.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from platform.config import deep_merge
from platform.distill.cache import default_root
from platform.distill.frames import resolve as resolve_unlabelled
from platform.distill.task import DistillTask
from platform.distill.teacher import Teacher, TeacherRef, fill_cache, resolve_teacher
from platform.errors import ConfigError

log = logging.getLogger("platform.distill")

DEFAULT_SPACES = {"img2img": "distill_img2img", "matting": "distill_img2img", "segmentation": "distill_segmentation"}


@dataclass
class DistillOptions:
    teacher: str
    space: str | None = None  # default: distill_img2img / distill_segmentation by the teacher's task
    data: str | None = None  # default: the teacher's training data
    unlabelled: str | None = None  # overrides task.unlabelled
    max_frames: int | None = None  # overrides task.unlabelled_max_frames
    quick: bool = False
    max_trials: int | None = None
    time_budget: float | None = None
    overrides: dict = field(default_factory=dict)
    experiment: str | None = None  # default: NAME_student
    address: str | None = None
    storage: str | None = None
    num_cpus: int | None = None
    num_gpus: int | None = None
    promote: bool = True
    device: str = "cpu"  # where the teacher labels the frames


@dataclass
class DistillOutcome:
    teacher: TeacherRef
    teacher_params: int
    teacher_score: float | None  # the teacher's validation metric on the search's validation frames
    cache: dict[str, float]  # frames, computed, seconds
    search: Any  # platform.search.driver.SearchOutcome


def student_name(ref: TeacherRef) -> str:
    return f"{ref.name}_student"


def _search_options(opts: DistillOptions, ref: TeacherRef, teacher: Teacher, overrides: dict):
    from platform.search.driver import SearchOptions

    data = opts.data or (teacher.config.get("task") or {}).get("data")
    return SearchOptions(space=opts.space or DEFAULT_SPACES.get(teacher.kind, "distill_img2img"), quick=opts.quick,
                         data=data, max_trials=opts.max_trials, time_budget=opts.time_budget, overrides=overrides,
                         experiment=opts.experiment or student_name(ref), address=opts.address, storage=opts.storage,
                         promote=opts.promote, num_cpus=opts.num_cpus, num_gpus=opts.num_gpus)


def check_task(spec, teacher: Teacher) -> None:
    if spec["task"]["name"] != teacher.task_name:
        raise ConfigError(f"{spec.source}: task.name is {spec['task']['name']!r} but the teacher {teacher.ref.uri} was "
                          f"trained on task {teacher.task_name!r}; a student learns the teacher's task. Give a space of "
                          f"that task (e.g. {DEFAULT_SPACES.get(teacher.kind, 'distill_img2img')}).")


def pinned_overrides(opts: DistillOptions, ref: TeacherRef, spec) -> dict:
    """The user's overrides plus the pinned teacher, an absolute cache folder and unlabelled path."""
    task_over: dict = {}
    unlabelled = opts.unlabelled or spec["task"].get("unlabelled")
    if unlabelled:
        task_over["unlabelled"] = str(resolve_unlabelled(unlabelled, spec["task"]["data"]))
    if opts.max_frames is not None:
        task_over["unlabelled_max_frames"] = int(opts.max_frames)
    cache = spec["distill"]["cache"]
    root = Path(cache).expanduser().resolve() if cache else default_root()
    pinned = {"distill": {"teacher": ref.teacher_id, "cache": str(root)}}
    if task_over:
        pinned["task"] = task_over
    return deep_merge(copy.deepcopy(opts.overrides), pinned)


def run_distill(opts: DistillOptions) -> DistillOutcome:
    from platform.search.driver import preflight, prepare_spec, run_search

    ref = resolve_teacher(opts.teacher)
    teacher = Teacher(ref, device=opts.device)
    log.info("teacher %s: task %s, %.2fM parameters", ref.load_uri, teacher.task_name, teacher.params / 1e6)
    first = _search_options(opts, ref, teacher, deep_merge(opts.overrides, {"distill": {"teacher": ref.teacher_id}}))
    spec = prepare_spec(first)
    check_task(spec, teacher)
    task = preflight(spec)  # the data folder is now absolute in spec
    search_opts = _search_options(opts, ref, teacher, pinned_overrides(opts, ref, spec))
    spec = prepare_spec(search_opts)
    spec.config["task"]["data"] = str(task.folder)
    dtask = DistillTask(task, spec.config)
    labelled, unlabelled = dtask.frames()
    if not unlabelled:
        log.warning("no unlabelled frames (task.unlabelled / --unlabelled): the teacher labels the %d labelled "
                    "training frame(s) only", len(labelled))
    stats = fill_cache([x for _, x, _ in labelled] + [x for _, x in unlabelled], dtask.cache, teacher)
    params = teacher.params
    del teacher  # the trials never run it
    outcome = run_search(search_opts)  # scores the teacher too (outcome.teacher_score, platform.compress.points)
    _record(outcome, ref, stats, spec["search"]["metric"])
    return DistillOutcome(ref, params, outcome.teacher_score, stats, outcome)


def _record(outcome, ref: TeacherRef, stats: dict, metric: str) -> None:
    """The teacher on the search's MLflow parent run (its tags; its score is logged by the search)."""
    from mlflow.tracking import MlflowClient

    from platform import tracking

    client = MlflowClient(tracking.tracking_uri())
    client.set_tag(outcome.parent_run_id, "distill_teacher", ref.teacher_id)
    client.set_tag(outcome.parent_run_id, "distill_teacher_uri", ref.uri)
    client.log_metric(outcome.parent_run_id, "distill_teacher_frames", float(stats["frames"]))
    score = outcome.teacher_score
    best = outcome.best[metric] if outcome.best else None
    log.info("teacher %s: %s %s; best student: %s %s", ref.teacher_id, metric,
             f"{score:.4f}" if score is not None else "n/a", metric, f"{best:.4f}" if best is not None else "n/a")
