"""``python -m platform.bench train``: the trainer against a bare loop and NAFNet's reference recipe.

All contenders run in one process on the same model, the same data (the sample set's random
crops, materialised once on the device: data cost is excluded) and the same PSNR loss and AdamW:

1. **bare**: a loop written for the benchmark with the device speed-ups the platform applies
   (bf16 autocast, ``channels_last`` and fused AdamW on CUDA) and nothing else (no clipping,
   no schedule, no gradient scaler): platform / bare is the trainer's overhead;
2. **reference**: NAFNet's released recipe (fp32, eager, NCHW, AdamW betas (0.9, 0.9), PSNR
   loss, gradient clipping at 0.01 as in BasicSR's ``use_grad_clip``);
3. **platform**: :func:`platform.train.loop.train_step` on a trial built by ``build_trial``
   exactly as a search runs it; ``--compile`` adds **platform+compile** (``torch.compile``).

The contenders take turns in rounds (bare, reference, platform, bare, ...; ``--round-steps``
steps each), so a job that starts or stops on a shared machine slows them alike. Each figure
is the median over rounds; a ratio is the ratio of medians with the min-max of the per-round
ratios. On CUDA it also prints TFLOP/s and MFU against the device's dense bf16 peak, the
FLOPs of one training step (forward + backward) counted by ``torch.utils.flop_counter``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import statistics
import time

import torch

from platform.bench._measure import PeakMemory, bf16_peak, interleave, md_table, speed_ratio, sync
from platform.errors import ConfigError, cli_main

log = logging.getLogger(__name__)

EAGER = ("bare", "reference", "platform")
COMPILED = "platform+compile"


def _config(args) -> dict:
    from platform.config import load_spec
    from platform.data.samples import resolve_data

    try:
        options = json.loads(args.options) if args.options else {}
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--options is not valid JSON ({exc}): {args.options!r}") from None
    overrides = {
        "task": {"data": "sample:vfx_grade", "crop": args.crop, "batch_size": args.batch,
                 "crops_per_epoch": 4 * args.batch, "val_holdout": 2},
        "model": {"architecture": args.model, "size": args.size, "options": options},
        "optimizer": {"lr": 1e-3, "betas": [0.9, 0.9], "weight_decay": 0.0, "grad_clip": 0.01},
        "schedule": {"warmup_epochs": 0},
        "train": {"epochs": 1, "precision": "auto" if args.device == "cuda" else "fp32", "compile": False},
    }
    spec = load_spec("nafnet_fewshot", overrides=overrides)
    spec.config["loss"] = {"psnr": 1.0}  # NAFNet's recipe, for every contender
    spec.config["task"]["data"] = str(resolve_data(spec.config["task"]["data"]))
    return spec.config


class TrainBench:
    """The trial, the batches and one step function per contender."""

    def __init__(self, args):
        from platform.train.loop import build_trial
        from platform.train.session import Session

        self.args = args
        self.device = torch.device(args.device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError("--device cuda was asked for but no CUDA device is visible; use --device cpu.")
        self.config = _config(args)
        session = Session()
        session.device = lambda: self.device  # the benchmark picks the device explicitly
        self.session = session
        self.trial = build_trial(self.config, session)
        self.trial.dataset.set_epoch(0)
        self.batches = [(x.to(self.device), y.to(self.device)) for x, y in self.trial.loader]
        self.steps = {"bare": self._bare(), "reference": self._reference(), "platform": self._platform(self.trial)}

    def _cycle(self, step):
        batches = itertools.cycle(self.batches)
        return lambda: step(*next(batches))

    def _model(self, fast: bool) -> torch.nn.Module:
        from platform.train.loop import build_model

        torch.manual_seed(0)
        model = build_model(self.trial.config).to(self.device)
        return model.to(memory_format=torch.channels_last) if fast and self.trial.channels_last else model

    def _bare(self):
        from platform import losses
        from platform.inference import autocast_for

        t, model = self.trial, self._model(fast=True)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.9), weight_decay=0.0,
                                fused=self.device.type == "cuda")
        crit = losses.create({"psnr": 1.0}).to(self.device)

        def step(x, y):
            if t.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast_for(self.device, t.precision):
                loss, _ = crit(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return self._cycle(step)

    def _reference(self):
        from platform import losses

        model = self._model(fast=False)  # fp32, eager, NCHW
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.9), weight_decay=0.0)
        crit = losses.create({"psnr": 1.0}).to(self.device)

        def step(x, y):
            opt.zero_grad()
            loss, _ = crit(model(x), y)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 0.01)
            opt.step()
        return self._cycle(step)

    def _platform(self, trial):
        from platform.train.loop import train_step

        return self._cycle(lambda x, y: train_step(trial, x, y))

    def add_compiled(self) -> None:
        """The platform's trial with ``torch.compile`` (``--compile-backend``) as a contender."""
        from platform.train.loop import build_trial

        trial = build_trial(self.config, self.session)
        trial.model = torch.compile(trial.model, backend=self.args.compile_backend)
        self.steps[COMPILED] = self._platform(trial)

    def warm_up(self, name: str) -> dict:
        """Untimed warm-up steps (kernels, optimiser state, compilation): seconds and peak memory."""
        t0 = time.perf_counter()
        with PeakMemory(self.device) as mem:
            for _ in range(max(1, self.args.warmup)):
                self.steps[name]()
            sync(self.device)
        return {"warmup_s": time.perf_counter() - t0, "peak_mem_mb": mem.value / 2**20}

    def measure(self, names, deadline: float | None = None) -> dict[str, list[float]]:
        return interleave({n: self.steps[n] for n in names}, self.args.rounds, self.args.round_steps, self.device,
                          deadline)

    def flops_per_step(self) -> float:
        """FLOPs of one training step of the platform (forward + backward), counted once."""
        from torch.utils.flop_counter import FlopCounterMode

        with FlopCounterMode(display=False) as fc:
            self.steps["platform"]()
        return float(fc.get_total_flops())

    def device_name(self) -> str:
        return torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else "cpu"


