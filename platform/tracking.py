"""MLflow and TensorBoard tracking of a search, from the driver.

All MLflow writes happen in the driver process through a Ray Tune callback: one parent run
per search, one nested run per trial (params, per-epoch metrics including every loss
component, stop reason, rung, validation image grids, TensorBoard event files). A single
writer keeps the embedded SQLite store free of lock contention, and workers never need the
tracking server's address or credentials.

The same callback does the driver-side bookkeeping of the search: it accrues the measured
spend (:mod:`platform.search.budget`), prunes checkpoints (:mod:`platform.search.retention`),
classifies failures (non-finite loss, CUDA out of memory, exception), updates the live
Prometheus gauges (:mod:`platform.search.metrics`) and writes ``search_state.json`` in the
experiment folder. Its state (MLflow run ids, stop reasons, spend) is saved with Tune's
experiment state, so a ``--resume``d search continues the same child runs.
"""

from __future__ import annotations

import json
import logging
import math
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
    """``$MLFLOW_TRACKING_URI`` or the embedded default; a relative SQLite path is made absolute
    (against the current directory) so that MLflow's per-URI store cache never serves the
    database of another directory to a process that changed directory.

    An ``http(s)://user:password@host`` URI comes back without its user-info, which moves to
    ``MLFLOW_TRACKING_USERNAME``/``PASSWORD`` (MLflow sends them as basic auth): the URI can
    then be logged, shown and pickled into Tune's state without the password."""
    uri = os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        uri = "sqlite:///" + str(Path(uri[len("sqlite:///"):]).resolve())
    return _credentials_to_env(uri)


def _credentials_to_env(uri: str) -> str:
    from urllib.parse import unquote, urlsplit, urlunsplit

    from platform.secrets import register_url_secrets

    parts = urlsplit(uri)
    if parts.scheme not in ("http", "https") or "@" not in parts.netloc:
        return uri
    register_url_secrets(uri)
    if parts.username:
        os.environ.setdefault("MLFLOW_TRACKING_USERNAME", unquote(parts.username))
    if parts.password:
        os.environ.setdefault("MLFLOW_TRACKING_PASSWORD", unquote(parts.password))
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


class ScrubbingClient(MlflowClient):
    """An MLflow client that scrubs credentials from every param, tag and text it writes and
    shows its tracking URI without user-info (reports print it)."""

    @property
    def tracking_uri(self):
        from platform.secrets import scrub_url

        return scrub_url(super().tracking_uri)

    def create_run(self, experiment_id, start_time=None, tags=None, run_name=None):
        return super().create_run(experiment_id, start_time, _scrub_map(tags), run_name)

    def log_param(self, run_id, key, value, synchronous=None):
        return super().log_param(run_id, key, _scrub(value), synchronous=synchronous)

    def set_tag(self, run_id, key, value, synchronous=None):
        return super().set_tag(run_id, key, _scrub(value), synchronous=synchronous)

    def log_batch(self, run_id, metrics=(), params=(), tags=(), synchronous=None):
        params = [mlflow.entities.Param(p.key, _scrub(p.value)) for p in params or ()]
        tags = [mlflow.entities.RunTag(t.key, _scrub(t.value)) for t in tags or ()]
        return super().log_batch(run_id, metrics=metrics, params=params, tags=tags, synchronous=synchronous)

    def log_text(self, run_id, text, artifact_file):
        return super().log_text(run_id, _scrub(text), artifact_file)

    def log_dict(self, run_id, dictionary, artifact_file):
        return super().log_dict(run_id, json.loads(_scrub(json.dumps(dictionary, default=str))), artifact_file)


def _scrub(value):
    from platform.secrets import scrub

    return value if value is None else scrub(value)


def _scrub_map(tags: dict | None) -> dict | None:
    return None if tags is None else {k: _scrub(v) for k, v in tags.items()}


