"""The learning-rate schedule, and a trial that keeps to its time budget.

A time-boxed search (``--quick``, ``--time-budget``) plans each trial's steps from a step time it
measured before Ray started. On a machine shared with other work a step can then run twice as
slow, and a trial that still runs every planned step overruns the budget; stopped from outside
(the search's 1.5x limit), it ends with its learning rate still high, which is the worst moment to
stop a cosine schedule. :class:`Pace` instead re-plans after every epoch from the trial's own
timing: when the planned steps no longer fit ``train.time_budget_s``, the remaining epochs take
fewer steps and the schedule's end moves to the last step that fits, so the trial still ends on a
decayed learning rate, on time. A trial that keeps to its plan is never changed (runs stay
reproducible on a quiet machine); the plan is only ever shortened, never lengthened.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

log = logging.getLogger(__name__)

TOLERANCE = 1.03  # behind plan by less than this: keep the plan (no re-planning from timing noise)


class Schedule:
    """``LambdaLR`` multiplier: linear warm-up, then cosine (or constant) down to ``min_lr``.

    A callable object rather than a closure so that ``LambdaLR.state_dict()`` saves its fields
    (plain numbers) with the checkpoint: a resumed trial keeps a shortened schedule.
    """

    def __init__(self, total_steps: int, warmup_steps: int, base_lr: float, min_lr: float, kind: str):
        self.total_steps = int(total_steps)
        self.warmup_steps = int(warmup_steps)
        self.floor = min(1.0, min_lr / base_lr) if base_lr > 0 else 0.0
        self.kind = kind
        self.epoch_cap = 0  # steps per epoch after a re-plan (0: all of them)

    def __call__(self, step: int) -> float:
        if self.warmup_steps and step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        if self.kind == "constant":
            return 1.0
        progress = min(1.0, (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps))
        return self.floor + (1.0 - self.floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


@dataclass
class Pace:
    """Re-plans a trial's remaining steps to fit ``budget_s`` (see the module docstring)."""

    budget_s: float
    schedule: Schedule
    steps_per_epoch: int
    epochs: int
    train_s: float = 0.0  # time spent in training steps so far (this run of the trial)
    steps: int = 0  # training steps taken so far (this run of the trial)
    val_s: float = 0.0  # time spent validating and checkpointing so far
    epochs_done: int = 0

    def epoch_steps(self) -> int:
        """Steps the next epoch takes."""
        cap = self.schedule.epoch_cap
        return min(self.steps_per_epoch, cap) if cap else self.steps_per_epoch

    def after_epoch(self, elapsed_s: float, train_s: float, other_s: float, steps: int, global_step: int,
                    epoch: int) -> bool:
        """Record one epoch (``epoch`` counted from 1, ``global_step`` the scheduler's step count,
        ``elapsed_s`` since this run of the trial started); re-plan if behind. False: stop now."""
        self.train_s, self.steps, self.val_s = self.train_s + train_s, self.steps + steps, self.val_s + other_s
        self.epochs_done += 1
        left_epochs = self.epochs - epoch
        if left_epochs <= 0 or self.steps == 0:
            return True
        per_step, per_epoch_other = self.train_s / self.steps, self.val_s / self.epochs_done
        affordable = (self.budget_s - elapsed_s - left_epochs * per_epoch_other) / per_step
        planned = left_epochs * self.epoch_steps()
        if affordable * TOLERANCE >= planned:
            return True
        if affordable < left_epochs:  # not even one step per remaining epoch
            log.warning("trial over its time budget (%.0f s) after epoch %d of %d: stopping here", self.budget_s,
                        epoch, self.epochs)
            return False
        cap = max(1, int(affordable // left_epochs))
        self.schedule.epoch_cap = cap
        self.schedule.total_steps = max(self.schedule.warmup_steps + 1, global_step + left_epochs * cap)
        log.info("behind the time plan (%.0f ms/step measured): the remaining %d epochs take %d steps each, "
                 "the learning-rate schedule now ends at step %d", 1000 * per_step, left_epochs, cap,
                 self.schedule.total_steps)
        return True
