"""Bundled sample data sets, made deterministically from photos that ship with scikit-image.

``ensure_sample("vfx_grade")`` builds the set on first use under the data cache
(``$PLATFORM_DATA_DIR`` or ``./.cache/data``) and reuses it afterwards. A version stamp in the
folder makes a changed generator rebuild instead of silently reusing stale files.

``vfx_grade`` is a "look" a VFX artist might apply to a plate: the input is the photo with
film grain; the target is the grain-free photo through a non-linear colour grade (a filmic
tone curve, teal/orange split toning, a saturation lift). A network must both remove the
grain (a local, texture-level effect) and learn the grade (a global, non-linear colour map).

``vfx_grade_b``: a second shot of the same show: the same grade and the same kind of grain, on
ten other pictures (scikit-image's grey photos and textures given colour by a smooth per-picture
tint, its colour wheel and its logo): a related shot for warm-started searches
(``python -m platform.bench warmstart``).

``restore``: the input is the photo blurred, with sensor noise and heavy JPEG compression; the
target is the clean photo (``input/``, ``target/``).

``damage``: ARTeFACT-like damaged artworks. Sixteen fine classes (clean + 15 damage types:
material loss, peel, crack, scratch, fold, puncture, burn, dust, dirt, hair, stain, light leak,
writing, stamp, sticker) grouped in 4 coarse classes (clean, structural, surface, additions) and
2 binary ones (clean, damaged) by the built-in ``artefact`` class map, painted onto the photos
(resized to at most 384 px) with their index masks; a dark mount around some pictures is the
"not artwork" region, labelled 255 (ignored). ``input/`` (damaged), ``target/`` (clean: the set
doubles as an img2img inpainting task), ``masks/`` (fine labels), ``data.yaml``.

``matte``: foregrounds with soft alpha composited over other photos: skimage's logo (its own
alpha), coins, text, the colour wheel and a horse silhouette (cut with simple threshold masks),
the astronaut and the cat (cut with ellipses), feathered at the edges. ``images/`` (composites),
``alpha/`` (8-bit mattes), ``masks/`` (alpha >= 0.5, binary index PNGs) and ``data.yaml``
(background/foreground): a matting and a background-removal (binary segmentation) set.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from platform.data.io import write_image
from platform.data.photos import photos, resize_max
from platform.errors import DataError

log = logging.getLogger(__name__)

SAMPLES: dict[str, Callable[[Path], None]] = {}
SAMPLE_VERSION = {"vfx_grade": 1, "vfx_grade_b": 1, "restore": 1, "damage": 1, "matte": 1}


def data_root() -> Path:
    return Path(os.environ.get("PLATFORM_DATA_DIR", ".cache/data")).resolve()


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
    for i, (name, photo) in enumerate(photos()):
        write_image(out / "input" / f"{i:02d}_{name}.png", film_grain(photo, seed=1000 + i))
        write_image(out / "target" / f"{i:02d}_{name}.png", colour_grade(photo))


SAMPLES["vfx_grade"] = _build_vfx_grade


def tint(grey: np.ndarray, seed: int) -> np.ndarray:
    """A grey picture given colour: luminance through a random three-stop colour ramp, shifted by a
    smooth random colour field so that hues also vary across the frame."""
    import cv2

    rng = np.random.default_rng(seed)
    stops = np.array([0.12, 0.5, 0.88], np.float32)[:, None] + rng.uniform(-0.18, 0.18, (3, 3)).astype(np.float32)
    g = np.clip(grey.astype(np.float32), 0, 1)
    rgb = np.stack([np.interp(g, [0.0, 0.5, 1.0], stops[:, c]) for c in range(3)], axis=2)
    h, w = g.shape
    field = cv2.resize(rng.uniform(-0.1, 0.1, (4, 4, 3)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    return np.clip(rgb + field, 0.0, 1.0).astype(np.float32)


def _other_photos() -> list[tuple[str, np.ndarray]]:
    """Ten RGB pictures (float32 [0, 1], at least 300 px a side) that ``vfx_grade`` does not use."""
    import skimage.data as d

    logo = d.logo().astype(np.float32) / 255.0
    logo = logo[:, :, :3] * logo[:, :, 3:] + 0.45 * (1 - logo[:, :, 3:])
    greys = [("coins", d.coins()), ("clock", d.clock()), ("cell", d.cell()), ("phantom", d.shepp_logan_phantom()),
             ("brick", d.brick()), ("gravel", d.gravel()), ("grass", d.grass()), ("moon", d.moon())]
    photos = [("colorwheel", d.colorwheel().astype(np.float32) / 255.0), ("logo", logo)]
    for i, (name, img) in enumerate(greys):
        grey = img.astype(np.float32) / (255.0 if img.dtype == np.uint8 else max(1.0, float(img.max())))
        photos.append((name, tint(grey, seed=6000 + i)))
    return photos


def _build_vfx_grade_b(out: Path) -> None:
    for i, (name, photo) in enumerate(_other_photos()):
        write_image(out / "input" / f"{i:02d}_{name}.png", film_grain(photo, seed=5000 + i))
        write_image(out / "target" / f"{i:02d}_{name}.png", colour_grade(photo))


SAMPLES["vfx_grade_b"] = _build_vfx_grade_b


def degrade(img: np.ndarray, seed: int, sigma: float = 1.2, noise: float = 0.04, quality: int = 25) -> np.ndarray:
    """Blur, Gaussian noise and JPEG compression (the ``restore`` input)."""
    import cv2
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    x = gaussian_filter(img, sigma=(sigma, sigma, 0))
    x = np.clip(x + noise * rng.standard_normal(x.shape).astype(np.float32), 0, 1)
    u8 = np.round(x * 255).astype(np.uint8)
    _ok, buf = cv2.imencode(".jpg", u8[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)[:, :, ::-1].astype(np.float32) / 255.0


def _build_restore(out: Path) -> None:
    for i, (name, photo) in enumerate(photos()):
        write_image(out / "input" / f"{i:02d}_{name}.png", degrade(photo, seed=2000 + i))
        write_image(out / "target" / f"{i:02d}_{name}.png", photo)


SAMPLES["restore"] = _build_restore


def _build_damage(out: Path) -> None:
    import yaml

    from platform.data.formats import write_mask
    from platform.data.segmentation import ARTEFACT_FINE, _default_palette
    from platform.data.synth import paint_damage

    palette = _default_palette(len(ARTEFACT_FINE))
    for i, (name, photo) in enumerate(photos()):
        clean = resize_max(photo, 384)
        damaged, mask = paint_damage(clean, seed=3000 + i, index=i)
        write_image(out / "input" / f"{i:02d}_{name}.png", damaged)
        write_image(out / "target" / f"{i:02d}_{name}.png", clean)
        write_mask(out / "masks" / f"{i:02d}_{name}.png", mask, palette=palette + [(128, 128, 128)] * (256 - len(palette)))
    meta = {"description": "ARTeFACT-like synthetic damage on scikit-image photos (platform sample 'damage')",
            "classes": list(ARTEFACT_FINE), "ignore_index": 255, "hierarchy": "artefact",
            "palette": [list(c) for c in palette]}
    (out / "data.yaml").write_text(yaml.safe_dump(meta, sort_keys=False))


SAMPLES["damage"] = _build_damage


def _build_matte(out: Path) -> None:
    import yaml

    from platform.data.formats import write_mask
    from platform.data.synth import composite_mattes

    for name, image, alpha in composite_mattes():
        write_image(out / "images" / f"{name}.png", image)
        write_image(out / "alpha" / f"{name}.png", alpha)
        write_mask(out / "masks" / f"{name}.png", (alpha[:, :, 0] >= 0.5).astype(np.uint8),
                   palette=[(0, 0, 0), (255, 255, 255)])
    meta = {"description": "foregrounds with soft alpha over photos (platform sample 'matte')",
            "classes": ["background", "foreground"], "ignore_index": None,
            "palette": [[0, 0, 0], [255, 255, 255]]}
    (out / "data.yaml").write_text(yaml.safe_dump(meta, sort_keys=False))


SAMPLES["matte"] = _build_matte


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


def preview(name: str, rows: int = 2, max_side: int = 192) -> np.ndarray:
    """A small uint8 picture of a sample set: ``rows`` items, input | target (or mask / alpha)."""
    from platform.data.grids import make_grid
    from platform.data.io import to_float

    folder = ensure_sample(name)
    grids = []
    if name in ("vfx_grade", "vfx_grade_b", "restore"):
        from platform.data.paired import load_pairs

        for p in load_pairs(folder)[:rows]:
            grids.append(make_grid([p.input, p.target], max_side))
    elif name == "damage":
        from platform.data.formats import read_array
        from platform.data.segmentation import load_segmentation

        spec, items = load_segmentation(folder, hierarchical=True)
        for p in items[2:2 + rows]:
            clean = to_float(read_array(folder / "target" / f"{p.name}.png"))
            coarse = spec.levels["coarse"].lut[p.target.astype(np.int64)]
            grids.append(make_grid([to_float(p.input), spec.colourise(p.target.astype(np.int64)),
                                    spec.colourise(coarse, spec.levels["coarse"].names), clean], max_side))
    elif name == "matte":
        from platform.data.segmentation import load_mattes

        for p in load_mattes(folder)[:rows]:
            grids.append(make_grid([to_float(p.input), to_float(p.target)], max_side))
    else:
        raise DataError(f"no preview for sample {name!r}.")
    width = min(g.shape[1] for g in grids)
    sep = np.full((4, width, 3), 255, np.uint8)
    out = []
    for i, g in enumerate(grids):
        if i:
            out.append(sep)
        out.append(g[:, :width])
    return np.concatenate(out, axis=0)
