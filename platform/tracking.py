"""MLflow and TensorBoard tracking of a search, from the driver.

All MLflow writes happen in the driver process through a Ray Tune callback: one parent run
per search, one nested run per trial (params, per-epoch metrics including every loss
component, stop reason, rung, validation image grids, TensorBoard event files). A single
writer keeps the embedded SQLite store free of lock contention, and workers never need the
tracking server's address or credentials.

The callback only logs: what each trial did (its epochs and stop reason) comes from the
search's :class:`~platform.search.ledger.TrialLedger`, and the search's bookkeeping (spend,
checkpoint retention, Prometheus gauges, ``search_state.json``) is done by the callbacks of
:mod:`platform.search.bookkeeping`. Its state (the MLflow run id of each trial and the last
epoch logged) is saved with Tune's experiment state, so a ``--resume``d search continues the
same child runs.
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
    """Mirror every trial of a Tune search into a nested MLflow run and TensorBoard.

    What each trial did (epochs, stop reason) comes from the search's
    :class:`~platform.search.ledger.TrialLedger`, which precedes this callback in the list; the
    spend of a trial, when ``budget_key`` names a budget tracker, is logged as its ``spend_usd``.
    ``existing`` and ``logged_steps`` (from :func:`platform.search.resume.reconcile_children`)
    continue the runs of a ``--resume``d search without logging an epoch twice."""

    def __init__(self, client: MlflowClient, experiment_id: str, parent_run_id: str, tensorboard_dir: Path,
                 ledger, *, existing: dict[str, str] | None = None, logged_steps: dict[str, int] | None = None,
                 budget_key: str | None = None):
        self.client = client
        self.uri = tracking_uri()
        self.experiment_id, self.parent_run_id = experiment_id, parent_run_id
        self.tb_dir = Path(tensorboard_dir)
        self.ledger = ledger
        self.run_ids: dict[str, str] = dict(existing or {})
        self.logged_steps: dict[str, int] = dict(logged_steps or {})
        self.budget_key = budget_key
        self.writers: dict[str, Any] = {}

    # ------------------------------------------------------------------ pickling / Tune state
    def __getstate__(self):
        # Tune pickles callbacks into tuner.pkl; the client and writers are rebuilt lazily. The URI
        # is not saved either (a database URI may carry a password): it comes from the environment
        # again when the callback is unpickled.
        return {**self.__dict__, "client": None, "writers": {}, "uri": None}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self.uri = self.uri or tracking_uri()
        if self.client is None:
            mlflow.set_tracking_uri(self.uri)
            self.client = ScrubbingClient(self.uri)

    def get_state(self) -> dict:
        return {"run_ids": dict(self.run_ids), "logged_steps": dict(self.logged_steps)}

    def set_state(self, state: dict) -> None:
        self.run_ids.update(state.get("run_ids") or {})
        for k, v in (state.get("logged_steps") or {}).items():
            self.logged_steps[k] = max(int(v), self.logged_steps.get(k, 0))

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
        from platform.search.budget import trial_resources

        rid = self._run_id(trial)
        gpus, cpus = trial_resources(trial)
        self.client.log_batch(rid, tags=[mlflow.entities.RunTag("resources.gpu", f"{gpus:g}"),
                                         mlflow.entities.RunTag("resources.cpu", f"{cpus:g}")])

    def on_trial_result(self, iteration, trials, trial, result, **info):
        rid = self._run_id(trial)
        step = int(result.get("epoch", result.get("training_iteration", 0)))
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

    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
        # In-process trials hand their checkpoint to Tune directly.
        rid = self._run_id(trial)
        self._log_grid(trial, rid, checkpoint.path, self.ledger.epochs_of(trial.trial_id), checkpoint.filesystem)

    def _log_grid(self, trial, rid: str, path: str, step: int, filesystem=None) -> None:
        data = read_checkpoint_file(path, "val_grid.png", filesystem)
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

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._finish(trial, "FINISHED")

    def on_trial_error(self, iteration, trials, trial, **info):
        self._finish(trial, "FAILED")

    def _finish(self, trial, status: str) -> None:
        """End a trial's run: its spend, stop reason, rung and epochs, and its TensorBoard files."""
        rid = self._run_id(trial)
        spend = self._spend(trial.trial_id)
        if spend is not None:
            self.client.log_metric(rid, "spend_usd", spend)
        epochs = self.ledger.epochs_of(trial.trial_id)
        tags = {"stop_reason": self.ledger.stop_reasons.get(trial.trial_id, ""),
                "rung": str(self.ledger.rung(epochs)), "epochs": str(epochs)}
        self.client.log_batch(rid, tags=[mlflow.entities.RunTag(k, v) for k, v in tags.items()])
        w = self.writers.pop(trial.trial_id, None)
        if w is not None:
            w.close()
            tb = self.tb_dir / trial.trial_id
            if tb.is_dir():
                self.client.log_artifacts(rid, str(tb), artifact_path="tensorboard")
        self.client.set_terminated(rid, status=status)

    def _spend(self, trial_id: str) -> float | None:
        if not self.budget_key:
            return None
        from platform.search.budget import tracker_for

        budget = tracker_for(self.budget_key)
        t = budget.trials.get(trial_id) if budget is not None else None
        return t.usd if t is not None else None
