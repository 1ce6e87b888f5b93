"""Full-resolution inference speed: frames/s per model size, precision and frame size.

::

    python -m platform.bench predict                                   # nafnet small, fp32, 1080p + 4K
    python -m platform.bench predict --sizes small,base,large --precisions fp32,bf16 --frames 3
    python -m platform.bench predict --device cuda --resolutions 1080p,4k,8k

Each setting runs the same path as ``python -m platform.predict`` (``Predictor.run``: padding,
automatic tiling when a frame does not fit in memory, NAFNet TLC for a ``--crop`` training crop)
on a real photo tiled up to the frame size, after one untimed warm-up frame; disk I/O is not
included. Networks are untrained (speed does not depend on the weights). The default run is
short: one frame per setting.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from dataclasses import dataclass

import numpy as np
import torch

import platform as _platform
from platform.errors import ConfigError
from platform.frame_size import RESOLUTIONS, parse_resolution

log = logging.getLogger(__name__)


@dataclass
class Row:
    architecture: str
    size: str
    params_m: float
    precision: str
    resolution: str
    tile: str
    frames: int
    seconds_per_frame: float
    peak_gpu_gib: float | None

    @property
    def fps(self) -> float:
        return 1.0 / self.seconds_per_frame if self.seconds_per_frame > 0 else float("inf")


def photo_frame(width: int, height: int) -> np.ndarray:
    """A real photo (scikit-image's astronaut) tiled to ``width`` x ``height``, float32 [0, 1]."""
    import skimage.data

    photo = skimage.data.astronaut().astype(np.float32) / 255.0
    reps = (-(-height // photo.shape[0]), -(-width // photo.shape[1]), 1)
    return np.ascontiguousarray(np.tile(photo, reps)[:height, :width])


def build(architecture: str, size: str, options: dict, crop: int | None) -> tuple[torch.nn.Module, dict]:
    from platform import models

    kwargs = {"in_channels": 3, "out_channels": 3}
    model = models.create(architecture, size=size, **kwargs, **options)
    config = {"task": {"name": "img2img", "crop": crop}, "model": {"architecture": architecture, "size": size,
                                                                   "options": options},
              "_model_kwargs": kwargs}
    return model.eval(), config


def bench_setting(model: torch.nn.Module, config: dict, device: torch.device, precision: str, width: int,
                  height: int, frames: int, tile: int | None, tta: bool, tlc: bool) -> tuple[float, str, float | None]:
    """(seconds per frame, tile used, peak GPU GiB) for one setting."""
    from platform.inference import InferenceOptions
    from platform.tasks import predictor as task_predictor

    predictor = task_predictor(model, config, device, InferenceOptions(precision=precision, tile=tile, tta=tta, tlc=tlc))
    frame = photo_frame(width, height)
    predictor.run(photo_frame(256, 256))  # warm-up: kernels, allocator, TLC kernel sizes
    x, _ = predictor.prepare(frame)
    chosen = predictor.tile_for(x)  # what run() will use for this frame size
    del x
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    for _ in range(frames):
        predictor.run(frame)  # returns host arrays: the device is synchronised
    seconds = (time.perf_counter() - start) / frames
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return seconds, (str(chosen) if chosen < max(width, height) else "whole"), peak


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    cpu = _platform.processor() or _platform.machine()
    return f"cpu: {cpu}, {torch.get_num_threads()} threads, {os.cpu_count()} cores"


COLUMNS = (("architecture", 12), ("size", 6), ("params", 8), ("precision", 9), ("resolution", 16), ("tile", 6),
           ("frames", 6), ("s/frame", 9), ("frames/s", 9), ("peak GPU", 10))


def _line(cells: list[str]) -> str:
    return "  ".join(c.ljust(w) for c, (_, w) in zip(cells, COLUMNS)).rstrip()


def format_header() -> str:
    return _line([name for name, _ in COLUMNS])


def format_row(r: Row) -> str:
    return _line([r.architecture, r.size, f"{r.params_m:.2f}M", r.precision, r.resolution, r.tile, str(r.frames),
                  f"{r.seconds_per_frame:.3f}", f"{r.fps:.3f}",
                  f"{r.peak_gpu_gib:.2f} GiB" if r.peak_gpu_gib is not None else "-"])


def format_table(rows: list[Row]) -> str:
    return "\n".join([format_header(), *(format_row(r) for r in rows)])


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m platform.bench predict", description=__doc__.split("\n\n")[0])
    p.add_argument("--architecture", default="nafnet")
    p.add_argument("--sizes", default="small", help="comma-separated model sizes (default: small)")
    p.add_argument("--precisions", default="fp32", help="comma-separated: fp32, bf16, fp16 (default: fp32)")
    p.add_argument("--resolutions", default="1080p,4k",
                   help=f"comma-separated names ({', '.join(RESOLUTIONS)}) or WIDTHxHEIGHT (default: 1080p,4k)")
    p.add_argument("--frames", type=int, default=1, help="timed frames per setting (default: 1)")
    p.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: cuda if available")
    p.add_argument("--tile", type=int, default=0, help="tile side (default: automatic from free memory)")
    p.add_argument("--crop", type=int, default=256, help="training crop for NAFNet's TLC (default 256)")
    p.add_argument("--no-tlc", dest="tlc", action="store_false")
    p.add_argument("--tta", action="store_true")
    p.add_argument("--options", default="{}", help='JSON architecture options, e.g. \'{"width": 16}\'')
    p.add_argument("--json", dest="json_out", default=None, help="also write the rows to this JSON file")
    return p


def run(argv: list[str] | None = None, report=print) -> list[Row]:
    from platform.inference import check_precision
    from platform.models._utils import count_params
    from platform.predict import resolve_device

    args = build_parser().parse_args(argv)
    if args.frames < 1:
        raise ConfigError(f"--frames is {args.frames}; give at least 1.")
    try:
        options = json.loads(args.options)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--options is not valid JSON ({exc}): {args.options!r}") from None
    if not isinstance(options, dict):
        raise ConfigError(f"--options must be a JSON object, got {args.options!r}.")
    device = resolve_device(args.device)
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    precisions = [check_precision(p.strip()) for p in args.precisions.split(",") if p.strip()]
    resolutions = [parse_resolution(r) for r in args.resolutions.split(",") if r.strip()]
    report(f"device    {describe_device(device)}; torch {torch.__version__}")
    report(format_header())  # rows are printed as they are measured (a 4K frame on a CPU takes minutes)
    rows: list[Row] = []
    for size in sizes:
        model, config = build(args.architecture, size, options, args.crop if args.tlc else None)
        params = count_params(model) / 1e6
        for precision in precisions:
            if precision == "fp16" and device.type != "cuda":
                log.warning("fp16 autocast needs CUDA; skipping fp16 on the CPU")
                continue
            for name, w, h in resolutions:
                seconds, tile, peak = bench_setting(model, config, device, precision, w, h, args.frames,
                                                    args.tile or None, args.tta, args.tlc)
                rows.append(Row(args.architecture, size, params, precision, f"{name} {w}x{h}", tile, args.frames,
                                seconds, peak))
                report(format_row(rows[-1]))
    if args.json_out:
        with open(args.json_out, "w") as fh:
            json.dump([{**r.__dict__, "fps": r.fps} for r in rows], fh, indent=1)
    return rows


def main(argv: list[str] | None = None) -> int:
    from platform.errors import cli_main

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return cli_main(lambda: (run(argv, report=lambda line: print(line, flush=True)), 0)[1])()
