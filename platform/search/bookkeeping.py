"""The driver-side bookkeeping of a search, as small Ray Tune callbacks (MLflow is not theirs).

* :class:`BudgetCallback` runs each trial's spend clock (:mod:`platform.search.budget`) and
  saves the spend with Tune's experiment state;
* :class:`PackingCallback` gives the config of a trial that ran out of GPU memory a whole GPU
  from then on (:mod:`platform.search.packing`);
* :class:`GaugesCallback` keeps the live Prometheus gauges up to date
  (:mod:`platform.search.metrics`);
* :class:`StateFileCallback` writes ``search_state.json`` in the experiment folder and keeps
  the last consistent copy of Tune's saved state (:mod:`platform.search.statefiles`);
* :class:`RetentionCallback` prunes each trial's checkpoints to the best N and the latest
  (:mod:`platform.search.retention`).

They read what each trial did from the :class:`~platform.search.ledger.TrialLedger`, which
comes before them in the callback list (Tune calls callbacks in list order). Live objects
shared with the searcher and stopper (the budget tracker, the GPU packer) are found by the
experiment's key, as Tune pickles every callback into ``tuner.pkl``.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

from ray.tune import Callback

from platform.search.ledger import TrialLedger

log = logging.getLogger(__name__)


class BudgetCallback(Callback):
    """Starts, ticks and stops the spend clock of each trial; the spend travels in Tune's state."""

    def __init__(self, budget_key: str):
        self.budget_key = budget_key

    def tracker(self):
        from platform.search.budget import tracker_for

        return tracker_for(self.budget_key)

    def on_trial_start(self, iteration, trials, trial, **info):
        from platform.search.budget import trial_resources

        budget = self.tracker()
        if budget is not None:
            budget.start(trial.trial_id, *trial_resources(trial))

    def on_step_end(self, iteration, trials, **info):
        budget = self.tracker()
        if budget is not None:
            budget.tick()

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._end(trial)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._end(trial)

    def _end(self, trial) -> None:
        budget = self.tracker()
        if budget is not None:
            budget.end(trial.trial_id)

    def on_experiment_end(self, trials, **info):
        budget = self.tracker()
        if budget is not None:
            budget.pause_all()

    def get_state(self) -> dict:
        budget = self.tracker()
        return {"budget": budget.get_state() if budget else None}

    def set_state(self, state: dict) -> None:
        budget = self.tracker()
        if budget is not None and state.get("budget"):
            budget.set_state(state["budget"])


class PackingCallback(Callback):
    """A trial that ran out of CUDA memory: later trials of its model/crop/batch get a whole GPU."""

    def __init__(self, packer_key: str, ledger: TrialLedger):
        self.packer_key, self.ledger = packer_key, ledger

    def on_trial_error(self, iteration, trials, trial, **info):
        from platform.search.packing import packer_for

        packer = packer_for(self.packer_key)
        if packer is not None and self.ledger.stop_reasons.get(trial.trial_id, "").startswith("failed (cuda-oom)"):
            packer.record_oom(trial.config)


class GaugesCallback(Callback):
    """The search's Prometheus gauges: trials by state, best value, spend, per-trial memory and metric."""

    def __init__(self, label: str, ledger: TrialLedger, budget_key: str | None = None,
                 packer_key: str | None = None):
        self.label, self.ledger = label, ledger
        self.budget_key, self.packer_key = budget_key, packer_key
        self.gauges = None
        self._last_export = 0.0

    def __getstate__(self):
        return {**self.__dict__, "gauges": None}  # rebuilt lazily where the callback is unpickled

    def _metrics(self):
        if self.gauges is None:
            from platform.search.metrics import SearchMetrics

            self.gauges = SearchMetrics(self.label, self.ledger.metric)
        return self.gauges

    def export(self, trials=None) -> None:
        g = self._metrics()
        if trials is not None:
            g.trials(self.ledger.counts(trials))
        best = self.ledger.best_overall()
        if best is not None:
            g.best(best)
        budget = _tracker(self.budget_key)
        if budget is not None:
            s = budget.summary()
            g.spend(s["spend_usd"], s["gpu_hours"])

    def on_trial_start(self, iteration, trials, trial, **info):
        if self.packer_key:
            from platform.search.packing import memory_signature, packer_for

            packer = packer_for(self.packer_key)
            est = packer.estimates.get(memory_signature(trial.config)) if packer is not None else None
            if est is not None:
                self._metrics().trial_memory(trial.trial_id, est.bytes, est.method)
        self.export(trials)

    def on_step_end(self, iteration, trials, **info):
        now = time.time()
        if now - self._last_export > 5.0:
            self._last_export = now
            self.export(trials)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        from platform.search.ledger import finite

        value = finite(result.get(self.ledger.metric))
        if value is not None:
            self._metrics().trial_metric(trial.trial_id, value)
        if "gpu_mem_peak_bytes" in result:
            self._metrics().trial_memory(trial.trial_id, float(result["gpu_mem_peak_bytes"]), "cuda-peak")

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.export(trials)

    def on_trial_error(self, iteration, trials, trial, **info):
        self.export(trials)

    def on_experiment_end(self, trials, **info):
        self.export(trials)


