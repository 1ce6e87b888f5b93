"""Money, time and trial budgets of a search.

``search.budget: {usd: 5, price_per_gpu_hour: 1.006, price_per_cpu_hour: 0.05, time_s: 3600,
max_trials: 40}``. The spend is *measured*: each running trial accrues
``(GPUs x price_per_gpu_hour + CPUs x price_per_cpu_hour) x wall hours`` from the moment Tune
starts it until it ends, with the GPUs and CPUs it really holds (its packed GPU fraction, or
every worker of a DDP trial).

* :class:`BudgetLimiter` wraps the searcher: no new trial is launched once the spend so far
  plus the expected cost of one more trial (the mean cost of the trials finished so far)
  would pass ``usd`` or once ``time_s`` has passed; Tune then finishes the search when the
  running trials end.
* :class:`BudgetStopper` stops the running trials once the budget is spent, at the end of
  the epoch that crossed it (its checkpoint and result are kept). Waiting for the next ASHA
  rung would keep spending for up to ``grace_period x reduction_factor**k`` more epochs;
  the trial's rung (how far it got) is recorded with its stop reason instead.

The driver, the searcher wrapper, the stopper and the budget callback
(:class:`platform.search.bookkeeping.BudgetCallback`, which starts and stops each trial's clock)
all live in the driver process but Tune pickles the searcher and stopper (``tuner.pkl``,
searcher state for ``--resume``); they find the live :class:`BudgetTracker` through a
module-level registry keyed by the experiment, and its state travels in the budget callback's
Tune state.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any

from ray.tune.search import Searcher
from ray.tune.stopper import Stopper

log = logging.getLogger(__name__)

_TRACKERS: dict[str, BudgetTracker] = {}


def tracker_for(key: str) -> BudgetTracker | None:
    return _TRACKERS.get(key)


def rung_milestones(grace_period: int, reduction_factor: float, max_t: int) -> list[int]:
    """ASHA's rung milestones (``grace * rf**k`` below ``max_t``) plus ``max_t`` itself."""
    if grace_period >= max_t:
        return [int(max_t)]
    n = int(math.log(max_t / grace_period) / math.log(reduction_factor) + 1)
    out = sorted({int(grace_period * reduction_factor**k) for k in range(n)} | {int(max_t)})
    return [m for m in out if m <= max_t]


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


@dataclass
class _TrialSpend:
    gpus: float
    cpus: float
    rate: float  # USD per hour
    since: float | None  # wall time of the last accrual while running, None when not running
    usd: float = 0.0
    gpu_h: float = 0.0
    cpu_h: float = 0.0


