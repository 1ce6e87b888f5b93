"""Task registry: a task bundles its data set, default loss, validation metrics and logged images.

Built-in tasks: ``img2img`` (paired images), ``segmentation`` (images + index masks, binary or
multiclass), ``hierarchical_segmentation`` (one network, binary/coarse/fine heads) and ``matting``
(images + alpha). The interface the common trainer uses: ``kind``, ``primary_metric``, ``mode``,
``metric_names``, ``model_kwargs()``, ``default_loss()``, ``train_dataset()``, ``validate(...)``,
``example_input()``; segmentation tasks also offer ``create_loss(spec)`` (ignore index, levels).
"""

from __future__ import annotations

from platform.registry import Registry

TASKS = Registry("task")


def register_task(name: str, **meta):
    return TASKS.register(name, **meta)


def create(name: str, config: dict, seed: int = 0):
    """Build the task ``name`` from the ``task`` section of a resolved trial config."""
    return TASKS.get(name, where="task.name")(config, seed=seed)


def available() -> list[str]:
    return TASKS.available()


# Register the built-in tasks: imported for that side effect, after TASKS and register_task exist.
from platform.tasks import img2img, matting, segmentation  # noqa: F401
