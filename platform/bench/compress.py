"""``python -m platform.bench compress``: what pruning and int8 buy and cost on the vfx_grade shot.

A model (default: a U-Net, 16 base filters) is trained briefly with the common trainer on the
bundled ``vfx_grade`` sample without its two test frames (those of ``bench quality``), then:

* ``fp32``: the trained network in PyTorch;
* ``pruned S``: structurally pruned at each ``--sparsities`` value and fine-tuned ``--finetune-epochs``
  epochs at ``--finetune-lr`` (``platform.compress.finetune``); ``fp32 +E`` is the unpruned network given the same
  extra epochs, so the pruned rows are compared with as much training;
* ``onnx fp32``, ``onnx int8-static`` (QDQ, calibrated on the training frames' crops) and
  ``onnx int8-dynamic`` (``platform.export.quantize_int8``) of the trained network;
* ``unstructured S``: magnitude-zeroed weights (same dense shapes), timed only to show it buys nothing.

For each: PSNR on the two held-out frames at native resolution (the task's own validation),
ms per 1080p frame on this CPU (the project's inference benchmark for PyTorch, an ONNX Runtime
session for ONNX; one frame after a warm-up), parameters and MACs per 1080p frame. Prints the
table and the Pareto front; ``--out FILE`` writes the points as ``compress/pareto.json`` content.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from platform.bench._measure import md_table

log = logging.getLogger(__name__)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m platform.bench compress", description=__doc__.split("\n\n")[0])
    p.add_argument("--architecture", default="unet")
    p.add_argument("--size", default="small")
    p.add_argument("--options", default='{"base_filters": 16}', help="JSON architecture options")
    p.add_argument("--epochs", type=int, default=40, help="training epochs of the model (brief)")
    p.add_argument("--crops-per-epoch", type=int, default=32)
    p.add_argument("--crop", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--sparsities", default="0.25,0.5,0.75")
    p.add_argument("--finetune-epochs", type=int, default=10)
    p.add_argument("--finetune-lr", type=float, default=None, help="fine-tuning learning rate (default: --lr / 10)")
    p.add_argument("--unstructured", type=float, default=0.5, help="magnitude-pruning fraction timed (0: skip)")
    p.add_argument("--resolution", default="1080p", help="frame size timed (1080p, 4k or WIDTHxHEIGHT)")
    p.add_argument("--frames", type=int, default=2, help="timed frames per model (mean; after a warm-up)")
    p.add_argument("--out", type=Path, default=None, help="write the points as JSON (compress/pareto.json format)")
    return p


def train_config(args, data: Path) -> dict:
    from platform.config import load_spec

    overrides = {
        "task": {"data": str(data), "crop": args.crop, "crops_per_epoch": args.crops_per_epoch, "batch_size": 4,
                 "val_holdout": 2},
        "model": {"architecture": args.architecture, "size": args.size, "options": json.loads(args.options)},
        "loss": {"l1": 0.0, "lpips": 0.0, "laplacian": 0.0, "ssim": 0.0, "mse": 1.0},
        "optimizer": {"lr": args.lr, "betas": [0.9, 0.99]},
        "schedule": {"warmup_epochs": 1},
        "train": {"epochs": args.epochs, "precision": "fp32", "image_every": 1000},
    }
    return load_spec("nafnet_fewshot", quick=False, overrides=overrides).config


class OnnxModule(torch.nn.Module):
    """An exported ONNX file as a module of the platform's model range ([-1, 1] in and out), so
    the task's own validation scores it like the PyTorch network."""

    def __init__(self, path: Path):
        super().__init__()
        from platform.compress.cost import onnx_session

        self.session = onnx_session(path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        image = ((x.detach().float().cpu().numpy() + 1.0) / 2.0).astype(np.float32)
        out = self.session.run(None, {"image": np.ascontiguousarray(image)})[0]
        return torch.from_numpy(out) * 2.0 - 1.0


def export_variants(model, config, tmp: Path, calibration: list[np.ndarray]) -> dict[str, Path]:
    from platform.compress.quantize import quantize_static_int8
    from platform.export import export_onnx, prepare, quantize_int8

    module, min_side = prepare(model, config, tlc=False)
    fp32 = tmp / "fp32.onnx"
    export_onnx(module, fp32, 3, min_side, {})
    return {"onnx fp32": fp32,
            "onnx int8-static": quantize_static_int8(fp32, tmp / "static.onnx", calibration),
            "onnx int8-dynamic": quantize_int8(fp32, tmp / "dynamic.onnx")}


def calibration_crops(data: Path) -> list[np.ndarray]:
    from platform.compress.quantize import calibration_frames

    return calibration_frames(data / "input")


def measure_torch(name: str, model, config, test, size: tuple[int, int], frames: int, role: str = "student") -> dict:
    from platform import floors
    from platform.compress.cost import count_macs, count_params, torch_ms_per_frame

    log.info("measuring %s", name)
    return {"name": name, "role": role, "quality": floors.score(test, model)["val_psnr"],
            "ms_per_frame": torch_ms_per_frame(model, config, *size, frames=frames), "params": count_params(model),
            "nonzero": count_params(model, nonzero=True), "macs": count_macs(model, *size)}


def measure_onnx(name: str, path: Path, test, size: tuple[int, int], frames: int, params: int, macs: float) -> dict:
    from platform import floors
    from platform.compress.cost import onnx_ms_per_frame

    log.info("measuring %s", name)
    return {"name": name, "role": "student", "quality": floors.score(test, OnnxModule(path))["val_psnr"],
            "ms_per_frame": onnx_ms_per_frame(path, *size, frames=frames), "params": params, "nonzero": params, "macs": macs,
            "mb": path.stat().st_size / 1e6}


def run(args, tmp: Path) -> list[dict]:
    from platform.bench.quality import TEST_FRAMES, split_sample, test_task
    from platform.compress.finetune import prune_and_finetune
    from platform.compress.prune import prune_unstructured
    from platform.frame_size import parse_resolution
    from platform.pyfunc import build_from_weights
    from platform.train.loop import CHECKPOINT_FILE, train_loop
    from platform.train.session import Session

    _, w, h = parse_resolution(args.resolution, "--resolution")
    search_dir, whole = split_sample(tmp / "data", list(TEST_FRAMES))
    test = test_task(whole, list(TEST_FRAMES))
    config = train_config(args, search_dir)
    session = Session(tmp / "teacher")
    log.info("training %s/%s for %d epochs", args.architecture, args.size, args.epochs)
    train_loop(config, session)
    model, config = build_from_weights(session.checkpoints[-1] / CHECKPOINT_FILE)
    size, n = (w, h), args.frames
    rows = [measure_torch("fp32", model, config, test, size, n, role="teacher")]
    sparsities = [float(s) for s in args.sparsities.split(",") if s.strip()]
    # Fine-tuning continues from trained weights: a tenth of the training rate, no warm-up.
    tuning = {"optimizer": {"lr": args.finetune_lr or args.lr / 10}, "schedule": {"warmup_epochs": 0}}
    for s in [0.0, *sparsities]:  # 0.0: the same fine-tuning without pruning, the fair reference
        out = prune_and_finetune(model, config, s, args.finetune_epochs, tmp / f"prune-{s}", tuning)
        label = f"pruned {s:.2f} +{args.finetune_epochs}ep" if s else f"fp32 +{args.finetune_epochs}ep"
        rows.append(measure_torch(label, out.model, out.config, test, size, n))
    for name, path in export_variants(model, config, tmp, calibration_crops(search_dir)).items():
        rows.append(measure_onnx(name, path, test, size, n, rows[0]["params"], rows[0]["macs"]))
    if args.unstructured > 0:
        rows.append(measure_torch(f"unstructured {args.unstructured:.2f}", prune_unstructured(model, args.unstructured),
                                  config, test, size, n))
    return rows


def format_rows(rows: list[dict], resolution: str) -> str:
    from platform.report.pareto import Point, table

    points = [Point(r["name"], r["quality"], r["ms_per_frame"], r["params"], r["macs"], r["role"]) for r in rows]
    headers, body = table(points, "test PSNR (dB)")
    headers = [x.replace("1080p", resolution) for x in headers] + ["non-zero params (M)"]
    # PSNR to 0.01 dB (the table helper keeps 3 significant digits); the change signed
    body = [[b[0], b[1], f"{b[2]:.2f}", f"{b[3]:+.2f}", *b[4:], r["nonzero"] / 1e6] for b, r in zip(body, rows)]
    return md_table(headers, body)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    from platform.logs import quiet_third_party

    quiet_third_party()
    os.environ.setdefault("PLATFORM_DATA_DIR", str((Path.cwd() / ".cache" / "data").resolve()))
    with tempfile.TemporaryDirectory(prefix="bench-compress-") as tmp:
        rows = run(args, Path(tmp))
    print(f"device: cpu, {torch.get_num_threads()} threads; test PSNR on the 2 held-out vfx_grade frames")
    print(format_rows(rows, args.resolution))
    if args.out:
        from platform.report.pareto import Point, points_json

        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(points_json([Point(r["name"], r["quality"], r["ms_per_frame"], r["params"], r["macs"],
                                               r["role"]) for r in rows], "val_psnr", "max"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