@dataclass
class BudgetTracker:
    """Measured spend, elapsed time and launch decisions of one search."""

    key: str
    usd: float | None = None
    price_per_gpu_hour: float = 0.0
    price_per_cpu_hour: float = 0.0
    time_s: float | None = None
    milestones: list[int] = field(default_factory=list)
    time_attr: str = "training_iteration"
    trials: dict[str, _TrialSpend] = field(default_factory=dict)
    elapsed_before: float = 0.0  # seconds of earlier sessions of this search (before a --resume)
    started: float = field(default_factory=time.time)
    exhausted_reason: str | None = None
    stopped: dict[str, int] = field(default_factory=dict)  # trial_id -> epoch it was stopped at by the budget
    _said_no: bool = False

    def __post_init__(self):
        _TRACKERS[self.key] = self

    @classmethod
    def from_spec(cls, key: str, spec) -> BudgetTracker:
        b, sch = spec["search"]["budget"], spec["search"]["scheduler"]
        ms = rung_milestones(sch["grace_period"], sch["reduction_factor"], sch["max_t"]) \
            if sch["name"] in ("asha", "hyperband", "bohb") else []
        return cls(key, b["usd"], float(b["price_per_gpu_hour"]), float(b["price_per_cpu_hour"]), b["time_s"],
                   ms, sch["time_attr"])

    # ------------------------------------------------------------------ accounting
    def start(self, trial_id: str, gpus: float, cpus: float) -> None:
        rate = gpus * self.price_per_gpu_hour + cpus * self.price_per_cpu_hour
        t = self.trials.get(trial_id)
        if t is None:
            self.trials[trial_id] = _TrialSpend(gpus, cpus, rate, time.time())
        else:  # a resumed trial keeps what it spent before
            t.gpus, t.cpus, t.rate, t.since = gpus, cpus, rate, time.time()

    def tick(self, now: float | None = None) -> None:
        now = time.time() if now is None else now
        for t in self.trials.values():
            if t.since is not None:
                hours = max(0.0, now - t.since) / 3600.0
                t.usd += hours * t.rate
                t.gpu_h += hours * t.gpus
                t.cpu_h += hours * t.cpus
                t.since = now

    def end(self, trial_id: str) -> None:
        self.tick()
        t = self.trials.get(trial_id)
        if t is not None:
            t.since = None

    def pause_all(self) -> None:
        """The driver stops (end of search, or a crash being resumed): stop the clocks."""
        self.tick()
        for t in self.trials.values():
            t.since = None

    @property
    def spent_usd(self) -> float:
        return sum(t.usd for t in self.trials.values())

    @property
    def gpu_hours(self) -> float:
        return sum(t.gpu_h for t in self.trials.values())

    @property
    def cpu_hours(self) -> float:
        return sum(t.cpu_h for t in self.trials.values())

    def elapsed(self) -> float:
        return self.elapsed_before + (time.time() - self.started)

    def summary(self) -> dict[str, float]:
        self.tick()
        return {"spend_usd": self.spent_usd, "gpu_hours": self.gpu_hours, "cpu_hours": self.cpu_hours,
                "search_time_s": self.elapsed()}

    # ------------------------------------------------------------------ decisions
    def exhausted(self) -> str | None:
        """Why the budget is spent (a sentence), or None."""
        self.tick()
        if self.usd is not None and self.spent_usd >= self.usd:
            self.exhausted_reason = f"dollar budget spent (${self.spent_usd:.4f} of ${self.usd:g})"
        elif self.time_s is not None and self.elapsed() >= self.time_s:
            self.exhausted_reason = f"time budget spent ({self.elapsed():.0f} s of {self.time_s:g} s)"
        return self.exhausted_reason

    def may_launch(self) -> tuple[bool, str]:
        """Whether one more trial fits: spend + expected cost of a trial <= usd, and time left."""
        why = self.exhausted()
        if why:
            return False, why
        if self.usd is not None:
            done = [t.usd for t in self.trials.values() if t.since is None]
            expected = sum(done) / len(done) if done else 0.0
            if self.spent_usd + expected > self.usd:
                return False, (f"one more trial (~${expected:.4f}) would pass the dollar budget "
                               f"(${self.spent_usd:.4f} spent of ${self.usd:g})")
        return True, ""

    def should_stop(self, trial_id: str, result: dict[str, Any]) -> bool:
        """Stop a running trial at the end of the epoch (this result) once the budget is spent."""
        if self.exhausted() is None:
            return False
        it = int(result.get(self.time_attr, result.get("training_iteration", 0)) or 0)
        self.stopped[trial_id] = int(result.get("epoch", it))
        return True

    # ------------------------------------------------------------------ persistence
    def get_state(self) -> dict:
        self.tick()
        return {"trials": {k: vars(v).copy() for k, v in self.trials.items()},
                "elapsed_before": self.elapsed(), "stopped": dict(self.stopped),
                "exhausted_reason": self.exhausted_reason}

    def set_state(self, state: dict) -> None:
        self.trials = {k: _TrialSpend(**{**v, "since": None}) for k, v in (state.get("trials") or {}).items()}
        self.elapsed_before = float(state.get("elapsed_before", 0.0))
        self.started = time.time()
        self.stopped = dict(state.get("stopped") or {})
        self.exhausted_reason = None  # a resumed search may have been given a larger budget


class BudgetLimiter(Searcher):
    """Searcher wrapper: ``FINISHED`` once the budget says no further trial fits."""

    def __init__(self, searcher: Searcher, key: str):
        self.searcher = searcher
        self.key = key
        super().__init__(metric=searcher.metric, mode=searcher.mode)

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        from ray.tune.search.util import _set_search_properties_backwards_compatible

        return _set_search_properties_backwards_compatible(self.searcher.set_search_properties, metric, mode,
                                                           config, **spec)

    def set_max_concurrency(self, max_concurrent: int) -> bool:
        return self.searcher.set_max_concurrency(max_concurrent)

    def suggest(self, trial_id: str):
        tracker = tracker_for(self.key)
        if tracker is not None:
            ok, why = tracker.may_launch()
            if not ok:
                if not tracker._said_no:
                    tracker._said_no = True
                    log.warning("budget: no new trials: %s; running trials stop at the end of their epoch", why)
                return Searcher.FINISHED
        return self.searcher.suggest(trial_id)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        self.searcher.on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        self.searcher.on_trial_complete(trial_id, result=result, error=error)

    def on_pause(self, trial_id: str):
        self.searcher.on_pause(trial_id)

    def on_unpause(self, trial_id: str):
        self.searcher.on_unpause(trial_id)

    def add_evaluated_point(self, *args, **kwargs):
        return self.searcher.add_evaluated_point(*args, **kwargs)

    def get_state(self) -> dict:
        return {"key": self.key}

    def set_state(self, state: dict) -> None:
        pass  # the tracker's state travels with the budget callback

    def save(self, checkpoint_path: str):
        self.searcher.save(checkpoint_path)

    def restore(self, checkpoint_path: str):
        self.searcher.restore(checkpoint_path)


class BudgetStopper(Stopper):
    """Stops running trials at the end of their current epoch once the budget is spent."""

    def __init__(self, key: str, whole_search: bool = False):
        self.key = key
        # PBT has no searcher for BudgetLimiter to wrap: its population is launched up front,
        # so once the budget is spent the whole experiment stops (there are no rungs to wait for).
        self.whole_search = whole_search

    def __call__(self, trial_id: str, result: dict) -> bool:
        tracker = tracker_for(self.key)
        return bool(tracker and tracker.should_stop(trial_id, result))

    def stop_all(self) -> bool:
        tracker = tracker_for(self.key)
        return bool(self.whole_search and tracker and tracker.exhausted())
