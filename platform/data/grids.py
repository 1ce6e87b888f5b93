"""Preview grids: side-by-side panels of a frame (input | output | target) as one uint8 image.

Used by the tasks for their validation grids and by :mod:`platform.data.samples` to preview a
sample set.
"""

from __future__ import annotations

import numpy as np


def downscale(img: np.ndarray, max_side: int) -> np.ndarray:
    """Subsample (every k-th pixel; exact for label masks) so that the long side is <= ``max_side``."""
    h, w = img.shape[:2]
    s = max(h, w)
    if s <= max_side:
        return img
    step = int(np.ceil(s / max_side))
    return img[::step, ::step]


def make_grid(panels: list[np.ndarray], max_side: int = 512) -> np.ndarray:
    """Side-by-side panels ([0, 1] HxWx3) as uint8, each downscaled to at most ``max_side``."""
    panels = [downscale(p, max_side) for p in panels]
    panels = [np.repeat(p, 3, axis=2) if p.ndim == 3 and p.shape[2] == 1 else p[:, :, :3] for p in panels]
    h = min(p.shape[0] for p in panels)
    sep = np.ones((h, 4, 3), dtype=np.float32)
    row = []
    for i, p in enumerate(panels):
        if i:
            row.append(sep)
        row.append(p[:h])
    return (np.clip(np.concatenate(row, axis=1), 0, 1) * 255 + 0.5).astype(np.uint8)
