"""The common trainer: one training loop for every architecture and task.

``train_loop(config, session)`` is what every trial runs, whether as a Ray Train DDP worker,
inside a single-worker Tune trial or in a plain process. It builds the task, model, loss and
optimiser from the resolved trial config, resumes from the session's checkpoint if there is
one, and per epoch: trains on distributed random crops (AdamW, warm-up + cosine, gradient
clipping, bf16 autocast and ``channels_last`` on CUDA), validates on whole frames, writes a
checkpoint (model/optimiser/scheduler/epoch/RNG) and reports every loss component.

No per-step host synchronisation: losses are accumulated on the device and read once per
epoch at the reporting point.
"""

from __future__ import annotations

import json
import logging
import math
import random
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler

from platform import models as models_lib, tasks as tasks_lib
from platform.compress.prune import apply_pruned, prune_for_trial
from platform.data.device_crops import DeviceCrops, make_device_crops
from platform.safeio import load_state, save_atomic, to_json_text
from platform.train.pace import Pace, Schedule
from platform.train.pretrained import Finetuning, load_pretrained_weights, lr_schedule, optimizer_groups
from platform.train.session import Session, all_reduce_sum, distributed
from platform.train.warm import init_from_champion

log = logging.getLogger(__name__)
clock = time.perf_counter  # the trainer's clock for epoch times and the time budget (tests replace it)

CHECKPOINT_FILE = "state.pt"
GRID_FILE = "val_grid.png"


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or Inf: the trial stops at once."""


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def resolve_precision(name: str, device: torch.device) -> str:
    """``train.precision`` on this device: ``auto`` is bf16 where the GPU has bf16 units (Ampere and
    later; emulated bf16 on older GPUs is slower than fp32), fp32 elsewhere; an explicit bf16 on an
    older GPU becomes fp16, which the trainer runs with a gradient scaler."""
    native_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported(including_emulation=False)
    if name == "auto":
        return "bf16" if native_bf16 else "fp32"
    if name == "bf16" and device.type == "cuda" and not native_bf16:
        return "fp16"
    if name == "fp16" and device.type != "cuda":
        return "fp32"  # fp16 autocast is a CUDA feature; CPUs train in fp32 (or bf16)
    return name


def loss_spec(config: dict) -> dict:
    """The loss section as {component: weight or {weight, options}} with zero weights dropped."""
    spec = {}
    for name, value in (config.get("loss") or {}).items():
        weight = value.get("weight", 1.0) if isinstance(value, dict) else value
        if float(weight) > 0:
            spec[name] = value
    return spec


def build_model(config: dict, model_kwargs: dict | None = None) -> torch.nn.Module:
    """The trial's network; ``model_kwargs`` come from the task (channels, classes) and are
    stored in checkpoints as ``config["_model_kwargs"]`` so a model can be rebuilt without data."""
    m = config["model"]
    kwargs = dict(model_kwargs if model_kwargs is not None else config.get("_model_kwargs", {}))
    kwargs.update(m.get("options") or {})
    if m.get("size") is not None:
        kwargs["size"] = m["size"]
    model = models_lib.create(m["architecture"], **kwargs)
    return apply_pruned(model, config)  # a structurally pruned network gets its recorded layer widths


def create_criterion(task, spec: dict | None):
    """The trial's loss: the task builds it when it has to (segmentation adds the data's ignore
    index, the hierarchical task weighs one loss per level); otherwise the plain hybrid loss."""
    return task.create_loss(spec, allow_unavailable=True)


def _save_checkpoint(folder: Path, model, optimizer, scheduler, epoch: int, config: dict, metrics: dict,
                     grid: np.ndarray | None) -> None:
    raw = getattr(model, "module", model)
    state = {
        "model": {k: v.detach().cpu() for k, v in raw.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "epoch": epoch,
        "config": to_json_text(config),  # JSON text, not a pickled dict: loaded with weights_only=True
        "rng": rng_state(),
    }
    save_atomic(state, folder / CHECKPOINT_FILE)
    (folder / "metrics.json").write_text(json.dumps(metrics, indent=1, default=float))
    (folder / "config.json").write_text(json.dumps(config, indent=1, default=str))
    if grid is not None:
        import imageio.v3 as iio

        iio.imwrite(folder / GRID_FILE, grid)


def rng_state() -> dict:
    """The RNG states as tensors and plain lists (a checkpoint holds no pickled objects)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    return {"torch": torch.get_rng_state(), "numpy": [name, keys.tolist(), pos, has_gauss, cached],
            "python": [version, list(internal), gauss]}


