"""``python -m platform.bench train``: the trainer against a bare loop and NAFNet's reference recipe.

All three run in one process on the same model, the same data (the sample set's random crops)
and the same PSNR loss and AdamW optimiser:

1. **bare**: a loop written for the benchmark (forward, loss, backward, step; nothing else);
2. **reference**: NAFNet's released recipe (fp32, eager, AdamW betas (0.9, 0.9), PSNR loss,
   gradient clipping at 0.01 as in BasicSR's ``use_grad_clip``);
3. **platform**: :func:`platform.train.loop.train_step` on a trial built by ``build_trial``
   exactly as a search runs it, with every speed-up it applies on the device (bf16 autocast,
   ``channels_last`` and fused AdamW on CUDA; ``--compile`` adds ``torch.compile``).

It prints steps/s, images/s, peak memory and the ratios platform/bare and platform/reference;
on CUDA also the achieved FLOP/s and MFU against the device's dense bf16 peak, with the model's
FLOPs counted by ``torch.utils.flop_counter`` on one training step (forward + backward).
"""

from __future__ import annotations

import argparse
import json
import logging
import time

import torch

from platform.bench._measure import PeakMemory, bf16_peak, sync
from platform.errors import ConfigError, cli_main

log = logging.getLogger(__name__)

def _config(args) -> dict:
    from platform.config import load_spec

    options = json.loads(args.options) if args.options else {}
    steps = args.steps + args.warmup
    overrides = {
        "task": {"data": "sample:vfx_grade", "crop": args.crop, "batch_size": args.batch,
                 "crops_per_epoch": steps * args.batch, "val_holdout": 2},
        "model": {"architecture": args.model, "size": args.size, "options": options},
        "optimizer": {"lr": 1e-3, "betas": [0.9, 0.9], "weight_decay": 0.0, "grad_clip": 0.01},
        "schedule": {"warmup_epochs": 0},
        "train": {"epochs": 1, "precision": "auto" if args.device == "cuda" else "fp32",
                  "compile": bool(args.compile)},
    }
    spec = load_spec("nafnet_fewshot", overrides=overrides)
    spec.config["loss"] = {"psnr": 1.0}  # NAFNet's recipe, for all three contenders
    from platform.data.samples import resolve_data

    spec.config["task"]["data"] = str(resolve_data(spec.config["task"]["data"]))
    return spec.config


def _time_steps(step_fn, batches, warmup: int, device) -> tuple[float, float]:
    """(seconds for the counted steps, warm-up seconds)."""
    t0 = time.perf_counter()
    for x, y in batches[:warmup]:
        step_fn(x, y)
    sync(device)
    t1 = time.perf_counter()
    for x, y in batches[warmup:]:
        step_fn(x, y)
    sync(device)
    return time.perf_counter() - t1, t1 - t0


def run(args) -> list[dict]:
    from platform import losses
    from platform.train.loop import build_model, build_trial, train_step
    from platform.train.session import Session

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for but no CUDA device is visible; use --device cpu.")
    config = _config(args)
    session = Session()
    session.device = lambda: device  # the benchmark picks the device explicitly
    trial = build_trial(config, session)
    trial.dataset.set_epoch(0)
    # The same batches for every contender, materialised once (data cost excluded from all three).
    batches = [(x.to(device), y.to(device)) for x, y in trial.loader]
    n_img = args.steps * args.batch
    results = []

    def contender(name, build):
        torch.manual_seed(0)
        step = build()
        with PeakMemory(device) as mem:
            seconds, warm = _time_steps(step, batches, args.warmup, device)
        results.append({"name": name, "steps_per_s": args.steps / seconds, "images_per_s": n_img / seconds,
                        "peak_mem_mb": mem.value / 2**20, "warmup_s": warm})
        log.info("%s: %.2f steps/s", name, args.steps / seconds)

    def bare():
        model = build_model(trial.config).to(device)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.9), weight_decay=0.0)
        crit = losses.create({"psnr": 1.0}).to(device)

        def step(x, y):
            loss, _ = crit(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return step

    def reference():
        model = build_model(trial.config).to(device)  # fp32, eager, NCHW
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.9), weight_decay=0.0)
        crit = losses.create({"psnr": 1.0}).to(device)

        def step(x, y):
            opt.zero_grad()
            loss, _ = crit(model(x), y)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 0.01)
            opt.step()
        return step

    def platform_trainer():
        return lambda x, y: train_step(trial, x, y)

    contender("bare", bare)
    contender("reference", reference)
    contender("platform", platform_trainer)

    if device.type == "cuda":
        from torch.utils.flop_counter import FlopCounterMode

        x, y = batches[0]
        with FlopCounterMode(display=False) as fc:
            train_step(trial, x, y)
        flops = fc.get_total_flops()
        peak = bf16_peak(torch.cuda.get_device_name())
        for r in results:
            r["tflops"] = flops * r["steps_per_s"] / 1e12
            r["mfu"] = (flops * r["steps_per_s"] / peak) if peak else None
    return results


def format_results(results: list[dict], args) -> str:
    by = {r["name"]: r for r in results}
    head = f"{'loop':<10} {'steps/s':>9} {'images/s':>9} {'peak MB':>9} {'warm-up s':>9}"
    extra = any("tflops" in r for r in results)
    if extra:
        head += f" {'TFLOP/s':>8} {'MFU':>6}"
    lines = [f"model {args.model}/{args.size} crop {args.crop} batch {args.batch} device {args.device} "
             f"steps {args.steps} (after {args.warmup} warm-up)", head]
    for r in results:
        line = (f"{r['name']:<10} {r['steps_per_s']:>9.3f} {r['images_per_s']:>9.2f} {r['peak_mem_mb']:>9.1f} "
                f"{r['warmup_s']:>9.2f}")
        if extra:
            mfu = f"{100 * r['mfu']:.1f}%" if r.get("mfu") is not None else "n/a"
            line += f" {r['tflops']:>8.1f} {mfu:>6}"
        lines.append(line)
    p = by["platform"]["steps_per_s"]
    lines.append(f"platform / bare      = {p / by['bare']['steps_per_s']:.3f}")
    lines.append(f"platform / reference = {p / by['reference']['steps_per_s']:.3f}")
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m platform.bench train", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="nafnet")
    p.add_argument("--size", default="small")
    p.add_argument("--options", default=None, help='JSON of model options, e.g. \'{"width": 32}\'')
    p.add_argument("--crop", type=int, default=256)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=("cpu", "cuda"))
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--compile", action="store_true", help="torch.compile the platform's model (CUDA)")
    return p


@cli_main
def main(argv=None) -> int:
    logging.basicConfig(level=logging.WARNING)
    args = parser().parse_args(argv)
    print(format_results(run(args), args))
    return 0