def setup_mlflow(experiment: str) -> tuple[MlflowClient, str]:
    """Point MLflow at the configured store and return (client, experiment_id). From here on
    every log line, param and tag of this process is scrubbed of credentials."""
    from platform.secrets import install_log_scrubber

    install_log_scrubber()
    uri = tracking_uri()
    if uri.startswith("sqlite:///"):
        Path(uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    # The registry follows the tracking URI (the embedded default keeps both in one SQLite store)
    # unless the user names another. Never pinned here: MLflow would export it as
    # $MLFLOW_REGISTRY_URI, and a later search of this process with another tracking URI would
    # register its models in the old store.
    if os.environ.get("MLFLOW_REGISTRY_URI"):
        mlflow.set_registry_uri(os.environ["MLFLOW_REGISTRY_URI"])
    client = ScrubbingClient()
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        location = None
        if uri.startswith("sqlite:") and not os.environ.get("MLFLOW_ARTIFACT_ROOT"):
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
                 epochs: int, metric: str, mode: str, storage_filesystem=None, existing: dict | None = None,
                 *, search: str = "", experiment_path: str | None = None, budget_key: str | None = None,
                 packer_key: str | None = None, milestones: list[int] | None = None, keep_best: int | None = None,
                 protected: set[str] | None = None, logged_steps: dict[str, int] | None = None):
        self.client = client
        self.uri = tracking_uri()
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
        self.search = search
        self.experiment_path = experiment_path
        self.budget_key, self.packer_key = budget_key, packer_key
        self.milestones = list(milestones or [])
        self.keep_best = keep_best
        self.protected = set(protected or ())
        self.logged_steps: dict[str, int] = dict(logged_steps or {})
        self.status: dict[str, str] = {}
        self.gauges = None
        self._last_state_write = 0.0

    # ------------------------------------------------------------------ pickling / Tune state
    def __getstate__(self):
        # Tune pickles callbacks into tuner.pkl; clients, writers and gauges are rebuilt lazily.
        # The URI is not saved either (a database URI may carry a password): it comes from the
        # environment again when the callback is unpickled.
        state = dict(self.__dict__)
        state.update(client=None, writers={}, gauges=None, uri=None, _deferred=None, _staging=None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self.uri = self.uri or tracking_uri()
        if self.client is None:
            mlflow.set_tracking_uri(self.uri)
            self.client = ScrubbingClient(self.uri)

    def get_state(self) -> dict:
        # Tune calls this right after writing its experiment state to the driver's staging folder:
        # keep a consistent copy of that state for --resume, and retire what the state on storage dropped.
        if getattr(self, "_staging", None) and self.experiment_path and "://" not in self.experiment_path:
            from platform.search import statefiles

            statefiles.snapshot(self._staging, self.experiment_path)
        if getattr(self, "_deferred", None) is not None:
            self._deferred.flush()
        budget = self._budget()
        return {"run_ids": dict(self.run_ids), "stop_reasons": dict(self.stop_reasons), "best": dict(self.best),
                "logged_steps": dict(self.logged_steps), "status": dict(self.status),
                "last_epoch": {k: int(v.get("epoch", 0) or 0) for k, v in self.last.items()},
                "budget": budget.get_state() if budget else None}

    def set_state(self, state: dict) -> None:
        self.run_ids.update(state.get("run_ids") or {})
        self.stop_reasons.update(state.get("stop_reasons") or {})
        self.best.update(state.get("best") or {})
        for k, v in (state.get("logged_steps") or {}).items():
            self.logged_steps[k] = max(int(v), self.logged_steps.get(k, 0))
        self.status.update(state.get("status") or {})
        for k, v in (state.get("last_epoch") or {}).items():
            self.last.setdefault(k, {"epoch": v})
        budget = self._budget()
        if budget is not None and state.get("budget"):
            budget.set_state(state["budget"])

    # ------------------------------------------------------------------ helpers
    def _budget(self):
        if not self.budget_key:
            return None
        from platform.search.budget import tracker_for

        return tracker_for(self.budget_key)

    def _packer(self):
        if not self.packer_key:
            return None
        from platform.search.packing import packer_for

        return packer_for(self.packer_key)

    def _metrics(self):
        if self.gauges is None:
            from platform.search.metrics import SearchMetrics

            self.gauges = SearchMetrics(self.search or self.parent_run_id, self.metric)
        return self.gauges

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

    def rung(self, epochs: int) -> int:
        """Number of rung milestones a trial has reached (0: stopped before the first)."""
        return sum(1 for m in self.milestones if epochs >= m)

    def _better(self, a: float, b: float | None) -> bool:
        return b is None or (a > b if self.mode == "max" else a < b)

    def _counts(self, trials) -> dict[str, int]:
        counts = {"pending": 0, "running": 0, "finished": 0, "stopped": 0, "failed": 0}
        for t in trials:
            if t.status == "PENDING":
                counts["pending"] += 1
            elif t.status in ("RUNNING", "PAUSED"):
                counts["running"] += 1
            elif t.status == "ERROR":
                counts["failed"] += 1
            elif t.status == "TERMINATED":
                reason = self.stop_reasons.get(t.trial_id, "")
                counts["finished" if reason == "completed" else "stopped"] += 1
        return counts

    def _export(self, trials=None) -> None:
        g = self._metrics()
        if trials is not None:
            g.trials(self._counts(trials))
        if self.best:
            vals = list(self.best.values())
            g.best(max(vals) if self.mode == "max" else min(vals))
        budget = self._budget()
        if budget is not None:
            s = budget.summary()
            g.spend(s["spend_usd"], s["gpu_hours"])

    def write_state(self, trials=None, force: bool = False) -> None:
        """``search_state.json`` in the experiment folder: a cheap progress file for people and scripts."""
        if not self.experiment_path or "://" in self.experiment_path:
            return
        now = time.time()
        if not force and now - self._last_state_write < 2.0:
            return
        self._last_state_write = now
        budget = self._budget()
        state = {
            "search": self.search, "parent_run_id": self.parent_run_id, "metric": self.metric,
            "trials": {tid: {"status": self.status.get(tid, "RUNNING"), "stop": self.stop_reasons.get(tid),
                             "epochs": int(self.last.get(tid, {}).get("epoch", 0) or 0), "best": self.best.get(tid),
                             "run_id": self.run_ids.get(tid)} for tid in self.run_ids},
            "finished": sum(1 for tid in self.run_ids if tid in self.stop_reasons),
            "spend": budget.summary() if budget else None,
            "updated": now,
        }
        path = Path(self.experiment_path) / "search_state.json"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(state, indent=1, default=str))
            os.replace(tmp, path)
        except OSError:
            log.debug("could not write %s", path, exc_info=True)

    # ------------------------------------------------------------------ Tune hooks
    def on_trial_start(self, iteration, trials, trial, **info):
        rid = self._run_id(trial)
        self._staging = getattr(getattr(trial, "storage", None), "experiment_driver_staging_path", None)
        self.status[trial.trial_id] = "RUNNING"
        gpus, cpus = trial_resources(trial)
        self.client.log_batch(rid, tags=[mlflow.entities.RunTag("resources.gpu", f"{gpus:g}"),
                                         mlflow.entities.RunTag("resources.cpu", f"{cpus:g}")])
        budget = self._budget()
        if budget is not None:
            budget.start(trial.trial_id, gpus, cpus)
        packer = self._packer()
        if packer is not None:
            est = packer.estimates.get(_signature(trial.config))
            if est is not None:
                self._metrics().trial_memory(trial.trial_id, est.bytes, est.method)
        self._export(trials)
        self.write_state(trials, force=True)

    def on_step(self, iteration, trials, **info):
        budget = self._budget()
        if budget is not None:
            budget.tick()
        now = time.time()
        if now - getattr(self, "_last_export", 0.0) > 5.0:
            self._last_export = now
            self._export(trials)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        rid = self._run_id(trial)
        step = int(result.get("epoch", result.get("training_iteration", 0)))
        self.last[trial.trial_id] = dict(result)
        value = result.get(self.metric)
        if finite(value) is not None and self._better(float(value), self.best.get(trial.trial_id)):
            self.best[trial.trial_id] = float(value)
        if finite(value) is not None:
            self._metrics().trial_metric(trial.trial_id, float(value))
        if "gpu_mem_peak_bytes" in result:
            self._metrics().trial_memory(trial.trial_id, float(result["gpu_mem_peak_bytes"]), "cuda-peak")
        if step <= self.logged_steps.get(trial.trial_id, 0):
            # A trial resumed from an earlier checkpoint re-runs epochs MLflow already has: keep the first.
            return
        self.logged_steps[trial.trial_id] = step
        ts = int(time.time() * 1000)
        metrics = []
        writer = self._writer(trial)
        for k, v in result.items():
            if k in NON_METRIC_KEYS or isinstance(v, bool) or not isinstance(v, (int, float)):
                continue
            if not math.isfinite(float(v)):
                continue
            metrics.append(mlflow.entities.Metric(k, float(v), ts, step))
            writer.add_scalar(k, float(v), step)
        if metrics:
            self.client.log_batch(rid, metrics=metrics)
        if "dropped_losses" in result:
            self.client.set_tag(rid, "dropped_losses", str(result["dropped_losses"])[:5000])
        ckpt = result.get("checkpoint_path")  # TorchTrainer trials report their checkpoint path
        if ckpt:
            self._log_grid(trial, rid, ckpt, step)
        self.write_state(trials)

    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
        # In-process trials hand their checkpoint to Tune directly.
        rid = self._run_id(trial)
        step = int(self.last.get(trial.trial_id, {}).get("epoch", 0))
        self._log_grid(trial, rid, checkpoint.path, step, checkpoint.filesystem)
        fs = checkpoint.filesystem if checkpoint.filesystem is not None else self.fs
        if self.keep_best and _is_local(fs):
            self._retire(Path(checkpoint.path).parent)

    def _retire(self, trial_dir: Path) -> None:
        """Retention: with an experiment folder, deletions wait until Tune's saved state drops them."""
        from platform.search.retention import DeferredDeletions, prune_trial

        if not self.experiment_path:
            prune_trial(trial_dir, self.metric, self.mode, self.keep_best, self.protected)
            return
        if getattr(self, "_deferred", None) is None:
            self._deferred = DeferredDeletions(self.experiment_path)
        self._deferred.queue(trial_dir, self.metric, self.mode, self.keep_best, self.protected)
        self._deferred.flush()

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

    def _finish(self, trial, status: str, reason: str, trials=None) -> None:
        from platform.secrets import scrub

        reason = scrub(reason)  # an exception's text may carry a URL with a password or a key
        rid = self._run_id(trial)
        self.stop_reasons[trial.trial_id] = reason
        self.status[trial.trial_id] = "ERROR" if status == "FAILED" else "TERMINATED"
        budget = self._budget()
        if budget is not None:
            budget.end(trial.trial_id)
            t = budget.trials.get(trial.trial_id)
            if t is not None:
                self.client.log_metric(rid, "spend_usd", t.usd)
        epochs = int(self.last.get(trial.trial_id, {}).get("epoch", 0) or 0)
        tags = {"stop_reason": reason, "rung": str(self.rung(epochs)), "epochs": str(epochs)}
        self.client.log_batch(rid, tags=[mlflow.entities.RunTag(k, v) for k, v in tags.items()])
        w = self.writers.pop(trial.trial_id, None)
        if w is not None:
            w.close()
            tb = self.tb_dir / trial.trial_id
            if tb.is_dir():
                self.client.log_artifacts(rid, str(tb), artifact_path="tensorboard")
        self.client.set_terminated(rid, status=status)
        self._export(trials)
        self.write_state(trials, force=True)

    def on_trial_complete(self, iteration, trials, trial, **info):
        epochs = int(self.last.get(trial.trial_id, {}).get("epoch", 0) or 0)
        budget = self._budget()
        if epochs >= self.epochs:
            reason = "completed"
        elif budget is not None and trial.trial_id in budget.stopped:
            reason = (f"stopped by budget at epoch {epochs} (rung {self.rung(epochs)}): "
                      f"{budget.exhausted_reason or 'budget spent'}")
        else:
            reason = f"early-stopped by scheduler at epoch {epochs} (rung {self.rung(epochs)})"
        self._finish(trial, "FINISHED", reason, trials)

    def on_trial_error(self, iteration, trials, trial, **info):
        text = ""
        err = getattr(trial, "error_file", None) or ""
        try:
            if err and Path(err).is_file():
                text = Path(err).read_text()
        except OSError:
            pass
        reason = classify_failure(text)
        if reason.startswith("failed (cuda-oom)"):
            packer = self._packer()
            if packer is not None:
                packer.record_oom(trial.config)
        self._finish(trial, "FAILED", reason, trials)

    def on_experiment_end(self, trials, **info):
        budget = self._budget()
        if budget is not None:
            budget.pause_all()
        self._export(trials)
        self.write_state(trials, force=True)