def load_checkpoint_state(folder: str | Path) -> dict:
    """A trainer checkpoint, loaded with ``weights_only=True`` (a crafted file runs nothing)."""
    return load_state(Path(folder) / CHECKPOINT_FILE, "checkpoint")


@dataclass
class Trial:
    """Everything one trial trains with, built once by :func:`build_trial`."""

    config: dict
    session: Session
    task: Any
    dataset: Any
    sampler: DistributedSampler | None
    loader: DataLoader
    model: torch.nn.Module
    criterion: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    device: torch.device
    precision: str
    channels_last: bool
    params: list
    grad_clip: float | None
    names: list[str]
    batch_size: int
    steps_per_epoch: int
    epochs: int
    start_epoch: int = 0
    schedule: Schedule | None = None  # the learning-rate schedule (a time budget may shorten it)
    finetuning: Finetuning | None = None  # set when the trial starts from pretrained weights
    warm_init: dict[str, float] | None = None  # the load counts when it starts from an earlier champion
    device_crops: DeviceCrops | None = None  # crops cut on the GPU instead of by the loader
    # Enabled for fp16 only; disabled it passes every call through.
    scaler: torch.amp.GradScaler = field(default_factory=lambda: torch.amp.GradScaler("cpu", enabled=False))
    first_step_at: float | None = None  # wall-clock time of the first training step (start-up benchmark)


