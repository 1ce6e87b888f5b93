"""Full-resolution comparisons for the report: the champion's output on the first validation frame
against the target, its floors (classical baselines) and the runner-up.

Inputs come from MLflow: ``floors/input.png`` and ``floors/target.png`` (the first validation
item, logged on the search's parent run with a ``floors/<name>.png`` per floor), the champion
(the registered version made from the search's best trial, else the ``champion`` alias) and the
runner-up (the best other registered version of the same model, by its ``promotion.score``).
Without the input/target artifacts (searches from before floors existed) there is nothing to
compare and the section says so.

Size: every frame shown in a wipe is scaled to at most ``WIPE_MAX_SIDE`` pixels and JPEG-encoded;
crops are ``CROP`` pixels square PNGs, at most ``MAX_CROPS`` regions. With at most
``MAX_LAYERS`` layers this keeps the section under about 6 MB of base64 (the report stays
under ``REPORT_LIMIT_BYTES``, 8 MB).
"""

from __future__ import annotations

import base64
import html
import io
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

CROP = 192
MAX_CROPS = 3
WIPE_MAX_SIDE = 1024
MAX_LAYERS = 7
REPORT_LIMIT_BYTES = 8 * 1024 * 1024


@dataclass
class Comparison:
    """Full-resolution frames (float32 HxWx3 in [0, 1]) keyed by label, and the crop boxes."""

    layers: dict[str, np.ndarray] = field(default_factory=dict)
    boxes: list[tuple[int, int, int]] = field(default_factory=list)  # (y, x, size)
    note: str = ""


def _load_png(client, run_id: str, path: str) -> np.ndarray | None:
    from PIL import Image

    try:
        local = client.download_artifacts(run_id, path)
    except Exception:  # no such artefact (or no store): the comparison goes without it
        return None
    with Image.open(local) as im:
        return np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0


def floor_images(client, parent_id: str) -> dict[str, np.ndarray]:
    """``floors/*.png`` of the parent run, keyed by name (``input`` and ``target`` included)."""
    try:
        paths = [a.path for a in client.list_artifacts(parent_id, "floors") if a.path.endswith(".png")]
    except Exception:  # no floors logged (or no store): the comparison goes without them
        return {}
    out = {}
    for p in sorted(paths):
        img = _load_png(client, parent_id, p)
        if img is not None:
            out[Path(p).stem] = img
    return out


def _score(version, mode: str) -> float:
    try:
        v = float(version.tags.get("promotion.score"))
    except (TypeError, ValueError):
        return -np.inf
    return v if mode == "max" else -v


def model_versions(client, name: str, best_run_id: str, mode: str):
    """(champion, runner-up) registered versions for this search; either may be None."""
    try:
        versions = list(client.search_model_versions(f"name = '{name}'"))
    except Exception:  # no registry here: no versions to compare
        return None, None
    champion = next((v for v in versions if v.run_id == best_run_id), None)
    if champion is None:
        champion = next((v for v in versions if "champion" in (v.aliases or [])), None)
    others = sorted((v for v in versions if champion is None or v.version != champion.version),
                    key=lambda v: _score(v, mode), reverse=True)
    return champion, (others[0] if others else None)


def predict(name: str, version, frame: np.ndarray) -> np.ndarray | None:
    import mlflow

    try:
        model = mlflow.pyfunc.load_model(f"models:/{name}/{version.version}")
        out = np.asarray(model.predict(frame[None].astype(np.float32)))[0]
    except Exception as exc:  # a model that cannot run here: the comparison goes without it
        log.warning("report: version %s of %s could not predict the comparison frame: %s", version.version, name, exc)
        return None
    return np.clip(out[..., :3], 0.0, 1.0).astype(np.float32)


def worst_regions(pred: np.ndarray, target: np.ndarray, size: int = CROP, k: int = MAX_CROPS):
    """Up to ``k`` non-overlapping ``size``-pixel squares where ``pred`` differs most from ``target``."""
    from scipy.ndimage import uniform_filter

    h, w = target.shape[:2]
    size = min(size, h, w)
    err = uniform_filter(np.abs(pred - target).mean(axis=-1).astype(np.float64), size=size, mode="constant")
    half = size // 2
    err = err[half:h - size + half + 1, half:w - size + half + 1]  # windows that lie inside the frame
    boxes = []
    for _ in range(k):
        y, x = np.unravel_index(int(np.argmax(err)), err.shape)
        if not np.isfinite(err[y, x]) or err[y, x] <= 0:
            break
        boxes.append((int(y), int(x), size))
        err[max(0, y - size + 1):y + size, max(0, x - size + 1):x + size] = -np.inf  # no overlap
    return boxes


