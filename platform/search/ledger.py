"""The driver's record of each trial of a search: status, epochs reached, best value, stop reason.

:class:`TrialLedger` is the first of the search's Tune callbacks (see
:func:`platform.search.driver.search_callbacks`): Tune calls callbacks in list order, so
by the time the MLflow tracking, the gauges and the state file see an event, the ledger has
recorded it. The stop reason of a trial says why it ended: ``completed``, stopped by the
budget or early-stopped by the scheduler (with the rung it reached), or failed (non-finite
loss, CUDA out of memory, an exception; scrubbed of credentials). The ledger's state is saved
with Tune's experiment state, so a ``--resume``d search keeps what it recorded.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ray.tune import Callback


def finite(value: Any) -> float | None:
    """``value`` as a float when it is a finite number (never a bool, NaN or infinity), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


class TrialLedger(Callback):
    """Status, epochs, best value of ``metric`` and stop reason of every trial, as Tune reports them."""

    def __init__(self, metric: str, mode: str, epochs: int, milestones: list[int] | None = None,
                 budget_key: str | None = None):
        self.metric, self.mode = metric, mode
        self.epochs = epochs  # a trial that reached them completed; one that did not was stopped
        self.milestones = list(milestones or [])
        self.budget_key = budget_key
        self.status: dict[str, str] = {}  # RUNNING | TERMINATED | ERROR
        self.last_epoch: dict[str, int] = {}
        self.best: dict[str, float] = {}
        self.stop_reasons: dict[str, str] = {}

    # ------------------------------------------------------------------ queries
    def epochs_of(self, trial_id: str) -> int:
        return self.last_epoch.get(trial_id, 0)

    def rung(self, epochs: int) -> int:
        """Number of rung milestones a trial has reached (0: stopped before the first)."""
        return sum(1 for m in self.milestones if epochs >= m)

    def best_overall(self) -> float | None:
        if not self.best:
            return None
        vals = list(self.best.values())
        return max(vals) if self.mode == "max" else min(vals)

    def counts(self, trials) -> dict[str, int]:
        """Tune's trials by state, a terminated one as finished (completed) or stopped."""
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

    def _better(self, a: float, b: float | None) -> bool:
        return b is None or (a > b if self.mode == "max" else a < b)

    # ------------------------------------------------------------------ Tune hooks
    def on_trial_start(self, iteration, trials, trial, **info):
        self.status[trial.trial_id] = "RUNNING"

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.last_epoch[trial.trial_id] = int(result.get("epoch", 0) or 0)
        value = finite(result.get(self.metric))
        if value is not None and self._better(value, self.best.get(trial.trial_id)):
            self.best[trial.trial_id] = value

    def on_trial_complete(self, iteration, trials, trial, **info):
        epochs = self.epochs_of(trial.trial_id)
        budget = self._budget()
        if epochs >= self.epochs:
            reason = "completed"
        elif budget is not None and trial.trial_id in budget.stopped:
            reason = (f"stopped by budget at epoch {epochs} (rung {self.rung(epochs)}): "
                      f"{budget.exhausted_reason or 'budget spent'}")
        else:
            reason = f"early-stopped by scheduler at epoch {epochs} (rung {self.rung(epochs)})"
        self._end(trial, "TERMINATED", reason)

    def on_trial_error(self, iteration, trials, trial, **info):
        from platform.search.failures import classify_failure

        self._end(trial, "ERROR", classify_failure(_error_text(trial)))

    def _end(self, trial, status: str, reason: str) -> None:
        from platform.secrets import scrub

        self.stop_reasons[trial.trial_id] = scrub(reason)  # an exception's text may carry a password or a key
        self.status[trial.trial_id] = status

    def _budget(self):
        if not self.budget_key:
            return None
        from platform.search.budget import tracker_for

        return tracker_for(self.budget_key)

    # ------------------------------------------------------------------ Tune state (--resume)
    def get_state(self) -> dict:
        return {"stop_reasons": dict(self.stop_reasons), "best": dict(self.best), "status": dict(self.status),
                "last_epoch": dict(self.last_epoch)}

    def set_state(self, state: dict) -> None:
        self.stop_reasons.update(state.get("stop_reasons") or {})
        self.best.update(state.get("best") or {})
        self.status.update(state.get("status") or {})
        for k, v in (state.get("last_epoch") or {}).items():
            self.last_epoch.setdefault(k, int(v))


def _error_text(trial) -> str:
    """The text of a failed trial's error file ('' when there is none)."""
    err = getattr(trial, "error_file", None) or ""
    try:
        if err and Path(err).is_file():
            return Path(err).read_text()
    except OSError:
        pass
    return ""
