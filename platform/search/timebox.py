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
* epochs and crops per epoch: validation takes about a twentieth of a trial, the rest is steps
  (the learning rate warms up over the first 5% of them);
* on a CPU with ``train.precision: auto``: bf16 autocast and ``channels_last`` when a measured
  step is clearly faster that way (CPUs with bf16 matrix units, e.g. Intel AMX: about 2x for the
  lut3d family), fp32 otherwise.

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
VALIDATION_SHARE = 0.05  # of a trial's time spent validating (sets the number of epochs)
WARMUP_SHARE = 0.05  # of a trial's steps spent warming the learning rate up (at most the spec's warm-up)
SLACK = 1.5  # a trial is stopped at this multiple of its planned time
MIN_SHARE = 0.2  # of the budget the trials always get, however long the preparation took
BF16_GAIN = 0.85  # on a CPU, bf16 autocast (+ channels_last) is chosen when a step takes at most this share


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
    precision: str = "auto"  # "bf16": measured faster on this CPU than fp32, written into train.precision

    @property
    def steps(self) -> int:
        return self.epochs * self.crops_per_epoch // self.batch

    def describe(self) -> str:
        return (f"time budget {self.seconds:.0f} s: {self.trials} trial(s), {self.concurrency} at a time, "
                f"{self.trial_seconds:.0f} s each: crop {self.crop}, batch {self.batch}, {self.epochs} epochs x "
                f"{self.crops_per_epoch} crops = {self.steps} steps (measured {1000 * self.step_s:.0f} ms/step, "
                f"{self.val_s:.1f} s/validation{', bf16 autocast' if self.precision == 'bf16' else ''})")


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
    """Median seconds of a training step at ``crop`` (after one warm-up step), drawing each batch
    from the trial's loader (cutting and augmenting crops is part of a step) and resampling it to
    ``crop`` when the loader cuts another size: a step's cost does not depend on the pixels."""
    from platform.train.loop import train_step

    trial.model.train()
    times, batches = [], iter(())
    for i in range(steps + 1):
        t0 = time.perf_counter()
        batch = next(batches, None)
        if batch is None:  # (re)start the loader: it holds as many batches as the trial was built for
            batches = iter(trial.loader)
            batch = next(batches)
        x, y = batch
        if x.shape[-1] != crop:
            x, y = _resized(x, crop), _resized(y, crop)
        total, _ = train_step(trial, x, y)
        float(total.detach())  # wait for the device
        if i:
            times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def time_steps_together(trials: list, crop: int, steps: int = 3) -> float:
    """Seconds of a training step at ``crop`` while ``len(trials)`` copies of the trial step at once,
    one thread each (the slowest copy's median): what each of the trials a search runs side by side
    on this CPU will see, other people's load included. A step measured alone is up to twice as fast
    on a two-core machine."""
    if len(trials) == 1:
        return time_steps(trials[0], crop, steps)
    import threading

    barrier = threading.Barrier(len(trials))
    results: list[float | None] = [None] * len(trials)
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            barrier.wait()
            results[i] = time_steps(trials[i], crop, steps)
        except BaseException as exc:  # re-raised in the caller
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(len(trials))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return max(r for r in results if r is not None)


def _resized(t, crop: int):
    """A batch (images NCHW, masks NHW, or a dict of them) resampled to crop x crop (nearest)."""
    if isinstance(t, dict):
        return {k: _resized(v, crop) for k, v in t.items()}
    if t.dim() < 3:  # a per-crop value (a distillation batch's ``labelled`` flags): nothing to resample
        return t
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
    precision: str = "auto"

    def step_at(self, crop: int) -> float:
        """Affine in the pixel count between the two measured crops (never below the smaller)."""
        (c0, c1), (s0, s1) = self.crops, self.step_s
        if c1 == c0:
            return s0
        slope = max(0.0, (s1 - s0) / (c1 * c1 - c0 * c0))
        return max(s0, s0 + slope * (crop * crop - c0 * c0))


def with_precision(config: dict, precision: str) -> dict:
    """A trial config trained in ``precision`` ("bf16": autocast and channels_last; "auto": as is)."""
    if precision != "bf16":
        return config
    return {**config, "train": {**config["train"], "precision": "bf16", "channels_last": True}}


