"""The teacher: a registered model (or checkpoint) loaded once, labelling the shot's frames into the cache.

``resolve_teacher("models:/shot@champion")`` pins the alias to the version it names now
(``models:/shot/3``): every trial, and the cache key, refer to that version even if the alias
moves during the search. :class:`Teacher` loads it with the platform's model loader
(:func:`platform.pyfunc.load_any`) and predicts whole frames the way validation does
(:func:`platform.tasks.base.predict_full`: native resolution, tiled when large), keeping the raw
network output (logits for segmentation). :func:`fill_cache` runs it on every training frame
whose output the cache lacks.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from platform.distill.cache import TeacherCache
from platform.errors import ConfigError
from platform.model_uri import MODEL_URI

log = logging.getLogger(__name__)


@dataclass
class TeacherRef:
    uri: str  # as given
    load_uri: str  # what is loaded: models:/NAME/VERSION, runs:/..., or a local path
    name: str  # the registered name (students are registered as NAME_student), else the file's stem
    teacher_id: str  # the cache's key prefix and the trials' distill.teacher


def resolve_teacher(uri: str) -> TeacherRef:
    """Pin ``uri`` to one model version (a ConfigError naming what exists when it does not resolve)."""
    uri = str(uri).strip()
    local = Path(uri).expanduser()
    if local.exists():
        local = local.resolve()
        name = (local.name if local.is_dir() else local.parent.name) or "teacher"
        return TeacherRef(uri, str(local), re.sub(r"[^A-Za-z0-9_.-]", "_", name), f"{local}#sha256:{_digest(local)}")
    m = MODEL_URI.match(uri)
    if not m:
        raise ConfigError(f"--teacher {uri}: expected a registered model, models:/NAME@champion or "
                          "models:/NAME/VERSION (or a checkpoint path).")
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from platform import tracking

    mlflow.set_tracking_uri(tracking.tracking_uri())  # the store searches register in (and the loader reads)
    client = MlflowClient()
    try:
        v = (client.get_model_version_by_alias(m["name"], m["alias"]) if m["alias"]
             else client.get_model_version(m["name"], m["version"]))
    except MlflowException:
        names = sorted(r.name for r in client.search_registered_models(max_results=50))
        raise ConfigError(f"--teacher {uri}: no such model version in the MLflow registry at {client.tracking_uri} "
                          f"(registered: {', '.join(names) or 'none'}). Run a search of the shot first so that it "
                          "has a champion, or name an existing models:/NAME/VERSION.") from None
    pinned = f"models:/{m['name']}/{v.version}"
    if m["alias"]:
        log.info("teacher %s is version %s (%s)", uri, v.version, pinned)
    return TeacherRef(uri, pinned, m["name"], pinned)


def _digest(path: Path) -> str:
    """A content hash of a checkpoint file or folder (its files in name order)."""
    h = hashlib.sha256()
    for f in sorted(p for p in ([path] if path.is_file() else path.rglob("*")) if p.is_file()):
        h.update(str(f.relative_to(path) if f != path else f.name).encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


class Teacher:
    """A loaded teacher network; ``calls`` counts the frames it has predicted."""

    def __init__(self, ref: TeacherRef, device: str | torch.device = "cpu"):
        from platform.pyfunc import load_any
        from platform.tasks import task_kind

        loaded = load_any(ref.load_uri, device=device)
        self.ref = ref
        self.model = loaded.model.eval()
        self.config = loaded.config
        self.kind = task_kind(self.config)
        self.device = torch.device(device)
        self.calls = 0

    @property
    def task_name(self) -> str:
        return (self.config.get("task") or {}).get("name", "img2img")

    @property
    def params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def predict(self, frame: np.ndarray) -> np.ndarray:
        """The raw (C, H, W) float32 network output on one HxWxC frame (stored values or [0, 1] floats)."""
        from platform.data.paired import to_model_range
        from platform.tasks.base import predict_full

        x = to_model_range(frame)[None].to(self.device)
        out = predict_full(self.model, x, "fp32", self.config.get("task") or {}, clamp=self.kind != "segmentation")
        if isinstance(out, dict):
            raise ConfigError(f"teacher {self.ref.uri} has several output heads (a hierarchical model); distillation "
                              "takes a teacher with one output.")
        self.calls += 1
        return out[0].float().cpu().numpy()


def fill_cache(frames: list[np.ndarray], cache: TeacherCache, teacher: Teacher | None) -> dict[str, float]:
    """Make sure ``cache`` holds the teacher's output on every frame; ``teacher`` runs on misses only
    (None: every entry must exist already). Returns ``{frames, computed, seconds}``."""
    t0 = time.perf_counter()
    before = cache.computed
    compute = teacher.predict if teacher is not None else None
    for frame in frames:
        cache.get(frame, compute)
    stats = {"frames": len(frames), "computed": cache.computed - before, "seconds": time.perf_counter() - t0}
    log.info("teacher outputs: %d frame(s), %d computed, %d from the cache %s (%.1f s)", stats["frames"],
             stats["computed"], stats["frames"] - stats["computed"], cache.root, stats["seconds"])
    return stats
