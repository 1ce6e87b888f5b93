"""Task modules outside the package: ``PLATFORM_TASK_MODULES``.

A new task is one Python file that subclasses :class:`platform.tasks.Task` and registers it
(see docs/data-and-tasks.md). Search trials, ``predict`` and ``export`` run in processes of
their own (Ray workers, a shell), which know the file only when it is named: the environment
variable ``PLATFORM_TASK_MODULES`` lists such files (separated by ``os.pathsep``), and
:mod:`platform.tasks` imports them after the built-in tasks. A file that is already imported
(e.g. the module that started the search) is not imported again.

Importing a file runs its code: name only files you would run yourself.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import sys
from pathlib import Path

from platform.errors import ConfigError

log = logging.getLogger(__name__)

ENV = "PLATFORM_TASK_MODULES"


def module_paths(value: str | None = None) -> list[Path]:
    """The files named by ``PLATFORM_TASK_MODULES`` (or ``value``), resolved; a missing one is an error."""
    raw = os.environ.get(ENV, "") if value is None else value
    paths = []
    for item in filter(None, (s.strip() for s in raw.split(os.pathsep))):
        path = Path(item).expanduser().resolve()
        if not path.is_file() or path.suffix != ".py":
            raise ConfigError(f"{ENV} names {item!r}, which is not a Python file; give the paths of task modules "
                              f"(.py files), separated by {os.pathsep!r}, or unset {ENV}.")
        paths.append(path)
    return paths


def _imported(path: Path) -> bool:
    for module in list(sys.modules.values()):
        file = getattr(module, "__file__", None)
        if file and Path(file).resolve() == path:
            return True
    return False


def load_task_modules(value: str | None = None) -> list[str]:
    """Import every task module of ``PLATFORM_TASK_MODULES`` not yet imported; their module names."""
    names = []
    for path in module_paths(value):
        if _imported(path):
            continue
        name = f"platform_task_{path.stem}_{hashlib.sha1(str(path).encode()).hexdigest()[:8]}"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except Exception:
            sys.modules.pop(name, None)
            raise
        log.info("imported task module %s", path)
        names.append(name)
    return names
