"""Few-shot paired image-to-image task (VFX looks, restoration, inpainting)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import numpy as np
import torch

from platform.data.augment import PairedAugment
from platform.data.grids import downscale, make_grid
from platform.data.io import apply_alpha, to_float
from platform.data.paired import CropDataset, Pair, from_model_range, load_pairs, to_model_range
from platform.data.samples import resolve_data
from platform.data.transfer import get_transfer
from platform.errors import DataError
from platform.tasks.base import (
    ValResult,
    option,
    predict_full,
    split_items,
    with_offline_copies,
)
from platform.tasks.registry import register_task

log = logging.getLogger(__name__)

__all__ = ["Img2ImgTask", "ValResult", "make_grid"]

_downscale = downscale  # historical name


def encode_items(items: list[Pair], transfer, where: str) -> list[Pair]:
    """Apply the task's transfer function to float images (integers are display-referred, kept).

    Warns once per file when float data lies outside the transfer's domain (it would be clipped).
    """
    out = []
    for p in items:
        arrays = []
        for what, arr in (("input", p.input), ("target", p.target)):
            if arr.dtype.kind != "f" and transfer.name == "identity":
                arrays.append(arr)
                continue
            x = to_float(arr)
            frac = transfer.out_of_domain(x)
            if frac > 0:
                lo, hi = transfer.domain
                log.warning("%s %s of %s: %.2f%% of the values lie outside [%g, %g], the domain of transfer %s; "
                            "they are clipped. Set task.transfer (e.g. {name: log, max_value: %g}).",
                            p.name, what, where, 100 * frac, lo, hi, transfer.describe(), float(x.max()))
            arrays.append(transfer.encode(x).astype(np.float32))
        out.append(Pair(p.name, arrays[0], arrays[1]))
    return out


@register_task("img2img", kind="img2img", metric="val_psnr", mode="max")
class Img2ImgTask:
    """Paired input/target folders; random crops for training, whole frames for validation.

    Images are held in memory as stored (8/16-bit integers, or float32 after the transfer
    function), so memory is about the size of the files' pixels; a training step only ever
    converts ``batch_size`` crops. Validation runs on every held-out frame at native
    resolution (tiled when large; ``val_max_side`` subsamples instead) and on the optional
    ``val_sequence`` (video or numbered frames), which also gives ``val_flicker``.
    """

    kind = "img2img"
    primary_metric = "val_psnr"
    mode = "max"
    metric_names = ("val_psnr", "val_ssim")
    photometric_on = "both"  # colour jitter on input and target alike (the mapping stays consistent)

    def __init__(self, config: dict, seed: int = 0):
        self.config = config
        self.seed = seed
        self.folder = resolve_data(config["data"])
        self.alpha = option(config, "alpha", "error")
        self.transfer = get_transfer(config.get("transfer"))
        pairs = load_pairs(self.folder, compact=True, alpha=self.alpha)
        pairs = encode_items(pairs, self.transfer, str(self.folder))
        self.train_pairs, self.val_pairs = split_items(pairs, config)
        self.channels = int(self.val_pairs[0].input.shape[2])
        self.sequences = _sequence_specs(config.get("val_sequence"), self.folder)
        if self.sequences:
            self.metric_names = (*self.metric_names, "val_flicker")

    def model_kwargs(self) -> dict:
        return {"in_channels": self.channels, "out_channels": self.channels}

    def default_loss(self) -> dict:
        return {"l1": 1.0}

    def train_dataset(self) -> CropDataset:
        aug = PairedAugment(self.config.get("augment"), target_kind="image", default_photometric_on=self.photometric_on)
        pairs = with_offline_copies(self.train_pairs, aug.config["offline_copies"])
        return CropDataset(pairs, crop=int(option(self.config, "crop")), length=int(option(self.config, "crops_per_epoch")),
                           seed=self.seed, augment=aug, target_kind="image", where=self.folder / "input")

    def example_input(self) -> np.ndarray:
        """A small real input (1 x 64 x 64 x C float32 in [0, 1]) for model signatures."""
        return to_float(self.val_pairs[0].input[:64, :64])[None].astype(np.float32)

    def decode_output(self, image: np.ndarray) -> np.ndarray:
        """A prediction in [0, 1] back to the data's values (the inverse transfer function)."""
        return np.asarray(self.transfer.decode(image), dtype=np.float32)

    def val_items(self) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
        max_side = option(self.config, "val_max_side")
        for p in self.val_pairs:
            x, y = to_float(p.input), to_float(p.target)
            if max_side:
                x, y = downscale(x, max_side), downscale(y, max_side)
            yield p.name, x, y

    def check_sequences(self) -> None:
        """Read the first frame pair of every validation sequence (the driver calls this before any
        trial starts, so an unreadable video or mismatched sizes fail once, not in every trial)."""
        for spec in self.sequences:
            next(iter(self.sequence_frames({**spec, "max_frames": 1})), None)

    def sequence_frames(self, spec: dict) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(input, target) float frames of one validation sequence, one pair at a time."""
        from platform.data.video import iter_frames

        kw = dict(start=int(spec.get("start", 0)), step=int(spec.get("step", 1)), max_frames=spec.get("max_frames"))
        max_side = option(self.config, "val_max_side")
        n = 0
        for fx, fy in zip(iter_frames(spec["input"], **kw), iter_frames(spec["target"], **kw)):
            x = apply_alpha(fx, self.alpha, spec["input"])
            y = apply_alpha(fy, self.alpha, spec["target"])
            if x.shape != y.shape:
                raise DataError(f"validation sequence {spec['input']} frame {n}: input is {x.shape[1]}x{x.shape[0]}"
                                f"x{x.shape[2]} but target {spec['target']} is {y.shape[1]}x{y.shape[0]}x{y.shape[2]}.")
            x, y = to_float(x), to_float(y)
            if self.transfer.name != "identity" or fx.dtype.kind == "f":
                x, y = self.transfer.encode(x).astype(np.float32), self.transfer.encode(y).astype(np.float32)
            if max_side:
                x, y = downscale(x, max_side), downscale(y, max_side)
            n += 1
            yield x, y
        if n < 2:
            raise DataError(f"validation sequence {spec['input']} gave {n} frame(s); a sequence needs at least 2 "
                            "(and as many target frames).")

    @torch.no_grad()
    def validate(self, model: torch.nn.Module, device: torch.device, precision: str = "fp32",
                 rank: int = 0, world_size: int = 1, want_grid: bool = False, lpips_fn=None) -> ValResult:
        """Whole-frame validation of this worker's share of the held-out pairs (and sequences).

        Returns metric *sums* and a count so that the caller can reduce across workers.
        Still frames are dealt round-robin to the workers; sequences run on rank 0 (flicker
        needs consecutive frames). ``val_flicker`` is the mean over sequences of
        :func:`platform.metrics.temporal_flicker`, stored as ``flicker * global count`` so that
        the trainer's ``sum / count`` gives it back.
        """
        from platform import metrics

        was_training = model.training
        model.eval()
        sums = {name: 0.0 for name in self.metric_names}
        if lpips_fn is not None:
            sums["val_lpips"] = 0.0
        count, grid = 0, None

        def score(x_np: np.ndarray, y_np: np.ndarray) -> torch.Tensor:
            nonlocal count, grid
            x = to_model_range(x_np)[None].to(device)
            y = to_model_range(y_np)[None].to(device)
            out = predict_full(model, x, precision, self.config, clamp=True)
            sums["val_psnr"] += float(metrics.psnr(out, y, data_range=2.0))
            sums["val_ssim"] += float(metrics.ssim(out, y, data_range=2.0))
            if lpips_fn is not None:
                sums["val_lpips"] += float(lpips_fn(out, y).mean())
            count += 1
            if want_grid and grid is None:
                grid = make_grid([x_np, from_model_range(out[0]), y_np])
            return out

        for i, (_, x_np, y_np) in enumerate(self.val_items()):
            if i % world_size == rank:
                score(x_np, y_np)
        if self.sequences and rank == 0:
            flickers, seq_frames = [], 0
            for spec in self.sequences:
                prev = None
                change_out = change_tgt = 0.0
                pairs = 0
                for x_np, y_np in self.sequence_frames(spec):
                    out = score(x_np, y_np)
                    y = to_model_range(y_np)[None].to(device)
                    if prev is not None:  # streaming temporal_flicker: mean |o[t+1]-o[t]| - mean |g[t+1]-g[t]|
                        change_out += float((out - prev[0]).abs().mean())
                        change_tgt += float((y - prev[1]).abs().mean())
                        pairs += 1
                    prev = (out, y)
                    seq_frames += 1
                flickers.append((change_out - change_tgt) / max(1, pairs))
            total = len(self.val_pairs) + seq_frames
            sums["val_flicker"] = float(np.mean(flickers)) * total
        model.train(was_training)
        return ValResult(sums, count, grid)


def _sequence_specs(value, folder) -> list[dict]:
    """``task.val_sequence``: null, one {input, target[, start, step, max_frames]} or a list of them.

    Relative paths are looked up in the data folder first, then in the working directory.
    """
    from pathlib import Path

    if not value:
        return []
    specs = value if isinstance(value, list) else [value]
    out = []
    for i, s in enumerate(specs):
        if not isinstance(s, dict) or not {"input", "target"} <= set(s):
            raise DataError(f"task.val_sequence[{i}] is {s!r}; give {{input: <video or frame folder>, target: <video or "
                            "frame folder>}} (optional: start, step, max_frames).")
        unknown = sorted(set(s) - {"input", "target", "start", "step", "max_frames"})
        if unknown:
            raise DataError(f"task.val_sequence[{i}] has unknown key(s) {', '.join(unknown)}; known: input, target, "
                            "start, step, max_frames.")
        s = dict(s)
        for key in ("input", "target"):
            p = Path(str(s[key])).expanduser()
            if not p.is_absolute():
                p = (Path(folder) / p) if (Path(folder) / p).exists() else p.resolve()
            if not p.exists():
                raise DataError(f"task.val_sequence[{i}].{key}: {s[key]} does not exist (looked in the data folder "
                                f"{folder} and in {Path.cwd()}); give a video file or a folder of numbered frames.")
            s[key] = p
        out.append(s)
    return out
