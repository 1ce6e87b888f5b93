"""``python -m platform.bench models``: forward + backward time and peak memory of every model.

For each registered architecture and size (the zoo's, not test doubles): one training-shaped
step, ``model(x)`` then ``backward`` of a mean-square of the output, on a ``batch x 3 x crop x
crop`` input, timed over ``--steps`` steps after ``--warmup``; bf16 autocast and
``channels_last`` on CUDA (as the trainer runs), fp32 on CPU. Prints ms per step, images/s and
peak memory (CUDA ``max_memory_allocated``; not measured on a CPU) with the parameter count. The issue's reference setting is ``--device cuda --crop 256 --batch 8``; on a CPU use
small crops (``--crop 64 --batch 2``).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import time

import torch

from platform.bench._measure import PeakMemory, sync
from platform.errors import ConfigError, cli_main

log = logging.getLogger(__name__)


def zoo() -> list[tuple[str, str | None]]:
    """(name, size) of every model the platform ships (test-registered doubles excluded)."""
    from platform.models import MODELS

    out = []
    for name in MODELS.available():
        if not MODELS.get(name).__module__.startswith("platform.models."):
            continue
        for size in MODELS.meta(name)["sizes"] or (None,):
            out.append((name, size))
    return out


def _build(name: str, size: str | None, crop: int) -> torch.nn.Module:
    from platform.models import MODELS, create

    fixed = False
    if MODELS.get(name).__module__ == "platform.models.segmentation":
        from platform.models.segmentation import ENCODERS

        # CoAtNet / MaxViT encoders are built for their input size (the others take any multiple of 32).
        fixed = size in ENCODERS and ENCODERS[size]["rule"] in ("exact", "multiple_img_size")
    return create(name, size=size, **({"img_size": crop} if fixed else {}))


def _loss(out) -> torch.Tensor:
    outs = out.values() if isinstance(out, dict) else [out]
    return sum(o.float().square().mean() for o in outs)


def measure(name: str, size: str | None, device: torch.device, crop: int, batch: int, steps: int,
            warmup: int) -> dict:
    precision = "bf16" if device.type == "cuda" else "fp32"
    model = _build(name, size, crop).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    model.train()
    x = torch.rand(batch, 3, crop, crop, device=device) * 2 - 1
    if device.type == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            out = model(x)
        _loss(out).backward()
        model.zero_grad(set_to_none=True)

    for _ in range(warmup):
        step()
    sync(device)
    # Peak memory on CUDA only: on a CPU its sampling thread would compete with the timed steps.
    with PeakMemory(device) if device.type == "cuda" else contextlib.nullcontext() as mem:
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        sync(device)
        seconds = time.perf_counter() - t0
    return {"model": name, "size": size or "-", "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
            "precision": precision, "ms_per_step": 1000 * seconds / steps, "images_per_s": steps * batch / seconds,
            "peak_mem_mb": mem.value / 2**20 if mem is not None else None}


def format_table(rows: list[dict], args) -> str:
    head = f"{'model':<22} {'size':<14} {'params M':>8} {'prec':>5} {'ms/step':>9} {'img/s':>8} {'peak MB':>9}"
    lines = [(f"forward+backward, batch {args.batch} x 3 x {args.crop}^2, device {args.device}, "
              f"{args.steps} steps after {args.warmup} warm-up"), head]
    for r in rows:
        if "error" in r:
            lines.append(f"{r['model']:<22} {r['size']:<14} failed: {r['error']}")
            continue
        lines.append(f"{r['model']:<22} {r['size']:<14} {r['params_m']:>8.2f} {r['precision']:>5} "
                     f"{r['ms_per_step']:>9.1f} {r['images_per_s']:>8.2f} "
                     + (f"{r['peak_mem_mb']:>9.0f}" if r["peak_mem_mb"] is not None else f"{'-':>9}"))
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m platform.bench models", description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default=None, help="comma-separated names (default: every zoo model)")
    p.add_argument("--sizes", default="all", help="all, default, or comma-separated sizes to keep")
    p.add_argument("--crop", type=int, default=256)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=("cpu", "cuda"))
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    return p


@cli_main
def main(argv=None) -> int:
    from platform.models import MODELS

    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    log.setLevel(logging.INFO)
    args = parser().parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for but no CUDA device is visible; use --device cpu.")
    pairs = zoo()
    if args.models:
        wanted = [m.strip() for m in args.models.split(",") if m.strip()]
        unknown = sorted(set(wanted) - {n for n, _ in pairs})
        if unknown:
            raise ConfigError(f"--models: unknown model(s) {', '.join(unknown)}; "
                              f"available: {', '.join(sorted({n for n, _ in pairs}))}.")
        pairs = [(n, s) for n, s in pairs if n in wanted]
    if args.sizes == "default":
        pairs = [(n, s) for n, s in pairs if s == MODELS.meta(n).get("default_size", s)]
    elif args.sizes != "all":
        keep = {s.strip() for s in args.sizes.split(",")}
        pairs = [(n, s) for n, s in pairs if s in keep or s is None]
    rows = []
    for i, (name, size) in enumerate(pairs, 1):
        log.info("[%d/%d] %s/%s", i, len(pairs), name, size)
        try:
            rows.append(measure(name, size, device, args.crop, args.batch, args.steps, args.warmup))
        except (RuntimeError, ConfigError) as exc:  # e.g. CUDA OOM for the largest sizes: keep the others
            rows.append({"model": name, "size": size or "-", "error": str(exc).splitlines()[0][:100]})
        if device.type == "cuda":
            torch.cuda.empty_cache()
    print(format_table(rows, args))
    return 0