def _rows(times: dict[str, list[float]], info: dict, batch: int, flops: float, peak: float | None) -> list[dict]:
    rows = []
    for name, seconds in times.items():
        sps = 1.0 / statistics.median(seconds)
        rows.append({"name": name, "steps_per_s": sps, "steps_per_s_min": 1.0 / max(seconds),
                     "steps_per_s_max": 1.0 / min(seconds), "images_per_s": sps * batch, "rounds": len(seconds),
                     **info[name], "tflops": flops * sps / 1e12, "mfu": flops * sps / peak if peak else None})
    return rows


def _ratios(times: dict[str, list[float]], pairs) -> list[dict]:
    return [{"name": f"{a} / {b}", **speed_ratio(times, a, b)} for a, b in pairs if a in times and b in times]


def run(args, deadline: float | None = None, on_progress=None, before_compile=None) -> dict:
    """Measure the eager contenders, then (``--compile``, time allowing) the compiled one.

    ``deadline`` (``time.time()``) bounds the rounds and skips the compiled contender when less
    than ``--compile-min-s`` seconds are left; ``on_progress(result)`` is called with the eager
    figures before compiling, ``before_compile(bench, result)`` too (the GPU suite profiles there).
    """
    threads = args.threads or (1 if args.device == "cpu" else None)
    if threads:
        torch.set_num_threads(threads)
    bench = TrainBench(args)
    info = {name: bench.warm_up(name) for name in EAGER}
    times = bench.measure(EAGER, deadline)
    flops = bench.flops_per_step()
    peak = bf16_peak(bench.device_name()) if bench.device.type == "cuda" else None
    result = {"settings": settings(args), "device_name": bench.device_name(), "flops_per_step": flops,
              "peak_flops": peak, "rows": _rows(times, info, args.batch, flops, peak),
              "ratios": _ratios(times, [("platform", "bare"), ("platform", "reference")]), "compile": None}
    for hook in (on_progress, before_compile):
        if hook:
            hook(bench, result)
    if args.compile:
        result["compile"] = _compiled(bench, args, info, deadline, flops, peak)
    return result


