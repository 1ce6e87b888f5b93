"""Benchmarks: ``python -m platform.bench <name> [options]``.

Each benchmark is a module ``platform.bench.<name>`` with a ``main(argv) -> int`` that
prints a table to stdout (``predict``: full-resolution inference frames/s).
"""

from __future__ import annotations

import pkgutil
from pathlib import Path


def available() -> list[str]:
    """Names of the benchmark modules in this package."""
    return sorted(m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)]) if not m.name.startswith("_"))