def build(client, data) -> Comparison:
    """The comparison for a loaded search (see the module docstring)."""
    floors = floor_images(client, data.parent_run_id)
    x, y = floors.pop("input", None), floors.pop("target", None)
    ranked = data.ranked()
    if x is None or y is None or not ranked:
        return Comparison(note="no full-resolution validation frame was logged for this search (floors/input.png "
                               "and floors/target.png on the parent run), so there is nothing to compare here")
    champion, runner = model_versions(client, data.name, ranked[0].run_id, data.mode)
    out = predict(data.name, champion, x) if champion is not None else None
    if out is None:
        return Comparison(note="the champion model could not be loaded, so its full-resolution output is missing")
    layers = {"input": x, f"champion (v{champion.version})": out, "target": y}
    if runner is not None and (r := predict(data.name, runner, x)) is not None and r.shape == y.shape:
        layers[f"runner-up (v{runner.version})"] = r
    for name, img in floors.items():
        if img.shape == y.shape and len(layers) < MAX_LAYERS:
            layers[f"floor: {name}"] = img
    return Comparison(layers=layers, boxes=worst_regions(out, y) if out.shape == y.shape else [])


def encode(img: np.ndarray, fmt: str = "PNG", max_side: int | None = None) -> str:
    """A data: URI of ``img`` (float [0, 1]), scaled down to ``max_side`` when given."""
    from PIL import Image

    im = Image.fromarray((np.clip(img, 0, 1) * 255.0 + 0.5).astype(np.uint8))
    if max_side and max(im.size) > max_side:
        im.thumbnail((max_side, max_side), Image.LANCZOS)
    buf = io.BytesIO()
    im.save(buf, format=fmt, **({"quality": 90} if fmt == "JPEG" else {"optimize": True}))
    mime = "jpeg" if fmt == "JPEG" else "png"
    return f"data:image/{mime};base64,{base64.b64encode(buf.getvalue()).decode()}"


def crops_html(cmp: Comparison) -> str:
    """One row per region: every layer's pixels at 1:1, labelled."""
    if not cmp.boxes:
        return ""
    rows = []
    for i, (y, x, s) in enumerate(cmp.boxes, 1):
        figs = "".join(f'<figure><figcaption>{html.escape(label)}</figcaption><img class="crop" alt="{html.escape(label)} '
                       f'crop {i}" width="{s}" height="{s}" src="{encode(img[y:y + s, x:x + s])}"></figure>'
                       for label, img in cmp.layers.items())
        rows.append(f'<div class="crops"><p class="note">region {i}: {s}×{s} px at x={x}, y={y}</p>{figs}</div>')
    return "".join(rows)


def wipe_html(cmp: Comparison) -> str:
    """A before/after wipe over the comparison layers (script in the report template)."""
    if not cmp.layers:
        return f'<p class="note">({html.escape(cmp.note)})</p>'
    labels = list(cmp.layers)
    champion = next(lb for lb in labels if lb.startswith("champion"))

    def options(selected: str) -> str:
        return "".join(f'<option{" selected" if lb == selected else ""}>{html.escape(lb)}</option>' for lb in labels)

    imgs = "".join(f'<img class="layer" alt="{html.escape(lb)}" data-name="{html.escape(lb)}" '
                   f'src="{encode(img, "JPEG", WIPE_MAX_SIDE)}">' for lb, img in cmp.layers.items())
    return (f'<div class="wipe" data-wipe><div class="wipe-controls">left <select data-left>{options(champion)}'
            f'</select> right <select data-right>{options("target")}</select> '
            f'<input type="range" min="0" max="100" value="50" step="0.5" data-pos aria-label="wipe position"></div>'
            f'<div class="wipe-stage">{imgs}<div class="wipe-line"></div></div></div>')
