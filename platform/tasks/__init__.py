"""Tasks: a task bundles its data set, default loss, validation metrics and output kind.

Built-in tasks: ``img2img`` (paired images), ``segmentation`` (images + index masks, binary or
multiclass), ``hierarchical_segmentation`` (one network, binary/coarse/fine heads) and ``matting``
(images + alpha). Every task subclasses :class:`~platform.tasks.base.Task`, the one place to
extend (data set, default loss, per-item validation scores; the validation loop is written once
there). Its output kind object (:mod:`platform.tasks.outputs`) is what inference, the MLflow
model, export and ``predict`` ask: :func:`output_kind` finds it for a trial config.

The registry itself is :mod:`platform.tasks.registry` (task modules register there); this
package imports the built-in tasks so that they are registered, then the task modules named by
``PLATFORM_TASK_MODULES`` (:mod:`platform.tasks.plugins`).
"""

from __future__ import annotations

from platform.tasks import img2img, matting, segmentation  # noqa: F401  (registers the built-in tasks)
from platform.tasks.base import Task, ValResult
from platform.tasks.outputs import OUTPUT_KINDS, OutputKind, register_output_kind
from platform.tasks.registry import (
    TASKS,
    available,
    create,
    output_kind,
    output_range,
    predictor,
    register_task,
    task_attr,
    task_kind,
)

__all__ = ["OUTPUT_KINDS", "TASKS", "OutputKind", "Task", "ValResult", "available", "create", "output_kind",
           "output_range", "predictor", "register_output_kind", "register_task", "task_attr", "task_kind"]

from platform.tasks.plugins import load_task_modules

load_task_modules()