def measure(spec: SearchSpec, crops: list[int], batch: int, max_step_s: float | None = None,
            precisions: tuple[str, ...] = ("auto",), together: int = 1) -> Measurement:
    """Step times of the slowest candidate model at the smallest and largest crop, and a validation.

    ``max_step_s``: when a step at the smallest crop already takes longer (the budget cannot buy
    ``min_steps`` steps even there), the largest crop is not timed: the plan takes the smallest
    anyway, and a step at a large crop costs seconds of the budget on a CPU.

    ``precisions`` ("auto", "bf16"): each is timed at the smallest crop and the fastest is kept
    (bf16 only when its slowest candidate takes at most ``BF16_GAIN`` of the first's): CPUs with
    bf16 matrix units (AMX, recent ARM) train a small convolutional network twice as fast in bf16,
    others emulate it and are slower.

    ``together`` > 1 (CPU trials that run side by side): the slowest candidate's steps are timed
    again with that many copies stepping at once (:func:`time_steps_together`)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(_threads(spec))
    try:
        timed: dict[str, list] = {}
        for precision in precisions:
            rows = []
            try:
                for config in candidate_configs(spec):
                    trial = build(with_precision(config, precision), crops[0], batch)
                    if precision != "auto" and trial.device.type != "cpu":
                        break  # a GPU's precision is the trainer's own choice
                    rows.append((trial, time_steps(trial, crops[0])))
                else:
                    timed[precision] = rows
            except Exception as exc:  # e.g. an operator without a bf16 CPU kernel: keep the first precision
                if precision == precisions[0]:
                    raise
                log.info("search.timebox: %s steps failed on this machine (%s); keeping %s", precision, exc,
                         precisions[0])
        chosen = precisions[0]
        for precision in precisions[1:]:
            if precision in timed and (max(t for _, t in timed[precision])
                                       <= BF16_GAIN * max(t for _, t in timed[chosen])):
                chosen = precision
        if len(timed) > 1:
            log.info("search.timebox: a step at %d px takes %s", crops[0], ", ".join(
                f"{1000 * max(t for _, t in rows):.0f} ms in {p if p != 'auto' else 'the default precision'}"
                for p, rows in timed.items()))
        worst, worst_trial, worst_config = None, None, None
        for config, (trial, small) in zip(candidate_configs(spec), timed[chosen]):
            if max_step_s is not None and small > max_step_s:
                m = Measurement((crops[0], crops[0]), (small, small), 0.0, chosen)
            else:
                m = Measurement((crops[0], crops[-1]), (small, time_steps(trial, crops[-1])), 0.0, chosen)
            if worst is None or m.step_at(crops[-1]) > worst.step_at(crops[-1]):
                worst, worst_trial, worst_config = m, trial, config
        if together > 1 and worst_trial.device.type == "cpu":
            copies = [worst_trial] + [build(with_precision(worst_config, chosen), crops[0], batch)
                                      for _ in range(together - 1)]
            alone = worst.step_s
            worst.step_s = tuple(time_steps_together(copies, c) for c in sorted(set(worst.crops)))
            if len(worst.step_s) == 1:
                worst.step_s = (worst.step_s[0], worst.step_s[0])
            log.info("search.timebox: %d trainers stepping at once: %.0f ms/step at %d px (%.0f ms alone)", together,
                     1000 * worst.step_s[0], crops[0], 1000 * alone[0])
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


def trainers_at_once(spec: SearchSpec) -> int:
    """Trainers that step at once here: trials at once, times the k replicas each trial runs in
    lockstep with ``search.repeat`` (they share the trial's cores, so each step is slower)."""
    repeat = spec["search"]["repeat"]
    return concurrency(spec) * (int(repeat["k"]) if repeat["over"] != "none" else 1)


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
                per_epoch, m.precision)


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
    ahead = seconds - (time.monotonic() - started) - float(box["overhead_s"])  # an upper bound of a trial's time
    max_step_s = (1 - VALIDATION_SHARE) * max(ahead, MIN_SHARE * seconds) / int(box["waves"]) / int(box["min_steps"])
    try_bf16 = (spec["train"]["precision"] == "auto" and not pinned(overrides, "train.precision")
                and float(spec["resources"]["gpus_per_worker"]) == 0)
    m = measure(spec, [crops[0], crops[-1]], batch, max_step_s=max_step_s,
                precisions=("auto", "bf16") if try_bf16 else ("auto",), together=trainers_at_once(spec))
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
               "schedule.warmup_epochs": min(float(cfg["schedule"]["warmup_epochs"]), round(WARMUP_SHARE * p.epochs, 3)),
               "train.image_every": max(1, p.epochs // 3), "train.time_budget_s": round(p.trial_seconds, 1)}
    if is_search_node(cfg["task"]["crop"]):
        updates.pop("task.crop")
    if p.precision == "bf16":
        updates.update({"train.precision": "bf16", "train.channels_last": True})
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
