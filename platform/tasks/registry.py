"""The task registry, and what the inference layer needs to know about a trial's task.

Task modules register their class with :func:`register_task`; :mod:`platform.tasks` imports the
built-in ones. :mod:`platform.inference` runs networks and knows nothing of tasks: its callers
ask here for a trial's output kind object (:func:`output_kind`) and hand it over, or build their
:class:`~platform.inference.Predictor` with :func:`predictor`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from platform.inference import InferenceOptions, Predictor
from platform.registry import Registry
from platform.tasks.base import Task
from platform.tasks.outputs import OUTPUT_KINDS, OutputKind, output_kind_named

TASKS = Registry("task")


def register_task(name: str, **meta):
    return TASKS.register(name, **meta)


def create(name: str, config: dict, seed: int = 0):
    """Build the task ``name`` from the ``task`` section of a resolved trial config."""
    return TASKS.get(name, where="task.name")(config, seed=seed)


def available() -> list[str]:
    return TASKS.available()


def task_kind(config: Mapping[str, Any]) -> str:
    """The name of the output kind of a trial config's task: img2img, segmentation, hierarchical, matting...

    The registered task's ``kind``; a task name the registry does not know is its own kind when it
    is one, else img2img (the oldest checkpoints name no task).
    """
    name = _task_name(config)
    kind = None
    if name in TASKS:
        kind = TASKS.meta(name).get("kind") or getattr(TASKS.get(name), "kind", None)
    return kind or (name if name in OUTPUT_KINDS else "img2img")


def task_attr(config: Mapping[str, Any], name: str, default: Any = None) -> Any:
    """An attribute of the trial's registered task class (e.g. ``output_range``), or ``default``."""
    task_name = _task_name(config)
    return getattr(TASKS.get(task_name), name, default) if task_name in TASKS else default


def output_range(config: Mapping[str, Any]) -> tuple[float, float]:
    """The value range of the task's network output (matting alphas may be [0, 1]; default [-1, 1])."""
    lo, hi = task_attr(config, "output_range", (-1.0, 1.0))
    return float(lo), float(hi)


def output_kind(config: Mapping[str, Any]) -> OutputKind:
    """The output kind object of a trial config's task (what inference, pyfunc, export and predict ask):
    the task class's own (:meth:`Task.output_kind`), else the kind its stored name maps to."""
    name = _task_name(config)
    cls = TASKS.get(name) if name in TASKS else None
    if isinstance(cls, type) and issubclass(cls, Task):
        return cls.output_kind(config)
    return output_kind_named(task_kind(config), config, output_range(config))


def predictor(model, config: Mapping[str, Any], device="cpu", options: InferenceOptions | None = None) -> Predictor:
    """A :class:`~platform.inference.Predictor` for a trial's network, told its task's output kind."""
    return Predictor(model, config, device, options, kind=output_kind(config))


def _task_name(config: Mapping[str, Any]) -> str:
    task = (config.get("task") or {}) if isinstance(config, Mapping) else {}
    return task.get("name", "img2img")