class StateFileCallback(Callback):
    """``search_state.json`` (progress for people and scripts) and the ``.state.good`` copy of
    Tune's saved state, in a local experiment folder."""

    def __init__(self, experiment_path: str, search: str, parent_run_id: str, ledger: TrialLedger,
                 run_ids: dict[str, str], budget_key: str | None = None):
        self.experiment_path, self.search, self.parent_run_id = experiment_path, search, parent_run_id
        self.ledger = ledger
        self.run_ids = run_ids  # the tracking callback's live {trial_id: MLflow run id}
        self.budget_key = budget_key
        self._staging = None  # Tune's driver staging folder of the experiment state
        self._last_write = 0.0

    def __getstate__(self):
        return {**self.__dict__, "_staging": None}

    def get_state(self) -> None:
        # Tune calls this right after writing its experiment state to the driver's staging folder:
        # keep a consistent copy of that state for --resume.
        if self._staging:
            from platform.search import statefiles

            statefiles.snapshot(self._staging, self.experiment_path)

    def write(self, force: bool = False) -> None:
        """Write ``search_state.json`` (at most every 2 s unless ``force``)."""
        now = time.time()
        if not force and now - self._last_write < 2.0:
            return
        self._last_write = now
        budget = _tracker(self.budget_key)
        path = Path(self.experiment_path) / "search_state.json"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self._state(now, budget), indent=1, default=str))
            os.replace(tmp, path)
        except OSError:
            log.debug("could not write %s", path, exc_info=True)

    def _state(self, now: float, budget) -> dict:
        led = self.ledger
        return {
            "search": self.search, "parent_run_id": self.parent_run_id, "metric": led.metric,
            "trials": {tid: {"status": led.status.get(tid, "RUNNING"), "stop": led.stop_reasons.get(tid),
                             "epochs": led.epochs_of(tid), "best": led.best.get(tid), "run_id": self.run_ids.get(tid)}
                       for tid in self.run_ids},
            "finished": sum(1 for tid in self.run_ids if tid in led.stop_reasons),
            "spend": budget.summary() if budget else None,
            "updated": now,
        }

    def on_trial_start(self, iteration, trials, trial, **info):
        self._staging = getattr(getattr(trial, "storage", None), "experiment_driver_staging_path", None)
        self.write(force=True)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.write()

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.write(force=True)

    def on_trial_error(self, iteration, trials, trial, **info):
        self.write(force=True)

    def on_experiment_end(self, trials, **info):
        self.write(force=True)


class RetentionCallback(Callback):
    """After each checkpoint of a trial on local storage, keep its best ``keep_best`` and its latest;
    with an experiment folder, a deletion waits until Tune's saved state no longer needs it."""

    def __init__(self, metric: str, mode: str, keep_best: int, protected: set[str] | None = None,
                 experiment_path: str | None = None):
        self.metric, self.mode, self.keep_best = metric, mode, keep_best
        self.protected = set(protected or ())  # checkpoints registered model versions come from
        self.experiment_path = experiment_path
        self._deferred = None

    def __getstate__(self):
        return {**self.__dict__, "_deferred": None}

    def get_state(self) -> None:
        if self._deferred is not None:
            self._deferred.flush()  # Tune's state on storage may have moved past queued checkpoints

    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
        fs = checkpoint.filesystem
        if self.keep_best and (fs is None or type(fs).__name__ == "LocalFileSystem"):
            self.retire(Path(checkpoint.path).parent)

    def retire(self, trial_dir: Path) -> None:
        from platform.search.retention import DeferredDeletions, prune_trial

        if not self.experiment_path:
            prune_trial(trial_dir, self.metric, self.mode, self.keep_best, self.protected)
            return
        if self._deferred is None:
            self._deferred = DeferredDeletions(self.experiment_path)
        self._deferred.queue(trial_dir, self.metric, self.mode, self.keep_best, self.protected)
        self._deferred.flush()


def _tracker(budget_key: str | None):
    if not budget_key:
        return None
    from platform.search.budget import tracker_for

    return tracker_for(budget_key)
