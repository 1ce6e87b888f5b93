"""What a model's training inputs cover: their colours, stored with the model, checked on new frames.

A model of a grade learnt from 5-15 frames has seen some colours; elsewhere it extrapolates. On
held-out frames where half the pixels are in colours no training frame has, a promoted champion
fell 4.3 dB below the untouched input while its validation claimed a clear gain
(docs/benchmarks.md, "Shots the quick recipe was not tuned on"). Nothing in the validation
frames can show that, so the frames themselves are checked when the model runs on them.

The trainer stores the occupied cells of its training inputs' RGB cube (``BINS`` levels a
channel, 4096 bits as hex) in the trial config under ``KEY``; the config travels with every
checkpoint and registered model. :func:`platform.predict.predict` measures each frame's share of
pixels in cells never seen (on a grid of at most ``CHECK_PIXELS`` pixels) and warns, naming the
frames, above ``UNSEEN_WARN``.
"""

from __future__ import annotations

import math

import numpy as np

from platform.data.io import to_float

BINS = 16
UNSEEN_WARN = 0.10  # a tenth of a frame in colours the model never trained on
KEY = "_input_coverage"
CHECK_PIXELS = 500_000  # pixels of a frame measured at predict time


def colour_cells(image: np.ndarray, bins: int = BINS) -> np.ndarray:
    """The RGB cube cell of each pixel (flat index; grey frames as R = G = B; values clipped to [0, 1])."""
    arr = to_float(np.asarray(image))
    if arr.ndim == 2:
        arr = arr[:, :, None]
    rgb = arr[..., :3] if arr.shape[-1] >= 3 else np.repeat(arr[..., :1], 3, axis=-1)
    q = np.clip((rgb * bins).astype(np.int64), 0, bins - 1).reshape(-1, 3)
    return (q[:, 0] * bins + q[:, 1]) * bins + q[:, 2]


def occupancy(images, bins: int = BINS) -> np.ndarray:
    """Which cells of the RGB cube any of ``images`` has a pixel in (bool, ``bins**3``)."""
    seen = np.zeros(bins ** 3, bool)
    for image in images:
        seen[colour_cells(image, bins)] = True
    return seen


def unseen_share(image: np.ndarray, seen: np.ndarray) -> float:
    """The share of ``image``'s pixels in cells ``seen`` lacks."""
    bins = round(len(seen) ** (1 / 3))
    return float(1.0 - seen[colour_cells(image, bins)].mean())


def encode(seen: np.ndarray) -> dict:
    return {"bins": round(len(seen) ** (1 / 3)), "occupied": np.packbits(seen).tobytes().hex()}


def decode(stored) -> np.ndarray | None:
    """The occupancy stored by :func:`encode`; None when absent or not of that form (an older model)."""
    try:
        bins = int(stored["bins"])
        bits = np.unpackbits(np.frombuffer(bytes.fromhex(stored["occupied"]), np.uint8))[: bins ** 3]
    except (TypeError, KeyError, ValueError):
        return None
    return bits.astype(bool) if len(bits) == bins ** 3 and bins > 0 else None


def training_coverage(pairs) -> dict:
    """The stored form of the training inputs' occupancy."""
    return encode(occupancy(p.input for p in pairs))


class FrameCheck:
    """Each frame's unseen share against a model's stored coverage (nothing when it has none)."""

    def __init__(self, config):
        self.seen = decode((config or {}).get(KEY))
        self.shares: dict[str, float] = {}

    def update(self, name: str, image: np.ndarray) -> None:
        """Measure ``image`` on a regular grid of at most ``CHECK_PIXELS`` pixels (a 4K frame in
        full takes seconds on a CPU; the grid's share is within a point of the whole frame's)."""
        if self.seen is not None:
            step = max(1, math.ceil(math.sqrt(image.shape[0] * image.shape[1] / CHECK_PIXELS)))
            self.shares[name] = unseen_share(image[::step, ::step], self.seen)


def unseen_warning(shares: dict[str, float]) -> str | None:
    """One paragraph on the frames above ``UNSEEN_WARN`` ({frame: unseen share}), or None."""
    far = {n: s for n, s in shares.items() if s > UNSEEN_WARN}
    if not far:
        return None
    worst = sorted(far.items(), key=lambda kv: -kv[1])[:3]
    return (f"{len(far)} of {len(shares)} frames have more than {UNSEEN_WARN:.0%} of their pixels in colours no "
            f"training frame of this model has (worst: {', '.join(f'{n} {s:.0%}' for n, s in worst)}). There the "
            "model extrapolates and can do worse than the untouched frame: check those outputs, or add frames like "
            "them to the training pairs and search again.")
