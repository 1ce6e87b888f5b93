"""Task registry: a task bundles its data set, default loss, validation metrics and logged images."""

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


from platform.tasks import img2img  # noqa: E402,F401  (registers the built-in tasks)
