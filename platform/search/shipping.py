"""What a search ships to the Ray nodes: the project's code folders, nothing else.

Ray's ``working_dir`` upload sends a whole folder minus ``.gitignore``; pointed at the
repository it would carry whatever lies there (a ``.env`` with keys, notebooks, local data,
MLflow stores) to every node. :func:`code_dir` builds a folder holding copies of the
:data:`SHIPPED` entries only, once per process, and that folder is the working_dir.
"""

from __future__ import annotations

import atexit
import functools
import logging
import shutil
import tempfile
from pathlib import Path

from platform.config import REPO_ROOT

log = logging.getLogger(__name__)

# Everything a trial imports or reads from the code: the package, the trainables and the shipped spaces.
SHIPPED = ("platform", "trainables", "search_spaces", "pyproject.toml", "requirements.txt")
_IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", ".*")


@functools.lru_cache(maxsize=1)
def code_dir() -> str:
    """A private copy of the project's code folders, removed when this process exits."""
    root = Path(tempfile.mkdtemp(prefix="platform-code-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    for name in SHIPPED:
        src = REPO_ROOT / name
        if src.is_dir():
            shutil.copytree(src, root / name, ignore=_IGNORED)
        elif src.is_file():
            shutil.copy2(src, root / name)
    log.debug("shipping %s to the Ray nodes from %s", ", ".join(SHIPPED), root)
    return str(root)
