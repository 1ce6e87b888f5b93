"""Progress of a running search in the driver's log: trials running and finished, the best so far, an ETA."""

from __future__ import annotations

import logging
import math
import time

log = logging.getLogger("platform.search")


class ProgressReporter:
    """Logs trials running/finished, the best so far and an ETA as results arrive."""

    def __init__(self, total: int, metric: str, mode: str, concurrency: int, min_interval_s: float = 10.0):
        from ray.tune import Callback

        self.total, self.metric, self.mode, self.concurrency = total, metric, mode, concurrency
        self.start = time.monotonic()
        self.finished: list[float] = []
        self.best: tuple[float, str] | None = None
        self.min_interval = min_interval_s
        self._last = 0.0
        outer = self

        class _CB(Callback):
            def on_trial_result(self, iteration, trials, trial, result, **info):
                outer.result(trials, trial, result)

            def on_trial_complete(self, iteration, trials, trial, **info):
                outer.done(trials, trial, "finished")

            def on_trial_error(self, iteration, trials, trial, **info):
                outer.done(trials, trial, "failed")

        self.callback = _CB()

    def result(self, trials, trial, result):
        v = result.get(self.metric)
        if isinstance(v, (int, float)) and math.isfinite(v) and (
                self.best is None or (v > self.best[0] if self.mode == "max" else v < self.best[0])):
            self.best = (float(v), trial.trial_id)
        now = time.monotonic()
        if now - self._last >= self.min_interval:
            self._last = now
            self.log(trials, f"trial {trial.trial_id} epoch {result.get('epoch')}: {self.metric}={v:.3f}"
                     if isinstance(v, (int, float)) else "")

    def done(self, trials, trial, how: str):
        self.finished.append(time.monotonic() - self.start)
        self.log(trials, f"trial {trial.trial_id} {how}")

    def log(self, trials, event: str = ""):
        running = sum(1 for t in trials if t.status == "RUNNING")
        done = len(self.finished)
        elapsed = time.monotonic() - self.start
        eta = ""
        if done:
            per_trial = elapsed / done
            eta = f", ETA ~{_fmt(per_trial * (self.total - done))}"
        best = f", best {self.metric} {self.best[0]:.3f} (trial {self.best[1]})" if self.best else ""
        log.info("[%s] trials: %d running, %d/%d finished%s, elapsed %s%s", event or "progress", running, done,
                 self.total, best, _fmt(elapsed), eta)


def _fmt(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 60}m{seconds % 60:02d}s"
