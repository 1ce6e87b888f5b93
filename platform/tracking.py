"""MLflow and TensorBoard tracking of a search, from the driver.

All MLflow writes happen in the driver process through a Ray Tune callback: one parent run
per search, one nested run per trial (params, per-epoch metrics including every loss
component, stop reason, validation image grids, TensorBoard event files). A single writer
keeps the embedded SQLite store free of lock contention, and workers never need the
tracking server's address or credentials.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import mlflow
from mlflow.tracking import MlflowClient
from ray.tune import Callback

log = logging.getLogger(__name__)

DEFAULT_TRACKING_URI = "sqlite:///mlruns/mlflow.db"
DEFAULT_ARTIFACT_ROOT = "mlruns/artifacts"
PARENT_TAG = "mlflow.parentRunId"
NON_METRIC_KEYS = {"epoch", "training_iteration", "timestamp", "time_this_iter_s", "time_total_s", "pid",
                   "time_since_restore", "iterations_since_restore", "done", "checkpoint_dir_name"}


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def setup_mlflow(experiment: str) -> tuple[MlflowClient, str]:
    """Point MLflow at the configured store and return (client, experiment_id)."""
    uri = tracking_uri()
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        Path(uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    # The embedded default keeps the model registry on the same SQLite store.
    mlflow.set_registry_uri(os.environ.get("MLFLOW_REGISTRY_URI") or uri)
    client = MlflowClient()
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        location = None
        if uri == DEFAULT_TRACKING_URI or (uri.startswith("sqlite:") and not os.environ.get("MLFLOW_ARTIFACT_ROOT")):
            location = Path(DEFAULT_ARTIFACT_ROOT).resolve().as_uri()
        elif os.environ.get("MLFLOW_ARTIFACT_ROOT"):
            location = os.environ["MLFLOW_ARTIFACT_ROOT"].rstrip("/") + "/" + experiment
        exp_id = client.create_experiment(experiment, artifact_location=location)
    else:
        exp_id = exp.experiment_id
    return client, exp_id


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def read_checkpoint_file(checkpoint_path: str, name: str, storage_filesystem=None) -> bytes | None:
    """Read one file of a checkpoint on local or remote (pyarrow) storage; None if absent."""
    try:
        if storage_filesystem is None:
            p = Path(checkpoint_path) / name
            return p.read_bytes() if p.is_file() else None
        with storage_filesystem.open_input_stream(f"{checkpoint_path.rstrip('/')}/{name}") as f:
            return f.read()
    except (FileNotFoundError, OSError):
        return None


class MLflowSearchCallback(Callback):
    """Mirror every trial of a Tune search into nested MLflow runs and TensorBoard."""

    def __init__(self, client: MlflowClient, experiment_id: str, parent_run_id: str, tensorboard_dir: Path,
                 epochs: int, metric: str, mode: str, storage_filesystem=None, existing: dict | None = None):
        self.client = client
        self.experiment_id = experiment_id
        self.parent_run_id = parent_run_id
        self.tb_dir = Path(tensorboard_dir)
        self.epochs = epochs
        self.metric, self.mode = metric, mode
        self.fs = storage_filesystem
        self.run_ids: dict[str, str] = dict(existing or {})
        self.writers: dict[str, Any] = {}
        self.last: dict[str, dict] = {}
        self.best: dict[str, float] = {}
        self.stop_reasons: dict[str, str] = {}

    # ------------------------------------------------------------------ helpers
    def _run_id(self, trial) -> str:
        rid = self.run_ids.get(trial.trial_id)
        if rid is None:
            run = self.client.create_run(
                self.experiment_id, run_name=f"trial-{trial.trial_id}",
                tags={PARENT_TAG: self.parent_run_id, "trial_id": trial.trial_id, "trial_name": str(trial)})
            rid = run.info.run_id
            self.run_ids[trial.trial_id] = rid
            params = {k: v for k, v in flatten(trial.config).items() if not k.startswith("_run")}
            self.client.log_batch(rid, params=[mlflow.entities.Param(k, str(v)[:6000]) for k, v in params.items()])
        return rid

    def _writer(self, trial):
        w = self.writers.get(trial.trial_id)
        if w is None:
            from torch.utils.tensorboard import SummaryWriter

            w = SummaryWriter(log_dir=str(self.tb_dir / trial.trial_id))
            self.writers[trial.trial_id] = w
        return w

    # ------------------------------------------------------------------ Tune hooks
    def on_trial_start(self, iteration, trials, trial, **info):
        self._run_id(trial)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        rid = self._run_id(trial)
        step = int(result.get("epoch", result.get("training_iteration", 0)))
        ts = int(time.time() * 1000)
        metrics = []
        writer = self._writer(trial)
        for k, v in result.items():
            if k in NON_METRIC_KEYS or isinstance(v, bool) or not isinstance(v, (int, float)):
                continue
            metrics.append(mlflow.entities.Metric(k, float(v), ts, step))
            writer.add_scalar(k, float(v), step)
        if metrics:
            self.client.log_batch(rid, metrics=metrics)
        if "dropped_losses" in result:
            self.client.set_tag(rid, "dropped_losses", str(result["dropped_losses"])[:5000])
        self.last[trial.trial_id] = dict(result)
        value = result.get(self.metric)
        if isinstance(value, (int, float)):
            better = (self.best.get(trial.trial_id) is None or
                      (value > self.best[trial.trial_id] if self.mode == "max" else value < self.best[trial.trial_id]))
            if better:
                self.best[trial.trial_id] = float(value)
        ckpt = result.get("checkpoint_path")  # TorchTrainer trials report their checkpoint path
        if ckpt:
            self._log_grid(trial, rid, ckpt, step)

    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
        # In-process trials hand their checkpoint to Tune directly.
        rid = self._run_id(trial)
        step = int(self.last.get(trial.trial_id, {}).get("epoch", 0))
        self._log_grid(trial, rid, checkpoint.path, step, checkpoint.filesystem)

    def _log_grid(self, trial, rid: str, path: str, step: int, filesystem=None) -> None:
        data = read_checkpoint_file(path, "val_grid.png", filesystem if filesystem is not None else self.fs)
        if not data:
            return
        with tempfile.TemporaryDirectory() as tmp:
            f = Path(tmp) / f"val_grid_epoch{step:04d}.png"
            f.write_bytes(data)
            self.client.log_artifact(rid, str(f), artifact_path="validation")
        try:
            import imageio.v3 as iio

            self._writer(trial).add_image("validation/input|output|target", iio.imread(data), step,
                                          dataformats="HWC")
        except Exception:  # TensorBoard images are a convenience; never fail a search over one
            log.debug("could not add image to TensorBoard", exc_info=True)

    def _finish(self, trial, status: str, reason: str) -> None:
        rid = self._run_id(trial)
        self.stop_reasons[trial.trial_id] = reason
        self.client.set_tag(rid, "stop_reason", reason)
        w = self.writers.pop(trial.trial_id, None)
        if w is not None:
            w.close()
            tb = self.tb_dir / trial.trial_id
            if tb.is_dir():
                self.client.log_artifacts(rid, str(tb), artifact_path="tensorboard")
        self.client.set_terminated(rid, status=status)

    def on_trial_complete(self, iteration, trials, trial, **info):
        epochs = int(self.last.get(trial.trial_id, {}).get("epoch", 0))
        reason = "completed" if epochs >= self.epochs else f"early-stopped by scheduler at epoch {epochs}"
        self._finish(trial, "FINISHED", reason)

    def on_trial_error(self, iteration, trials, trial, **info):
        reason = "error"
        err = getattr(trial, "error_file", None) or ""
        try:
            if err and Path(err).is_file():
                lines = [line for line in Path(err).read_text().splitlines() if line.strip()]
                reason = "error: " + (lines[-1] if lines else "unknown")[:500]
        except OSError:
            pass
        self._finish(trial, "FAILED", reason)
