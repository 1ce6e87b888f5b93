"""Video metrics: temporal flicker."""

from __future__ import annotations

import torch

from platform.metrics._common import as_float, fp32_math, reduce


def _frame_change(frames: torch.Tensor) -> torch.Tensor:
    """Mean absolute frame-to-frame change per video, ``(B,)``, for ``(B, T, C, H, W)``."""
    return (frames[:, 1:] - frames[:, :-1]).abs().flatten(1).mean(dim=1)


def temporal_flicker(output_frames: torch.Tensor, target_frames: torch.Tensor, *, reduction: str = "mean") -> torch.Tensor:
    """Flicker the output adds on top of the target's own motion.

    ``mean|o[t+1] - o[t]| - mean|g[t+1] - g[t]|`` over all frame pairs, channels and
    pixels, in the units of the inputs (no data-range scaling). 0 means the output
    changes from frame to frame exactly as much as the target does (no added
    flicker); positive values are added flicker; negative values mean the output is
    temporally smoother than the target (e.g. it lags or freezes). Frames are
    ``(T, C, H, W)`` for one video (a scalar is returned) or ``(B, T, C, H, W)`` for a
    batch (per video with ``reduction="none"``). Needs at least two frames.
    """
    if output_frames.shape != target_frames.shape:
        raise ValueError(f"temporal_flicker: output and target frames must have the same shape, got "
                         f"{tuple(output_frames.shape)} and {tuple(target_frames.shape)}")
    single = output_frames.ndim == 4
    if single:
        output_frames, target_frames = output_frames.unsqueeze(0), target_frames.unsqueeze(0)
    if output_frames.ndim != 5:
        raise ValueError("temporal_flicker: expected frames of shape (T, C, H, W) or (B, T, C, H, W), got "
                         f"{tuple(output_frames.shape)}")
    if output_frames.shape[1] < 2:
        raise ValueError(f"temporal_flicker: needs at least 2 frames, got {output_frames.shape[1]}")
    with fp32_math(output_frames.device):
        values = _frame_change(as_float(output_frames)) - _frame_change(as_float(target_frames))
    return values[0] if single else reduce(values, reduction, "temporal_flicker")
