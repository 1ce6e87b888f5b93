"""``--resume``: continue a crashed or interrupted search where it stopped.

What a resumed search keeps:

* finished trials keep their results (Tune does not run them again); running trials resume
  from their last checkpoint; errored trials stay failed (an out-of-memory or NaN trial is
  not retried with the same config);
* the searcher's state (Optuna's study with every told trial, the concurrency limiter's live
  set) is restored by ``Tuner.restore`` from the experiment folder;
* ASHA's rungs, which Tune does not save, are rebuilt by replaying each restored trial's
  ``result.json`` (:class:`ResumableASHA`), so promotions after the resume see the rung
  values recorded before it;
* the MLflow parent run is found again by its ``tune_experiment_path`` tag and reused; child
  runs are matched by their ``trial_id`` tag (and restored with the tracking callback's Tune state);
  epochs re-run after a checkpoint are not logged twice. A child run of a trial that Tune
  never saved in its experiment state (the driver died between creating it and the next
  experiment checkpoint) is deleted: Tune launches a fresh trial in its place, so every trial
  is accounted for exactly once.

``Tuner.restore`` restores the callbacks, stopper, searcher and scheduler pickled when the
search started; :func:`restore_tuner` puts the driver's fresh, live ones in their place
(Ray exposes no public setter for this, hence the guarded private attributes).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from ray.tune.schedulers import ASHAScheduler

from platform.errors import ConfigError

log = logging.getLogger(__name__)

EXPERIMENT_TAG = "tune_experiment_path"


def find_experiment(storage: str, name: str, given: str | None = None) -> str:
    """The experiment folder to resume: ``given``, else the newest ``<name>-*`` under ``storage``."""
    from ray.tune import Tuner

    if given:
        path = given if "://" in given else str(Path(given).expanduser().resolve())
        if not Tuner.can_restore(path):
            raise ConfigError(f"--resume {given}: no Tune experiment to restore there (no tuner.pkl). Give the "
                              "experiment folder printed when the search started.")
        return path
    if "://" in storage:
        raise ConfigError("--resume with remote storage needs the experiment URI: --resume s3://BUCKET/PREFIX/NAME.")
    root = Path(storage)
    candidates = sorted((p for p in root.glob(f"{name}-*") if (p / "tuner.pkl").is_file() and "-train-" not in p.name),
                        key=lambda p: p.stat().st_mtime, reverse=True)
    if not candidates:
        raise ConfigError(f"--resume: no search named {name!r} to resume under {root}. Give --storage (where the "
                          "search wrote its results) or --resume PATH.")
    return str(candidates[0].resolve())


def find_parent_run(client, experiment_id: str, experiment_path: str):
    runs = client.search_runs([experiment_id], filter_string=f"tags.{EXPERIMENT_TAG} = '{experiment_path}'",
                              max_results=5)
    if not runs:
        return None
    if len(runs) > 1:
        log.warning("several MLflow parent runs carry %s; reusing the oldest", experiment_path)
    return min(runs, key=lambda r: r.info.start_time)


def child_runs(client, experiment_id: str, parent_id: str) -> list:
    return client.search_runs([experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent_id}'",
                              max_results=10000)


def saved_trial_ids(experiment_path: str) -> set[str] | None:
    """Trial ids in Tune's newest experiment state file (None if unreadable)."""
    if "://" not in experiment_path:
        from platform.search import statefiles

        statefiles.repair(experiment_path)
    files = sorted(Path(experiment_path).glob("experiment_state-*.json"), key=lambda p: p.name)
    if not files:
        return set() if Path(experiment_path).is_dir() else None  # Tune starts every trial afresh
    try:
        state = json.loads(files[-1].read_text())
        ids = set()
        for entry in state.get("trial_data", []):
            trial_json = entry[0] if isinstance(entry, list) else entry
            data = json.loads(trial_json) if isinstance(trial_json, str) else trial_json
            if "trial_id" in data:
                ids.add(str(data["trial_id"]))
        return ids
    except (OSError, ValueError, TypeError, KeyError, IndexError):
        return None