def finite(value: Any) -> float | None:
    """``value`` as a float when it is a finite number (never a bool, NaN or infinity), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def classify_failure(text: str) -> str:
    """A one-line reason from a trial's error text: non-finite loss, CUDA OOM or the exception."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    last = next((line for line in reversed(lines) if ("Error" in line or "Exception" in line) and ":" in line),
                lines[-1] if lines else "unknown error")
    if "NonFiniteLossError" in text:
        msg = next((line for line in reversed(lines) if "NonFiniteLossError" in line), last)
        return "failed (nan-loss): " + msg.split("NonFiniteLossError:", 1)[-1].strip()[:400]
    if "TrialOutOfMemoryError" in text or "OutOfMemoryError" in text or "CUDA out of memory" in text:
        return "failed (cuda-oom): CUDA out of memory; later trials of this model/crop/batch get a whole GPU"
    # "pkg.mod.SomeError: message" -> "SomeError: message"
    head, _, msg = last.partition(": ")
    name = head.split(".")[-1].split("(")[-1].rstrip(")")
    return f"failed (exception): {name}: {msg}"[:500] if msg else f"failed (exception): {last}"[:500]


def trial_resources(trial) -> tuple[float, float]:
    """(GPUs, CPUs) a trial holds: its placement, or every worker of a DDP (TorchTrainer) trial."""
    res = (trial.config or {}).get("resources", {})
    from platform.train.trainable import uses_torch_trainer

    if uses_torch_trainer(res):
        w = int(res.get("workers", 1))
        return w * float(res.get("gpus_per_worker", 0)), w * float(res.get("cpus_per_worker", 1)) + 0.1
    try:
        req = trial.placement_group_factory.required_resources
        return float(req.get("GPU", 0)), float(req.get("CPU", 0))
    except Exception:  # no placement group (e.g. a restored trial): the space's resources
        return float(res.get("gpus_per_worker", 0)), float(res.get("cpus_per_worker", 1))


def _signature(config: dict) -> str:
    from platform.search.packing import memory_signature

    return memory_signature(config)


def _is_local(fs) -> bool:
    if fs is None:
        return True
    return type(fs).__name__ == "LocalFileSystem"
