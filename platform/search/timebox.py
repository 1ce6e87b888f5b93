"""A wall-clock budget for a whole search: trials, epochs and crops sized from a measured step.

``--time-budget 10m`` (or ``search.timebox.seconds``; ``--quick`` sets about 3 minutes) asks for
the best model a fixed amount of time can buy. Before Ray starts, the driver builds the trial's
model in this process and times a few real training steps (the common trainer's ``train_step``,
on the device and with the threads a trial will have) at the smallest and the largest candidate
crop, and one validation pass. From those figures :func:`plan` picks

* the number of trials: as many as run at once (``search.max_concurrent``, bounded by the cores
  or GPUs a trial needs) times ``timebox.waves``: few, long trials learn more than many short ones;
* the crop: the largest candidate at which a trial still makes ``timebox.min_steps`` steps
  (step time is modelled as affine in the crop's pixel count between the two measurements);
* epochs and crops per epoch: validation takes about a tenth of a trial, the rest is steps.

Whatever the user fixed (``--set``, ``--max-trials``, a searched crop) is left alone. A per-trial
time limit of 1.5x the plan stops a trial that the machine's load slows far beyond the plan.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import re
import tempfile
import time
from dataclasses import asdict, dataclass

import torch

from platform.config import SearchSpec, is_search_node
from platform.errors import ConfigError

log = logging.getLogger(__name__)

CROPS = (64, 96, 128, 160, 192, 256, 320, 384, 512)
VALIDATION_SHARE = 0.1  # of a trial's time spent validating (sets the number of epochs)
SLACK = 1.5  # a trial is stopped at this multiple of its planned time
MIN_SHARE = 0.2  # of the budget the trials always get, however long the preparation took


@dataclass
class Plan:
    seconds: float
    trial_seconds: float
    trials: int
    concurrency: int
    crop: int
    batch: int
    step_s: float
    val_s: float
    epochs: int
    crops_per_epoch: int

    @property
    def steps(self) -> int:
        return self.epochs * self.crops_per_epoch // self.batch

    def describe(self) -> str:
        return (f"time budget {self.seconds:.0f} s: {self.trials} trial(s), {self.concurrency} at a time, "
                f"{self.trial_seconds:.0f} s each: crop {self.crop}, batch {self.batch}, {self.epochs} epochs x "
                f"{self.crops_per_epoch} crops = {self.steps} steps (measured {1000 * self.step_s:.0f} ms/step, "
                f"{self.val_s:.1f} s/validation)")


def parse_duration(text: str | float) -> float:
    """``90``, ``90s``, ``10m``, ``1.5h`` -> seconds."""
    if isinstance(text, (int, float)):
        seconds = float(text)
    else:
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([smh]?)\s*", str(text))
        if not m:
            raise ConfigError(f"--time-budget {text!r} is not a duration; give e.g. 180, 90s, 10m or 1.5h.")
        seconds = float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[m.group(2)]
    if not math.isfinite(seconds) or seconds < 30:
        raise ConfigError(f"--time-budget {text!r} is {seconds:g} s; give at least 30 s (a search needs time to "
                          "start Ray, fit the floors and train).")
    return seconds


# --------------------------------------------------------------------------- measuring
def candidate_configs(spec: SearchSpec, limit: int = 6) -> list[dict]:
    """Trial configs covering the model choices of the space (up to ``limit``); other searched
    values take their first option or lower bound (they barely change a step's cost)."""
    from platform.search.conditional import SpaceModel

    space = SpaceModel.from_spec(spec)
    model_params = [p for p in space.params.values() if p.path.startswith("model.") and p.kind in ("choice", "grid")]
    combos = list(itertools.islice(itertools.product(*[p.options for p in model_params]), limit)) or [()]

    out = []
    for combo in combos:
        chosen = {p.name: v for p, v in zip(model_params, combo)}
        sections = space.resolve(lambda p: chosen.get(p.name, p.options[0]))  # noqa: B023 (called at once)
        out.append({**sections, "resources": dict(spec["resources"])})
    return out


def _threads(spec: SearchSpec) -> int:
    return max(1, int(float(spec["resources"]["cpus_per_worker"])))


def build(config: dict, crop: int, batch: int):
    """The trial exactly as a search builds it (model, loss, optimiser, device, precision)."""
    from platform.train.loop import build_trial
    from platform.train.session import Session

    cfg = {**config, "task": {**config["task"], "crop": crop, "batch_size": batch, "crops_per_epoch": batch}}
    with tempfile.TemporaryDirectory(prefix="timebox-") as tmp:
        return build_trial(cfg, Session(checkpoint_root=tmp), fit_start=False)


def time_steps(trial, crop: int, steps: int = 2) -> float:
    """Median seconds of a training step at ``crop`` (after one warm-up step). The inputs are the
    trial's own first batch resampled to the crop: a step's cost does not depend on the pixels."""
    from platform.train.loop import train_step

    trial.model.train()
    x, y = next(iter(trial.loader))
    x, y = _resized(x, crop), _resized(y, crop)
    times = []
    for i in range(steps + 1):
        t0 = time.perf_counter()
        total, _ = train_step(trial, x, y)
        float(total.detach())  # wait for the device
        if i:
            times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def _resized(t, crop: int):
    """A batch (images NCHW, masks NHW, or a dict of them) resampled to crop x crop (nearest)."""
    if isinstance(t, dict):
        return {k: _resized(v, crop) for k, v in t.items()}
    if t.dim() == 3:
        return torch.nn.functional.interpolate(t[:, None].float(), size=(crop, crop))[:, 0].to(t.dtype)
    return torch.nn.functional.interpolate(t.float(), size=(crop, crop)).to(t.dtype)


def time_validation(trial) -> float:
    t0 = time.perf_counter()
    trial.task.validate(trial.model, trial.device, trial.precision)
    return time.perf_counter() - t0


@dataclass
class Measurement:
    crops: tuple[int, int]
    step_s: tuple[float, float]  # at the two crops
    val_s: float

    def step_at(self, crop: int) -> float:
        """Affine in the pixel count between the two measured crops (never below the smaller)."""
        (c0, c1), (s0, s1) = self.crops, self.step_s
        if c1 == c0:
            return s0
        slope = max(0.0, (s1 - s0) / (c1 * c1 - c0 * c0))
        return max(s0, s0 + slope * (crop * crop - c0 * c0))


def measure(spec: SearchSpec, crops: list[int], batch: int) -> Measurement:
    """Step times of the slowest candidate model at the smallest and largest crop, and a validation."""
    threads = torch.get_num_threads()
    torch.set_num_threads(_threads(spec))
    try:
        worst, worst_trial = None, None
        for config in candidate_configs(spec):
            trial = build(config, crops[0], batch)
            m = Measurement((crops[0], crops[-1]), (time_steps(trial, crops[0]), time_steps(trial, crops[-1])), 0.0)
            if worst is None or m.step_at(crops[-1]) > worst.step_at(crops[-1]):
                worst, worst_trial = m, trial
        worst.val_s = time_validation(worst_trial)
        return worst
    finally:
        torch.set_num_threads(threads)


# --------------------------------------------------------------------------- planning
def concurrency(spec: SearchSpec) -> int:
    """Trials that can really run at once here: GPUs, else the machine's cores, per trial."""
    res, s = spec["resources"], spec["search"]
    limit = int(s["max_concurrent"])
    if float(res["gpus_per_worker"]) > 0:
        return limit
    per_trial = _threads(spec) * int(res["workers"])
    return max(1, min(limit, (os.cpu_count() or 1) // per_trial))


def candidate_crops(spec: SearchSpec, task, largest: int) -> list[int]:
    smallest_side = min(min(p.input.shape[:2]) for p in _training_items(task))
    crops = [c for c in CROPS if c <= min(largest, smallest_side)]
    return crops or [min(largest, smallest_side)]


def _training_items(task):
    return getattr(task, "train_pairs", None) or task.train_items


def plan(seconds: float, m: Measurement, crops: list[int], batch: int, trials_at_once: int, waves: int,
         min_steps: int) -> Plan:
    """Trials, crop, epochs and crops per epoch for ``seconds`` of training per wave of trials."""
    trial_s = seconds / waves
    crop = crops[0]
    for c in crops:
        if (trial_s * (1 - VALIDATION_SHARE)) / m.step_at(c) >= min_steps:
            crop = c
    step_s = m.step_at(crop)
    epochs = int(min(30, max(3, (VALIDATION_SHARE * trial_s) // max(m.val_s, 1e-3))))
    steps = max(epochs, int((trial_s - epochs * m.val_s) / step_s))
    per_epoch = max(1, math.ceil(steps / epochs)) * batch
    return Plan(seconds, trial_s, trials_at_once * waves, trials_at_once, crop, batch, step_s, m.val_s, epochs,
                per_epoch)


def pinned(overrides: dict, key: str) -> bool:
    node = overrides
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def size_search(spec: SearchSpec, task, seconds: float, overrides: dict, started: float) -> Plan | None:
    """Measure and plan, then write the plan into ``spec`` (keys the user fixed are kept)."""
    box = spec["search"]["timebox"]
    t = spec["task"]
    if is_search_node(t["crop"]) or is_search_node(t["batch_size"]):
        crops, batch = None, None
    else:
        crops, batch = candidate_crops(spec, task, int(t["crop"])), int(t["batch_size"])
    if pinned(overrides, "task.crop") and crops:
        crops = [int(t["crop"])]
    if crops is None:
        log.warning("search.timebox: the crop or batch size is searched; only trials and epochs are sized")
        crops, batch = [64], 4
    m = measure(spec, [crops[0], crops[-1]], batch)
    spent = time.monotonic() - started
    remaining = seconds - spent - float(box["overhead_s"])
    if remaining < MIN_SHARE * seconds:  # a loaded machine: train for a fifth of the budget, and say so
        log.warning("search.timebox: preparing the search took %.0f s of the %.0f s budget (a busy machine?); "
                    "the trials still get %.0f s each, so the search will overrun its budget", spent, seconds,
                    MIN_SHARE * seconds)
        remaining = MIN_SHARE * seconds
    p = plan(remaining, m, crops, batch, concurrency(spec), int(box["waves"]), int(box["min_steps"]))
    apply(spec, p, overrides)
    log.info("%s", p.describe())
    return p


def apply(spec: SearchSpec, p: Plan, overrides: dict) -> None:
    cfg = spec.config
    updates = {"task.crop": p.crop, "task.crops_per_epoch": p.crops_per_epoch, "train.epochs": p.epochs,
               "search.num_trials": p.trials, "search.max_concurrent": p.concurrency,
               "schedule.warmup_epochs": min(float(cfg["schedule"]["warmup_epochs"]), max(1, p.epochs // 10)),
               "train.image_every": max(1, p.epochs // 3)}
    if is_search_node(cfg["task"]["crop"]):
        updates.pop("task.crop")
    for key, value in updates.items():
        if not pinned(overrides, key):
            section, name = key.split(".")
            cfg[section][name] = value
    sched = cfg["search"]["scheduler"]
    if not pinned(overrides, "search.scheduler.max_t"):
        sched["max_t"] = cfg["train"]["epochs"]
    if int(cfg["search"]["timebox"]["waves"]) == 1 and not pinned(overrides, "search.scheduler.grace_period"):
        # One wave: a trial stopped early frees cores that no later trial would use.
        sched["grace_period"] = sched["max_t"]
    sched["grace_period"] = min(sched["grace_period"], sched["max_t"])
    cfg["search"]["timebox"]["plan"] = asdict(p)


def trial_time_limit(spec: SearchSpec) -> float | None:
    """Seconds after which a trial of a time-boxed search is stopped (None: not time-boxed)."""
    p = spec["search"]["timebox"].get("plan")
    return SLACK * p["trial_seconds"] if p else None
