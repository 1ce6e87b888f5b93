"""The photos the bundled sample sets are made from: scikit-image's own, deterministic.

Shared by :mod:`platform.data.samples` (the paired and segmentation sets) and
:mod:`platform.data.synth` (the matting composites' backgrounds).
"""

from __future__ import annotations

import numpy as np


def photos() -> list[tuple[str, np.ndarray]]:
    """Ten RGB photos (float32 [0, 1]) from scikit-image, of differing resolutions."""
    import skimage.data as d

    left, right, _ = d.stereo_motorcycle()
    images = [
        ("astronaut", d.astronaut()),
        ("coffee", d.coffee()),
        ("chelsea", d.chelsea()),
        ("rocket", d.rocket()),
        ("retina", d.retina()),
        ("hubble", d.hubble_deep_field()),
        ("ihc", d.immunohistochemistry()),
        ("motorcycle_left", left),
        ("motorcycle_right", right),
        ("camera", np.repeat(d.camera()[:, :, None], 3, axis=2)),
    ]
    return [(name, img.astype(np.float32) / 255.0) for name, img in images]


def resize_max(img: np.ndarray, max_side: int) -> np.ndarray:
    """Area-resample so that the long side is at most ``max_side`` (OpenCV INTER_AREA, deterministic)."""
    import cv2

    h, w = img.shape[:2]
    s = max_side / max(h, w)
    if s >= 1:
        return img
    out = cv2.resize(img, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
    return out.reshape(out.shape[:2] + img.shape[2:])
