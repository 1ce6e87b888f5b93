"""Procedural generators behind the ``damage`` and ``matte`` sample data sets.

Hand-written on purpose: no library paints artwork damage with per-pixel labels, and the
samples must be deterministic (every shape is drawn from a seeded ``numpy`` generator with
``skimage.draw`` primitives) and small enough to build in a few seconds on a laptop.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage import draw

from platform.data.segmentation import ARTEFACT_FINE

Image = np.ndarray  # float32 HxWx3 in [0, 1]


# --------------------------------------------------------------------------- shapes
def _blob(rng, h: int, w: int, radius: float) -> np.ndarray:
    """An irregular filled blob (a star-shaped polygon with noisy radii, slightly smoothed)."""
    cy, cx = rng.uniform(0.1, 0.9) * h, rng.uniform(0.1, 0.9) * w
    n = 24
    ang = np.linspace(0, 2 * np.pi, n, endpoint=False)
    r = radius * (1 + 0.35 * ndimage.uniform_filter1d(rng.standard_normal(n), 3, mode="wrap"))
    rr, cc = draw.polygon(cy + r * np.sin(ang), cx + r * np.cos(ang), shape=(h, w))
    m = np.zeros((h, w), bool)
    m[rr, cc] = True
    return m


def _thick(mask: np.ndarray, width: int) -> np.ndarray:
    return ndimage.binary_dilation(mask, iterations=max(0, width - 1)) if width > 1 else mask


def _polyline(h: int, w: int, ys, xs) -> np.ndarray:
    m = np.zeros((h, w), bool)
    for y0, x0, y1, x1 in zip(ys[:-1], xs[:-1], ys[1:], xs[1:]):
        rr, cc = draw.line(int(y0), int(x0), int(y1), int(x1))
        ok = (rr >= 0) & (rr < h) & (cc >= 0) & (cc < w)
        m[rr[ok], cc[ok]] = True
    return m


def _walk(rng, h: int, w: int, steps: int, step: float, turn: float) -> tuple[np.ndarray, np.ndarray]:
    y, x = rng.uniform(0.1, 0.9) * h, rng.uniform(0.1, 0.9) * w
    a = rng.uniform(0, 2 * np.pi)
    ys, xs = [y], [x]
    for _ in range(steps):
        a += rng.normal(0, turn)
        y, x = y + step * np.sin(a), x + step * np.cos(a)
        ys.append(y)
        xs.append(x)
    return np.clip(ys, 0, h - 1), np.clip(xs, 0, w - 1)


def _blend(img: Image, m: np.ndarray, colour, alpha) -> None:
    a = alpha if np.isscalar(alpha) else alpha[m][:, None]
    img[m] = (1 - a) * img[m] + a * np.asarray(colour, np.float32)


# --------------------------------------------------------------------------- damage painters
def _material_loss(rng, img, h, w):
    m = _blob(rng, h, w, rng.uniform(0.05, 0.1) * min(h, w))
    paper = np.array([0.93, 0.9, 0.82], np.float32) + 0.03 * rng.standard_normal((int(m.sum()), 1)).astype(np.float32)
    img[m] = np.clip(paper, 0, 1)
    return m


def _peel(rng, img, h, w):
    m = _blob(rng, h, w, rng.uniform(0.05, 0.09) * min(h, w))
    _blend(img, m, (0.85, 0.8, 0.7), 0.45)
    edge = m & ~ndimage.binary_erosion(m)
    _blend(img, edge, (0.15, 0.12, 0.1), 0.8)
    return m


def _crack(rng, img, h, w):
    m = np.zeros((h, w), bool)
    for _ in range(rng.integers(1, 3)):
        ys, xs = _walk(rng, h, w, int(rng.integers(15, 30)), 0.02 * min(h, w), 0.5)
        m |= _polyline(h, w, ys, xs)
    m = _thick(m, 2)
    _blend(img, m, (0.08, 0.06, 0.05), 0.9)
    return m


def _scratch(rng, img, h, w):
    m = np.zeros((h, w), bool)
    for _ in range(rng.integers(1, 4)):
        y0, x0 = rng.uniform(0, h), rng.uniform(0, w)
        a, length = rng.uniform(0, np.pi), rng.uniform(0.3, 0.6) * max(h, w)
        m |= _polyline(h, w, np.clip([y0, y0 + length * np.sin(a)], 0, h - 1), np.clip([x0, x0 + length * np.cos(a)], 0, w - 1))
    _blend(img, m, (0.97, 0.97, 0.95), 0.9)
    return m


def _fold(rng, img, h, w):
    vertical = rng.random() < 0.5
    pos = int(rng.uniform(0.2, 0.8) * (w if vertical else h))
    m = np.zeros((h, w), bool)
    light = np.zeros((h, w), bool)
    if vertical:
        m[:, pos - 2:pos + 2] = True
        light[:, pos:pos + 2] = True
    else:
        m[pos - 2:pos + 2, :] = True
        light[pos:pos + 2, :] = True
    _blend(img, m & ~light, (0.1, 0.1, 0.1), 0.6)
    _blend(img, light, (1.0, 1.0, 0.97), 0.6)
    return m


def _puncture(rng, img, h, w):
    m = np.zeros((h, w), bool)
    for _ in range(rng.integers(3, 7)):
        rr, cc = draw.disk((rng.uniform(0, h), rng.uniform(0, w)), rng.uniform(2, 5), shape=(h, w))
        m[rr, cc] = True
    _blend(img, m, (0.02, 0.02, 0.02), 1.0)
    return m


def _burn(rng, img, h, w):
    m = _blob(rng, h, w, rng.uniform(0.05, 0.09) * min(h, w))
    dist = ndimage.distance_transform_edt(m)
    alpha = np.clip(0.5 + dist / max(1.0, dist.max()), 0, 1).astype(np.float32)
    _blend(img, m, (0.18, 0.09, 0.02), alpha)
    return m


def _dust(rng, img, h, w):
    m = np.zeros((h, w), bool)
    n = int(rng.integers(60, 160))
    m[rng.integers(0, h, n), rng.integers(0, w, n)] = True
    m = ndimage.binary_dilation(m, structure=np.ones((2, 2), bool))
    _blend(img, m, (0.85, 0.85, 0.82), 0.85)
    return m


def _dirt(rng, img, h, w):
    m = _blob(rng, h, w, rng.uniform(0.06, 0.1) * min(h, w))
    texture = ndimage.gaussian_filter(rng.standard_normal((h, w)), 2)
    m &= texture > -0.2
    _blend(img, m, (0.3, 0.24, 0.15), 0.5)
    return m


def _hair(rng, img, h, w):
    m = np.zeros((h, w), bool)
    for _ in range(rng.integers(1, 3)):
        pts = [rng.uniform(0.1, 0.9, 2) * (h, w) for _ in range(3)]
        rr, cc = draw.bezier_curve(*map(int, pts[0]), *map(int, pts[1]), *map(int, pts[2]), weight=2, shape=(h, w))
        m[rr, cc] = True
    _blend(img, m, (0.05, 0.04, 0.03), 0.95)
    return m


def _stain(rng, img, h, w):
    c, r = (rng.uniform(0.15, 0.85) * h, rng.uniform(0.15, 0.85) * w), rng.uniform(0.06, 0.11) * min(h, w)
    outer = np.zeros((h, w), bool)
    rr, cc = draw.disk(c, r, shape=(h, w))
    outer[rr, cc] = True
    inner = np.zeros((h, w), bool)
    rr, cc = draw.disk(c, r * 0.8, shape=(h, w))
    inner[rr, cc] = True
    _blend(img, outer & ~inner, (0.55, 0.4, 0.15), 0.6)
    _blend(img, inner, (0.75, 0.62, 0.3), 0.25)
    return outer


def _light_leak(rng, img, h, w):
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    side = rng.integers(0, 4)
    cy, cx = [(0, rng.uniform(0, w)), (h, rng.uniform(0, w)), (rng.uniform(0, h), 0), (rng.uniform(0, h), w)][side]
    r = rng.uniform(0.25, 0.4) * min(h, w)
    alpha = np.clip(1 - np.hypot(yy - cy, xx - cx) / r, 0, 1) ** 0.7 * 0.75
    m = alpha > 0.15
    _blend(img, m, (1.0, 0.45, 0.1), alpha.astype(np.float32))
    return m


def _writing(rng, img, h, w):
    m = np.zeros((h, w), bool)
    y = rng.uniform(0.15, 0.75) * h
    x = rng.uniform(0.05, 0.4) * w
    for line in range(rng.integers(1, 3)):
        xs = np.arange(x, min(w - 1, x + rng.uniform(0.3, 0.5) * w), 2.0)
        ys = y + line * 14 + 4 * np.sin(xs * rng.uniform(0.3, 0.6)) * np.sign(np.sin(xs * 0.05))
        m |= _polyline(h, w, np.clip(ys, 0, h - 1), xs)
    m = _thick(m, 2)
    _blend(img, m, (0.05, 0.1, 0.45), 0.9)
    return m


def _stamp(rng, img, h, w):
    c, r = (rng.uniform(0.2, 0.8) * h, rng.uniform(0.2, 0.8) * w), rng.uniform(14, 26)
    m = np.zeros((h, w), bool)
    rr, cc = draw.disk(c, r, shape=(h, w))
    m[rr, cc] = True
    rr, cc = draw.disk(c, r - 3, shape=(h, w))
    ring = m.copy()
    ring[rr, cc] = False
    inner = np.zeros((h, w), bool)
    for k in range(3):
        rr, cc = draw.line(int(c[0] - r / 2 + k * r / 2), int(c[1] - r / 2), int(c[0] - r / 2 + k * r / 2), int(c[1] + r / 2))
        ok = (rr >= 0) & (rr < h) & (cc >= 0) & (cc < w)
        inner[rr[ok], cc[ok]] = True
    _blend(img, ring | _thick(inner, 2), (0.8, 0.1, 0.12), 0.75)
    return m


def _sticker(rng, img, h, w):
    cy, cx = rng.uniform(0.2, 0.8) * h, rng.uniform(0.2, 0.8) * w
    sh, sw, a = rng.uniform(0.06, 0.12) * h, rng.uniform(0.08, 0.16) * w, rng.uniform(-0.4, 0.4)
    corners = np.array([[-sh, -sw], [-sh, sw], [sh, sw], [sh, -sw]])
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    pts = corners @ rot.T + (cy, cx)
    rr, cc = draw.polygon(pts[:, 0], pts[:, 1], shape=(h, w))
    m = np.zeros((h, w), bool)
    m[rr, cc] = True
    _blend(img, m, (0.96, 0.93, 0.6), 1.0)
    return m


PAINTERS = {
    "material_loss": _material_loss, "peel": _peel, "crack": _crack, "scratch": _scratch, "fold": _fold,
    "puncture": _puncture, "burn": _burn, "dust": _dust, "dirt": _dirt, "hair": _hair, "stain": _stain,
    "light_leak": _light_leak, "writing": _writing, "stamp": _stamp, "sticker": _sticker,
}
assert list(PAINTERS) == list(ARTEFACT_FINE[1:])


def paint_damage(clean: Image, seed: int, index: int = 0, per_image: int = 6) -> tuple[Image, np.ndarray]:
    """Paint ``per_image`` damages on a copy of ``clean``; return it and its fine-label mask.

    The damage types of image ``index`` are ``index * per_image + j`` (mod 15), so a set of
    10 images holds every type four times. Later damages cover earlier ones (in the image and
    in the mask). About half of the images get a dark mount (labelled 255, ignored).
    """
    rng = np.random.default_rng(seed)
    img = clean.astype(np.float32).copy()
    h, w = img.shape[:2]
    mask = np.zeros((h, w), np.uint8)
    names = list(PAINTERS)
    for j in range(per_image):
        kind = names[(index * per_image + j) % len(names)]
        m = PAINTERS[kind](rng, img, h, w)
        mask[m] = ARTEFACT_FINE.index(kind)
    if index % 2 == 0:  # the mount: a frame of "not artwork" pixels, ignored by metrics and losses
        t = int(rng.integers(6, 14))
        frame = np.ones((h, w), bool)
        frame[t:h - t, t:w - t] = False
        img[frame] = np.array([0.12, 0.12, 0.13], np.float32)
        mask[frame] = 255
    return np.clip(img, 0, 1), mask


# --------------------------------------------------------------------------- mattes
def _feather(hard: np.ndarray, sigma: float = 1.5) -> np.ndarray:
    return np.clip(ndimage.gaussian_filter(hard.astype(np.float32), sigma), 0, 1)


def _ellipse_alpha(h: int, w: int, cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    m = np.zeros((h, w), bool)
    rr, cc = draw.ellipse(cy * h, cx * w, ry * h, rx * w, shape=(h, w))
    m[rr, cc] = True
    return _feather(m, 2.0)


def foregrounds() -> list[tuple[str, Image, np.ndarray]]:
    """Foregrounds (RGB float, alpha float HxW) cut from scikit-image pictures."""
    import skimage.data as d
    from skimage.filters import threshold_otsu

    out = []
    logo = d.logo().astype(np.float32) / 255.0  # RGBA, but its alpha is opaque: cut the white paper away
    hard = ndimage.binary_fill_holes(ndimage.binary_opening(logo[:, :, :3].min(axis=2) < 0.9, iterations=1))
    out.append(("logo", logo[:, :, :3], np.minimum(_feather(hard, 1.0), logo[:, :, 3])))
    coins = d.coins().astype(np.float32) / 255.0
    hard = ndimage.binary_fill_holes(ndimage.binary_opening(coins > threshold_otsu(coins), iterations=2))
    out.append(("coins", np.repeat(coins[:, :, None], 3, 2) * np.array([1.0, 0.85, 0.55], np.float32), _feather(hard)))
    text = d.text().astype(np.float32) / 255.0
    out.append(("text", np.zeros(text.shape + (3,), np.float32) + np.array([0.1, 0.1, 0.5], np.float32),
                _feather(text < threshold_otsu(text), 0.8)))
    wheel = d.colorwheel().astype(np.float32) / 255.0
    out.append(("colorwheel", wheel, _feather(ndimage.binary_fill_holes(wheel.max(axis=2) > 0.08))))
    horse = ~d.horse()  # True on the horse
    grass = d.grass().astype(np.float32)[:horse.shape[0], :horse.shape[1]] / 255.0
    coat = (0.25 + 0.5 * grass[:, :, None]) * np.array([0.55, 0.33, 0.15], np.float32)
    out.append(("horse", coat, _feather(horse)))
    astro = d.astronaut().astype(np.float32) / 255.0
    h, w = astro.shape[:2]
    person = np.maximum(_ellipse_alpha(h, w, 0.3, 0.47, 0.22, 0.16), _ellipse_alpha(h, w, 0.85, 0.45, 0.35, 0.38))
    out.append(("astronaut", astro, person))
    cat = d.chelsea().astype(np.float32) / 255.0
    h, w = cat.shape[:2]
    out.append(("cat", cat, _ellipse_alpha(h, w, 0.5, 0.52, 0.42, 0.3)))
    return out


def composite_mattes(count: int = 10, max_side: int = 384, seed: int = 4000) -> list[tuple[str, Image, np.ndarray]]:
    """``count`` composites (name, RGB float, alpha float HxWx1) of foregrounds over other photos."""
    import cv2

    from platform.data.photos import photos, resize_max

    rng = np.random.default_rng(seed)
    fgs = foregrounds()
    backgrounds = [(n, resize_max(p, max_side)) for n, p in photos() if n not in ("astronaut", "chelsea")]
    items = []
    for i in range(count):
        fname, fg, alpha = fgs[i % len(fgs)]
        bname, bg = backgrounds[i % len(backgrounds)]
        bh, bw = bg.shape[:2]
        scale = rng.uniform(0.5, 0.8) * min(bh / fg.shape[0], bw / fg.shape[1])
        fh, fw = max(8, int(fg.shape[0] * scale)), max(8, int(fg.shape[1] * scale))
        fg_s = cv2.resize(fg, (fw, fh), interpolation=cv2.INTER_AREA)
        a_s = np.clip(cv2.resize(alpha, (fw, fh), interpolation=cv2.INTER_AREA), 0, 1)
        y0, x0 = int(rng.integers(0, bh - fh + 1)), int(rng.integers(0, bw - fw + 1))
        full = np.zeros((bh, bw), np.float32)
        full[y0:y0 + fh, x0:x0 + fw] = a_s
        fg_full = bg.copy()
        fg_full[y0:y0 + fh, x0:x0 + fw] = fg_s
        # Quantise alpha to 8 bits first so that the composite is made with the stored matte.
        a8 = (np.round(full * 255) / 255.0).astype(np.float32)
        a3 = a8[:, :, None]
        image = fg_full * a3 + bg * (1 - a3)
        items.append((f"{i:02d}_{fname}_over_{bname}", np.clip(image, 0, 1).astype(np.float32),
                      a8.astype(np.float32)[:, :, None]))
    return items
