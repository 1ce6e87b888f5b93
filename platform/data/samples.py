"""Bundled sample data sets, made deterministically from photos that ship with scikit-image.

``ensure_sample("vfx_grade")`` builds the set on first use under the data cache
(``$PLATFORM_DATA_DIR`` or ``./.cache/data``) and reuses it afterwards. A version stamp in the
folder makes a changed generator rebuild instead of silently reusing stale files.

``vfx_grade`` is a "look" a VFX artist might apply to a plate: the input is the photo with
film grain; the target is the grain-free photo through a non-linear colour grade (a filmic
tone curve, teal/orange split toning, a saturation lift). A network must both remove the
grain (a local, texture-level effect) and learn the grade (a global, non-linear colour map).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np

from platform.data.io import write_image
from platform.errors import DataError

log = logging.getLogger(__name__)

SAMPLES: dict[str, Callable[[Path], None]] = {}
SAMPLE_VERSION = {"vfx_grade": 1}


def data_root() -> Path:
    return Path(os.environ.get("PLATFORM_DATA_DIR", ".cache/data")).resolve()


def _photos() -> list[tuple[str, np.ndarray]]:
    """Ten RGB photos (float32 [0, 1]) from scikit-image, of differing resolutions."""
    import skimage.data as d

    left, right, _ = d.stereo_motorcycle()
    photos = [
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
    return [(name, img.astype(np.float32) / 255.0) for name, img in photos]


def film_grain(img: np.ndarray, seed: int, strength: float = 0.06) -> np.ndarray:
    """Luminance-dependent, slightly clumped grain (stronger in the mid-tones)."""
    rng = np.random.default_rng(seed)
    h, w, _ = img.shape
    noise = rng.standard_normal((h, w, 1)).astype(np.float32)
    # Clump the grain a little with a 3x3 box blur (film grain is not white noise).
    padded = np.pad(noise, ((1, 1), (1, 1), (0, 0)), mode="reflect")
    noise = sum(padded[i:i + h, j:j + w] for i in range(3) for j in range(3)) / 3.0
    noise = noise + 0.3 * rng.standard_normal((h, w, 3)).astype(np.float32)
    luma = img.mean(axis=2, keepdims=True)
    amp = strength * (0.35 + 2.6 * luma * (1.0 - luma))
    return np.clip(img + amp * noise, 0.0, 1.0)


def colour_grade(img: np.ndarray) -> np.ndarray:
    """A filmic look: S-curve, teal shadows / orange highlights, saturation lift."""
    x = np.clip(img, 0.0, 1.0)
    # Filmic S-curve (smooth, monotonic) with lifted blacks.
    x = 0.04 + 0.92 * (x * x * (3.0 - 2.0 * x)) ** 0.9
    luma = (0.2126 * x[..., 0] + 0.7152 * x[..., 1] + 0.0722 * x[..., 2])[..., None]
    shadows = (1.0 - luma) ** 2
    highlights = luma ** 2
    teal = np.array([-0.06, 0.02, 0.07], dtype=np.float32)
    orange = np.array([0.08, 0.03, -0.06], dtype=np.float32)
    x = x + shadows * teal + highlights * orange
    # Saturation lift around the luminance.
    x = luma + 1.25 * (x - luma)
    return np.clip(x, 0.0, 1.0).astype(np.float32)


def _build_vfx_grade(out: Path) -> None:
    for i, (name, photo) in enumerate(_photos()):
        write_image(out / "input" / f"{i:02d}_{name}.png", film_grain(photo, seed=1000 + i))
        write_image(out / "target" / f"{i:02d}_{name}.png", colour_grade(photo))


SAMPLES["vfx_grade"] = _build_vfx_grade


def available_samples() -> list[str]:
    return sorted(SAMPLES)


def ensure_sample(name: str, root: Path | None = None) -> Path:
    """Return the folder of sample data set ``name``, building it on first use."""
    if name not in SAMPLES:
        raise DataError(f"unknown sample data set {name!r}; available: {', '.join(available_samples())}.")
    root = root or data_root()
    folder = root / name
    stamp = folder / "SAMPLE.json"
    want = {"name": name, "version": SAMPLE_VERSION.get(name, 1)}
    if stamp.is_file():
        try:
            if json.loads(stamp.read_text()) == want:
                return folder
        except json.JSONDecodeError:
            pass
    log.info("building sample data set %r under %s (first use)", name, folder)
    root.mkdir(parents=True, exist_ok=True)
    # Build in a temporary sibling and rename: a concurrent or killed build never leaves
    # a half-written folder that looks complete.
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=root))
    try:
        SAMPLES[name](tmp)
        (tmp / "SAMPLE.json").write_text(json.dumps(want))
        if folder.exists():
            shutil.rmtree(folder, ignore_errors=True)
        try:
            os.replace(tmp, folder)
        except OSError:
            if not stamp.is_file():  # another process won the race with a complete folder? else fail
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return folder


def resolve_data(spec: str) -> Path:
    """``sample:<name>`` -> the built sample folder; anything else is a path."""
    if spec.startswith("sample:"):
        return ensure_sample(spec.split(":", 1)[1])
    return Path(spec).expanduser().resolve()
