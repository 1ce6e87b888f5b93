"""MLflow registry URIs, ``models:/NAME@ALIAS`` and ``models:/NAME/VERSION``: the one pattern the
warm start, the distillation teacher and the pruning search's student name all read (no MLflow
import, so configs can be checked without it)."""

from __future__ import annotations

import re

MODEL_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/@]+)|/(?P<version>\d+))$")


def registered_name(uri: str | None) -> str | None:
    """NAME of ``models:/NAME@ALIAS`` or ``models:/NAME/VERSION``; None for anything else."""
    m = MODEL_URI.match(str(uri or "").strip())
    return m["name"] if m else None