def _compiled(bench: TrainBench, args, info: dict, deadline: float | None, flops: float, peak) -> dict:
    if deadline is not None and deadline - time.time() < args.compile_min_s:
        return {"status": f"out of time (compiling needs about {args.compile_min_s:.0f} s)"}
    try:
        bench.add_compiled()
        info[COMPILED] = bench.warm_up(COMPILED)  # compiles: outside the timed rounds
    except Exception as exc:  # e.g. no C compiler for Triton: the eager figures stand
        log.warning("torch.compile failed: %s", exc)
        return {"status": f"failed: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}"}
    log.info("torch.compile warm-up: %.1f s", info[COMPILED]["warmup_s"])
    times = bench.measure(("bare", "platform", COMPILED), deadline)
    return {"status": "ok", "rows": _rows({COMPILED: times[COMPILED]}, info, args.batch, flops, peak),
            "ratios": _ratios(times, [(COMPILED, "platform"), (COMPILED, "bare")])}


def settings(args) -> dict:
    return {k: getattr(args, k) for k in ("model", "size", "options", "crop", "batch", "device", "rounds",
                                          "round_steps", "warmup", "compile")} | {"threads": torch.get_num_threads()}


def format_results(result: dict) -> str:
    s = result["settings"]
    rows = list(result["rows"])
    ratios = list(result["ratios"])
    comp = result.get("compile") or {}
    rows += comp.get("rows", [])
    ratios += comp.get("ratios", [])
    head = (f"train step: {s['model']}/{s['size']} {s['options'] or ''} crop {s['crop']} batch {s['batch']}, "
            f"{result['device_name']} ({s.get('threads')} CPU threads); median of {s['rounds']} interleaved rounds "
            f"of {s['round_steps']} steps (after {s['warmup']} warm-up)")
    table = md_table(["loop", "steps/s", "min-max", "images/s", "peak MB", "warm-up s", "TFLOP/s", "MFU"],
                     [[r["name"], r["steps_per_s"], f"{r['steps_per_s_min']:.3g}-{r['steps_per_s_max']:.3g}",
                       r["images_per_s"], r["peak_mem_mb"], r["warmup_s"], r["tflops"],
                       f"{100 * r['mfu']:.1f}%" if r.get("mfu") is not None else None] for r in rows])
    ratio_table = md_table(["ratio (steps/s)", "median", "per-round min-max", "rounds"],
                           [[r["name"], r["ratio"], f"{r['round_min']:.3f}-{r['round_max']:.3f}", r["rounds"]]
                            for r in ratios])
    extra = [f"torch.compile: {comp['status']}"] if comp and comp.get("status") != "ok" else []
    return "\n\n".join([head, table, ratio_table, *extra])


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m platform.bench train", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="nafnet")
    p.add_argument("--size", default="small")
    p.add_argument("--options", default=None, help='JSON of model options, e.g. \'{"width": 32}\'')
    p.add_argument("--crop", type=int, default=256)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=("cpu", "cuda"))
    p.add_argument("--rounds", type=int, default=7, help="interleaved rounds (default 7)")
    p.add_argument("--round-steps", type=int, default=3, help="steps of each contender per round (default 3)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps of each contender first (default 2)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads (default: 1 on a CPU, where OpenMP threads waiting for each other on a "
                        "shared machine make the figures swing; torch's default with CUDA)")
    p.add_argument("--compile", action="store_true", help="add the platform's trial under torch.compile")
    p.add_argument("--compile-backend", default="inductor", help="torch.compile backend (default inductor)")
    p.add_argument("--compile-min-s", type=float, default=90.0, help=argparse.SUPPRESS)
    return p


def check_args(args) -> None:
    if args.threads is not None and args.threads < 1:
        raise ConfigError(f"--threads is {args.threads}; give a positive number of CPU threads.")
    for name in ("crop", "batch", "rounds", "round_steps"):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} is {getattr(args, name)}; give a positive number.")


@cli_main
def main(argv=None) -> int:
    logging.basicConfig(level=logging.WARNING)
    args = parser().parse_args(argv)
    check_args(args)
    print(format_results(run(args)))
    return 0