def build_trial(config: dict, session: Session, fit_start: bool = True) -> Trial:
    """Build task, data, model, loss, optimiser and schedule; resume from the session's checkpoint.
    ``fit_start=False`` skips a model's closed-form start (timing runs need no fit)."""
    train_cfg, opt_cfg, sch_cfg = config["train"], config["optimizer"], config["schedule"]
    seed = int(train_cfg.get("seed", 0))
    seed_everything(seed + session.rank)
    device = session.device()
    precision = resolve_precision(train_cfg.get("precision", "auto"), device)
    channels_last = train_cfg.get("channels_last", "auto")
    channels_last = device.type == "cuda" if channels_last == "auto" else bool(channels_last)

    task = tasks_lib.create(config["task"]["name"], config["task"], seed=seed)
    if (config.get("distill") or {}).get("teacher"):  # a distillation search (python -m platform.distill)
        from platform.distill.task import with_teacher

        task = with_teacher(task, config)
    dataset = task.train_dataset()
    sampler = DistributedSampler(dataset, num_replicas=session.world_size, rank=session.rank, shuffle=False,
                                 drop_last=True) if session.world_size > 1 else None
    batch_size = int(config["task"]["batch_size"])
    loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, shuffle=False, drop_last=True,
                        num_workers=0, pin_memory=device.type == "cuda")
    steps_per_epoch = len(loader)
    if steps_per_epoch == 0:
        raise ValueError(f"task.crops_per_epoch ({len(dataset)}) is smaller than batch_size x workers "
                         f"({batch_size} x {session.world_size}); no training step would run.")

    torch.manual_seed(seed)  # identical initial weights on every worker
    config = {**config, "_model_kwargs": dict(task.model_kwargs()), **input_coverage(task)}
    model = build_model(config)
    finetuning = load_pretrained_weights(model, config.get("pretrained"), config["model"]["architecture"],
                                         session.world_size, session.rank)
    if finetuning is None and fit_start:
        init_from_data(model, task, seed)
    warm_init = init_from_champion(model, config, session.rank)  # a warm-started search's earlier champion
    model, config = prune_for_trial(model, config, build_model)  # compress.prune.sparsity: channels removed (platform.compress)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    model = session.prepare_model(model)
    if train_cfg.get("compile"):
        t0 = time.perf_counter()
        model = torch.compile(model)
        log.info("torch.compile wrapped the model in %.1f s (kernels compile at the first steps)",
                 time.perf_counter() - t0)

    criterion = create_criterion(task, loss_spec(config) or None).to(device)
    if criterion.dropped and session.rank == 0:
        for name, reason in criterion.dropped.items():
            log.warning("loss component %r disabled for this trial: %s", name, reason)

    lr, wd = float(opt_cfg["lr"]), float(opt_cfg["weight_decay"])
    groups = optimizer_groups(model, finetuning, lr, wd)
    params = [p for g in groups for p in g["params"]]
    optimizer = torch.optim.AdamW(groups, lr=lr, weight_decay=wd, betas=tuple(opt_cfg.get("betas", (0.9, 0.9))),
                                  fused=device.type == "cuda")
    epochs = int(train_cfg["epochs"])
    warmup_steps = round(float(sch_cfg.get("warmup_epochs", 0)) * steps_per_epoch)
    per_step = Schedule(epochs * steps_per_epoch, warmup_steps, lr, float(sch_cfg["min_lr"]),
                        sch_cfg.get("name", "cosine"))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_schedule(optimizer, finetuning, per_step,
                                                                         steps_per_epoch))
    trial = Trial(config, session, task, dataset, sampler, loader, model, criterion, optimizer, scheduler, device,
                  precision, channels_last, params, opt_cfg.get("grad_clip"), list(criterion.weights), batch_size,
                  steps_per_epoch, epochs, schedule=per_step, finetuning=finetuning, warm_init=warm_init,
                  device_crops=make_device_crops(dataset, device, train_cfg.get("device_crops", "auto")),
                  scaler=torch.amp.GradScaler(device.type, enabled=precision == "fp16"))
    resume = session.get_checkpoint_dir()
    if resume is not None:
        state = load_checkpoint_state(resume)
        getattr(model, "module", model).load_state_dict(state["model"])
        factors = [g.get("lr_factor", 1.0) for g in optimizer.param_groups]  # this trial's (PBT may mutate)
        optimizer.load_state_dict(state["optimizer"])
        for group, factor in zip(optimizer.param_groups, factors):
            group["lr_factor"] = factor
        scheduler.load_state_dict(state["scheduler"])
        reapply_hyperparameters(optimizer, scheduler, opt_cfg)
        trial.start_epoch = int(state["epoch"])
        torch.set_rng_state(state["rng"]["torch"])
        log.info("resumed from checkpoint at epoch %d", trial.start_epoch)
    return trial


def input_coverage(task) -> dict:
    """The colours of an image task's training inputs, for the checkpoint's config (:mod:`platform.coverage`:
    ``platform.predict`` warns on frames far outside them). Segmentation's hundreds of images are not scanned."""
    if not task.output_kind_class().image_like or not task.train_items:
        return {}
    from platform import coverage

    return {coverage.KEY: coverage.training_coverage(task.train_items)}


def init_from_data(model: torch.nn.Module, task, seed: int) -> None:
    """Models with a closed-form start (``init_from_pairs``: the lut3d family's least-squares LUT)
    get it from the training pairs' colours; the same draw on every worker (``seed``)."""
    init = getattr(model, "init_from_pairs", None)
    pairs = task.train_items if task.output_kind_class().image_like else None  # colour in, colour out
    if init is None or not pairs:
        return
    from platform.floors import training_colours

    x, y = training_colours(pairs, seed=seed)
    if x.shape[1] >= 3:
        init(x[:, :3], y[:, :3])


