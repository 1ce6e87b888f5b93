"""Few-shot paired image-to-image task (VFX looks, restoration, inpainting)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import numpy as np

from platform.data.grids import downscale, make_grid
from platform.data.io import apply_alpha, to_float
from platform.data.paired import Pair, load_pairs, to_model_range
from platform.data.samples import resolve_data
from platform.data.transfer import get_transfer
from platform.errors import DataError
from platform.tasks.base import Task, Validation, ValResult, option, split_items
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
class Img2ImgTask(Task):
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

    def load(self) -> None:
        self.folder = resolve_data(self.config["data"])
        self.alpha = option(self.config, "alpha", "error")
        self.transfer = get_transfer(self.config.get("transfer"))
        pairs = load_pairs(self.folder, compact=True, alpha=self.alpha)
        pairs = encode_items(pairs, self.transfer, str(self.folder))
        self.train_items, self.val_items_ = split_items(pairs, self.config)
        self.channels = int(self.val_items_[0].input.shape[2])
        self.sequences = _sequence_specs(self.config.get("val_sequence"), self.folder)
        if self.sequences:
            self.metric_names = (*self.metric_names, "val_flicker")

    def model_kwargs(self) -> dict:
        return {"in_channels": self.channels, "out_channels": self.channels}

    def data_where(self):
        return self.folder / "input"

    def floors(self) -> list:
        from platform.floors import image_floors

        return image_floors(self)

    def decode_output(self, image: np.ndarray) -> np.ndarray:
        """A prediction in [0, 1] back to the data's values (the inverse transfer function)."""
        return np.asarray(self.transfer.decode(image), dtype=np.float32)

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

    def score(self, out, x_np, y_np, device, lpips_fn=None) -> dict:
        """PSNR and SSIM in the model range [-1, 1] (and LPIPS when the trainer passes its network)."""
        from platform import metrics

        y = to_model_range(y_np)[None].to(device)
        scores = {"val_psnr": float(metrics.psnr(out, y, data_range=2.0)),
                  "val_ssim": float(metrics.ssim(out, y, data_range=2.0))}
        if lpips_fn is not None:
            scores["val_lpips"] = float(lpips_fn(out, y).mean())
        return scores

    def validate_extra(self, run: Validation) -> None:
        """The validation sequences (rank 0: flicker needs consecutive frames). ``val_flicker`` is
        the mean over sequences of :func:`platform.metrics.temporal_flicker`, stored as
        ``flicker * global count`` so that the trainer's ``sum / count`` gives it back."""
        if not self.sequences:
            return
        flickers, seq_frames = [], 0
        for spec in self.sequences:
            prev = None
            change_out = change_tgt = 0.0
            pairs = 0
            for i, (x_np, y_np) in enumerate(self.sequence_frames(spec)):
                out = run.item(f"{spec['input']} frame {i}", x_np, y_np)
                y = to_model_range(y_np)[None].to(run.device)
                if prev is not None:  # streaming temporal_flicker: mean |o[t+1]-o[t]| - mean |g[t+1]-g[t]|
                    change_out += float((out - prev[0]).abs().mean())
                    change_tgt += float((y - prev[1]).abs().mean())
                    pairs += 1
                prev = (out, y)
                seq_frames += 1
            flickers.append((change_out - change_tgt) / max(1, pairs))
        total = len(self.val_items_) + seq_frames
        run.sums["val_flicker"] = float(np.mean(flickers)) * total


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
