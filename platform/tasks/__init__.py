"""Tasks: a task bundles its data set, default loss, validation metrics and logged images.

Built-in tasks: ``img2img`` (paired images), ``segmentation`` (images + index masks, binary or
multiclass), ``hierarchical_segmentation`` (one network, binary/coarse/fine heads) and ``matting``
(images + alpha). The interface the common trainer uses: ``kind``, ``primary_metric``, ``mode``,
``metric_names``, ``model_kwargs()``, ``default_loss()``, ``train_dataset()``, ``validate(...)``,
``example_input()``; segmentation tasks also offer ``create_loss(spec)`` (ignore index, levels).

The registry itself is :mod:`platform.tasks.registry` (task modules register there); this
package imports the built-in tasks so that they are registered.
"""

from __future__ import annotations

from platform.tasks import img2img, matting, segmentation  # noqa: F401  (registers the built-in tasks)
from platform.tasks.registry import (
    TASKS,
    available,
    create,
    output_range,
    predictor,
    register_task,
    task_attr,
    task_kind,
)

__all__ = ["TASKS", "available", "create", "output_range", "predictor", "register_task", "task_attr", "task_kind"]