def reapply_hyperparameters(optimizer, scheduler, opt_cfg: dict) -> None:
    """After a resume the optimiser's state comes from the checkpoint, but the trial's config wins:
    PBT exploits a checkpoint and then mutates lr / weight decay, which must take effect at once."""
    lr, wd = float(opt_cfg["lr"]), float(opt_cfg["weight_decay"])
    for group, lmbda in zip(optimizer.param_groups, scheduler.lr_lambdas):
        group["initial_lr"] = lr * group.get("lr_factor", 1.0)  # backbone/head factors when fine-tuning
        group["lr"] = group["initial_lr"] * lmbda(scheduler.last_epoch)
        group["weight_decay"] = wd
    scheduler.base_lrs = [group["initial_lr"] for group in optimizer.param_groups]
    scheduler._last_lr = [group["lr"] for group in optimizer.param_groups]  # what get_last_lr() reports


def train_step(t: Trial, inputs, targets) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One optimisation step. Returns the (device) total loss and its parts, never synchronising."""
    inputs = to_device(inputs, t.device)
    targets = to_device(targets, t.device)
    if t.channels_last:
        inputs = inputs.contiguous(memory_format=torch.channels_last)
    with _autocast(t.device, t.precision):
        outputs = t.model(inputs)
        total, parts = t.criterion(outputs, targets)
    t.optimizer.zero_grad(set_to_none=True)
    # The scaler is enabled for fp16 only (small gradients would underflow); disabled, each call
    # is a pass-through (scale returns the loss, step calls optimizer.step).
    t.scaler.scale(total).backward()
    if t.grad_clip:
        t.scaler.unscale_(t.optimizer)
        torch.nn.utils.clip_grad_norm_(t.params, float(t.grad_clip))
    t.scaler.step(t.optimizer)
    t.scaler.update()
    t.scheduler.step()
    return total, parts


def train_epoch(t: Trial, epoch: int, max_steps: int | None = None) -> torch.Tensor:
    """Train one epoch; returns per-worker sums [total, *components] on the device (no host sync)."""
    t.model.train()
    if t.finetuning is not None:
        t.finetuning.start_epoch(t.model, epoch)
    t.dataset.set_epoch(epoch)
    if t.sampler is not None:
        t.sampler.set_epoch(epoch)
    sums = torch.zeros(len(t.names) + 1, device=t.device)
    if t.device_crops is not None:  # the sampler gives this worker's shard, as it does to the loader
        indices = list(t.sampler) if t.sampler is not None else range(len(t.dataset))
        batches = t.device_crops.batches(epoch, indices, t.batch_size)
    else:
        batches = t.loader
    for step, (inputs, targets) in enumerate(batches):
        if max_steps is not None and step >= max_steps:
            break
        if t.first_step_at is None:
            t.first_step_at = time.time()
        total, parts = train_step(t, inputs, targets)
        sums[0] += total.detach()
        for i, n in enumerate(t.names):
            sums[i + 1] += parts[n]
    return sums


def train_loop(config: dict, session: Session | None = None) -> dict[str, Any]:
    """Train one trial. Returns the last reported metrics."""
    session = session or Session()
    t = build_trial(config, session)
    image_every = int(t.config["train"].get("image_every", 5))
    pace = make_pace(t)
    started = clock()
    last: dict[str, Any] = {}
    for epoch in range(t.start_epoch, t.epochs):
        t0 = clock()
        steps = pace.epoch_steps() if pace else t.steps_per_epoch
        sums = train_epoch(t, epoch, max_steps=steps)
        # Reporting point: one host sync per epoch.
        values = (all_reduce_sum(sums) / (steps * session.world_size)).tolist()
        if not math.isfinite(values[0]):
            raise NonFiniteLossError(f"training loss became {values[0]} at epoch {epoch + 1}; "
                                     "stopping this trial (lower the learning rate or check the data).")
        train_time = clock() - t0

        want_grid = session.rank == 0 and ((epoch + 1) % image_every == 0 or epoch + 1 == t.epochs)
        val = t.task.validate(t.model, t.device, t.precision, rank=session.rank, world_size=session.world_size,
                              want_grid=want_grid)
        keys = sorted(val.sums)
        red = all_reduce_sum(torch.tensor([val.sums[k] for k in keys] + [val.count], dtype=torch.float64,
                                          device=t.device))
        val_metrics = {k: float(red[i] / max(1.0, float(red[-1]))) for i, k in enumerate(keys)}

        metrics: dict[str, Any] = {
            "epoch": epoch + 1,
            "train_loss": values[0],
            **{f"train_loss/{n}": values[i + 1] for i, n in enumerate(t.names)},
            **val_metrics,
            **_lr_metrics(t),
            "epoch_time_s": clock() - t0,
            "train_images_per_s": steps * t.batch_size * session.world_size / max(train_time, 1e-9),
            "train_steps": t.scheduler.last_epoch,
        }
        if epoch == t.start_epoch:
            metrics["first_step_at"] = t.first_step_at
            if t.finetuning is not None:
                metrics.update(t.finetuning.metrics)
            metrics.update(t.warm_init or {})
            if t.criterion.dropped:
                metrics["dropped_losses"] = "; ".join(f"{k}: {v}" for k, v in t.criterion.dropped.items())
        with tempfile.TemporaryDirectory(prefix="ckpt-") as tmp:
            if session.rank == 0:
                _save_checkpoint(Path(tmp), t.model, t.optimizer, t.scheduler, epoch + 1, t.config, metrics,
                                 val.grid)
            session.report(metrics, tmp if session.rank == 0 else None)
        last = metrics
        if distributed():
            torch.distributed.barrier()
        if pace and not keep_pace(pace, t, started, train_time, steps, epoch):
            break
    return last


def make_pace(t: Trial) -> Pace | None:
    """A :class:`Pace` when the trial has a time budget (``train.time_budget_s``, set by a time-boxed search)."""
    budget = t.config["train"].get("time_budget_s")
    if not budget or t.schedule is None:
        return None
    return Pace(float(budget), t.schedule, t.steps_per_epoch, t.epochs)


def keep_pace(pace: Pace, t: Trial, started: float, train_time: float, steps: int, epoch: int) -> bool:
    """Re-plan after an epoch; every worker decides from the slowest one's times (same steps everywhere)."""
    elapsed = clock() - started
    times = torch.tensor([elapsed, train_time], dtype=torch.float64)
    if distributed():
        times = times.to(t.device)
        torch.distributed.all_reduce(times, op=torch.distributed.ReduceOp.MAX)
    elapsed, train_time = times.tolist()
    other = elapsed - pace.train_s - pace.val_s - train_time
    return pace.after_epoch(elapsed, train_time, other, steps, t.scheduler.last_epoch, epoch + 1)


def _lr_metrics(t: Trial) -> dict[str, float]:
    """``lr`` of the (new) parameters and, when fine-tuning, ``lr_backbone`` of the pretrained ones."""
    lrs = dict(zip((g.get("name", "all") for g in t.optimizer.param_groups), t.scheduler.get_last_lr()))
    out = {"lr": lrs.get("new", next(iter(lrs.values())))}
    if "pretrained" in lrs:
        out["lr_backbone"] = lrs["pretrained"]
    return out


def to_device(x, device: torch.device):
    """Tensors, or dicts of tensors (hierarchical targets), to ``device``."""
    if isinstance(x, dict):
        return {k: to_device(v, device) for k, v in x.items()}
    return x.to(device, non_blocking=True)


def _autocast(device: torch.device, precision: str):
    from platform.inference import autocast_for

    return autocast_for(device, precision)
