"""A trial that starts from an earlier champion's weights (a warm-started search).

The driver stages the champion's ``weights.pt`` (its ``model`` tensors and trial ``config``) in
the experiment folder (:mod:`platform.search.warminit`) and names it in ``_run.warm_weights``.
A trial whose ``warm_start.init`` is ``champion`` and whose architecture is the champion's gets
every tensor that fits through the pretrained loader's partial load
(:func:`platform.pretrained.load_weights`: strict when the file fits exactly, else by name,
prefix and position, shape-mismatched tensors skipped), which logs what it transferred,
shape-mismatched, missed and left unused. The counts are reported with the trial's first epoch
as ``warm_init_transferred``, ``warm_init_missing``, ``warm_init_unexpected``, ... A trial of
another architecture, or with ``init: scratch``, starts from its own initialisation.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

PREFIX = "warm_init_"


def init_from_champion(model: torch.nn.Module, config: dict[str, Any], rank: int = 0) -> dict[str, float] | None:
    """Load the staged champion into ``model`` when this trial asks for it; the load's counts, else None."""
    warm = config.get("warm_start") or {}
    source = (config.get("_run") or {}).get("warm_weights")
    if warm.get("init") != "champion" or not source:
        return None
    with local_copy(source) as path:
        from platform.safeio import load_state

        champion = load_state(path, "warm-start weights")
        theirs = (champion.get("config") or {}).get("model", {}).get("architecture")
        mine = config["model"]["architecture"]
        if theirs != mine:
            if rank == 0:
                log.info("warm start: the champion is a %s and this trial a %s; it starts from scratch", theirs, mine)
            return {f"{PREFIX}transferred": 0.0, f"{PREFIX}fraction": 0.0}
        return load_counts(model, champion["model"], warm.get("weights") or str(source), rank)


def load_counts(model: torch.nn.Module, state: dict, source: str, rank: int = 0) -> dict[str, float]:
    """Partial load of ``state`` into ``model``; the counts as ``warm_init_*`` metrics."""
    from platform.pretrained import load_weights

    level = logging.INFO if rank == 0 else logging.DEBUG
    report = load_weights(model, state, strict=None, log_level=logging.DEBUG)
    report.source = f"the champion {source}"
    report.log(log, level)
    return report.as_metrics(PREFIX)


@contextlib.contextmanager
def local_copy(source: str) -> Iterator[Path]:
    """The staged file as a local path (downloaded to a temporary folder from ``s3://...``)."""
    if "://" not in source:
        yield Path(source)
        return
    import pyarrow.fs

    fs, path = pyarrow.fs.FileSystem.from_uri(source)
    with tempfile.TemporaryDirectory(prefix="warm-init-") as tmp:
        local = Path(tmp) / "weights.pt"
        pyarrow.fs.copy_files(path, str(local), source_filesystem=fs)
        yield local
