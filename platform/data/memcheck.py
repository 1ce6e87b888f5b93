"""Measure resident memory of few-shot training on a 4K data set (crops, not frames, per step).

    python -m platform.data.memcheck [--pairs 10] [--width 3840 --height 2160] [--steps 64]

Writes ``pairs`` 4K 8-bit PNG pairs to a temporary folder, then trains the img2img task with a
small network through the common trainer and prints the peak resident set size
(``resource.getrusage``) after import, after loading the data and after training, next to the
size of the pixels themselves. Not a test: figures depend on the machine.
"""

from __future__ import annotations

import argparse
import logging
import resource
import tempfile
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux reports KiB


def current_rss_mib() -> float:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * resource.getpagesize() / 2**20
    except OSError:
        return float("nan")


def _write_set(folder: Path, pairs: int, width: int, height: int) -> None:
    from platform.data.formats import write_array

    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    for i in range(pairs):
        rng = np.random.default_rng(i)
        base = np.stack([(np.sin(xx / (40 + 7 * i)) + 1) / 2, (np.cos(yy / (55 + 3 * i)) + 1) / 2,
                         ((xx + yy) % 512) / 512], axis=2)
        noisy = np.clip(base + 0.05 * rng.standard_normal(base.shape[:2] + (1,)).astype(np.float32), 0, 1)
        write_array(folder / "input" / f"{i:02d}.png", (noisy * 255).astype(np.uint8))
        write_array(folder / "target" / f"{i:02d}.png", (base * 255).astype(np.uint8))


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=10)
    parser.add_argument("--width", type=int, default=3840)
    parser.add_argument("--height", type=int, default=2160)
    parser.add_argument("--crop", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=64, help="training steps per epoch")
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args(argv)
    import torch

    from platform.config import load_spec
    from platform.train.loop import train_loop
    from platform.train.session import Session

    def note(key: str, value: float) -> None:
        figures[key] = value
        print(f"{key:28s} {value:10.1f}", flush=True)

    figures: dict[str, float] = {}
    note("after_import_peak_mib", peak_rss_mib())
    with tempfile.TemporaryDirectory(prefix="memcheck-") as tmp:
        folder = Path(tmp) / "data"
        # Written by a child process, so that this process's peak is the training's alone.
        import multiprocessing

        child = multiprocessing.get_context("spawn").Process(
            target=_write_set, args=(folder, args.pairs, args.width, args.height))
        child.start()
        child.join()
        if child.exitcode:
            raise SystemExit(f"writing the data set failed (exit code {child.exitcode})")
        space = Path(tmp) / "space.yaml"
        space.write_text(
            "name: memcheck\n"
            f"task: {{name: img2img, data: {folder}, crop: {args.crop}, crops_per_epoch: {args.steps * args.batch}, "
            f"batch_size: {args.batch}, val_holdout: 1, val_max_side: 1024}}\n"
            "model: {architecture: unet, size: small, options: {base_filters: 8}}\n"
            "loss: {l1: 1.0}\n"
            f"train: {{epochs: {args.epochs}, precision: fp32, image_every: {args.epochs}}}\n"
            "schedule: {warmup_epochs: 0}\n")
        config = load_spec(space).config
        from platform.tasks import create

        create("img2img", config["task"], seed=0)  # loads the pairs (cached per process)
        note("after_loading_current_mib", current_rss_mib())
        note("after_loading_peak_mib", peak_rss_mib())
        class MemSession(Session):
            def report(self, metrics, checkpoint_dir):  # RSS at every epoch: flat = bounded
                note(f"epoch_{len(self.reports) + 1}_current_mib", current_rss_mib())
                super().report(metrics, checkpoint_dir)

        train_loop(config, MemSession(checkpoint_root=Path(tmp) / "ckpt"))
        note("after_training_current_mib", current_rss_mib())
        note("after_training_peak_mib", peak_rss_mib())
    pixels = 2 * args.pairs * args.width * args.height * 3
    note("pixels_uint8_mib", pixels / 2**20)
    note("pixels_float32_mib", 4 * pixels / 2**20)
    note("torch_threads", torch.get_num_threads())
    return figures


if __name__ == "__main__":
    main()