def reconcile_children(client, experiment_id: str, parent_id: str, experiment_path: str, metric: str = "val_psnr"
                       ) -> tuple[dict[str, str], dict[str, int]]:
    """Child runs to continue ({trial_id: run_id}), their last logged epoch, orphans deleted."""
    known = saved_trial_ids(experiment_path)
    run_ids: dict[str, str] = {}
    steps: dict[str, int] = {}
    for run in child_runs(client, experiment_id, parent_id):
        tid = run.data.tags.get("trial_id")
        if tid is None:
            continue
        if known is not None and tid not in known:
            log.info("deleting MLflow run %s of trial %s, which Tune never saved before the crash (Tune starts a "
                     "new trial in its place)", run.info.run_id, tid)
            client.delete_run(run.info.run_id)
            continue
        run_ids[tid] = run.info.run_id
        history = client.get_metric_history(run.info.run_id, metric)
        if history:
            steps[tid] = max(int(m.step) for m in history)
    return run_ids, steps


def tuner_saved(path: str) -> bool:
    """Whether Tune's ``tuner.pkl`` in ``path`` is complete. Tune writes it, not atomically, when the
    search starts: a driver killed at that moment leaves it empty or cut short, before any trial
    ran, and the resume then starts the trials afresh in the same folder. Checked without being
    loaded (:func:`platform.search.statefiles.intact`); remote paths are trusted."""
    if "://" in path:
        return True
    from platform.search.statefiles import intact

    return intact(Path(path) / "tuner.pkl")


def restore_tuner(path: str, trainable, *, callbacks: list, stopper, search_alg, scheduler):
    """``Tuner.restore`` with the driver's live callbacks, stopper, searcher and scheduler."""
    from ray import tune

    from platform.search.failures import failure_config

    if "://" not in path:
        from platform.search import statefiles

        statefiles.repair(path)
    tuner = tune.Tuner.restore(path, trainable=trainable, resume_unfinished=True, resume_errored=False,
                               restart_errored=False)
    internal = getattr(tuner, "_local_tuner", None)
    if internal is None or not hasattr(internal, "_run_config") or not hasattr(internal, "_tune_config"):
        raise RuntimeError("this Ray version's Tuner has no _local_tuner/_run_config; --resume cannot re-attach "
                           "the tracking callbacks (see platform/search/resume.py)")
    internal._run_config.callbacks = callbacks
    internal._run_config.stop = stopper
    internal._run_config.failure_config = failure_config()  # also for searches saved with max_failures=0
    internal._tune_config.search_alg = search_alg
    internal._tune_config.scheduler = scheduler
    if "://" not in path and not any(Path(path).glob("experiment_state-*.json")) and hasattr(internal, "_is_restored"):
        # Killed before Tune saved any state: nothing to restore (a restore would "restart" with a
        # half-restored searcher); run the search afresh in the same experiment folder.
        log.info("no saved experiment state in %s: its trials start afresh", path)
        internal._is_restored = False
    return tuner


class ResumableASHA(ASHAScheduler):
    """ASHA whose rungs survive a ``--resume``: restored trials replay their recorded results."""

    def on_trial_add(self, tune_controller, trial):
        super().on_trial_add(tune_controller, trial)
        try:
            local = trial.local_path  # raises for a brand-new trial that has no folder yet
        except RuntimeError:
            return
        path = Path(local) / "result.json" if local else None
        if path is None or not path.is_file():
            return
        bracket = self._trial_info[trial.trial_id]
        replayed = 0
        for line in path.read_text().splitlines():
            try:
                result = json.loads(line)
            except ValueError:
                continue
            if self._time_attr in result and self._metric in result and result[self._metric] is not None:
                bracket.on_result(trial, result[self._time_attr], self._metric_op * result[self._metric])
                replayed += 1
        if replayed:
            log.debug("ASHA: replayed %d results of restored trial %s", replayed, trial.trial_id)
