"""Segmentation and matting data: images with index masks or alpha mattes, and their classes.

Layout (sub-folder names are matched case-sensitively, first one present wins)::

    data/
      images/  (or image/, input/)   shot_010.png ...
      masks/   (or mask/)            shot_010.png ...   index PNGs: pixel value = class number
      alpha/   (or alphas/, matte/)  shot_010.png ...   alpha mattes (matting task)
      data.yaml (or classes.yaml)    class names, ignore index, class maps

``data.yaml``::

    classes: [clean, scratch, crack, stain]   # index = pixel value in the masks
    ignore_index: 255                         # pixels not scored (null: none; default 255)
    palette: [[0, 0, 0], [255, 0, 0], ...]    # optional colours for previews
    hierarchy: artefact                       # hierarchical tasks: a built-in class map, or inline:
    # hierarchy:
    #   coarse: {clean: [clean], damage: [scratch, crack, stain]}
    #   binary: {clean: [clean], damaged: [scratch, crack, stain]}

Without a YAML, masks are binary (classes background/foreground); masks holding only 0 and 255
are read as 0/1. Every mask is checked: its size must be its image's, and every value must be
a declared class or the ignore index.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from platform.data.formats import read_array, read_mask
from platform.data.io import apply_alpha, to_float
from platform.data.paired import Pair, scan_pairs
from platform.errors import DataError

log = logging.getLogger(__name__)

IMAGE_DIRS = ("images", "image", "input")
MASK_DIRS = ("masks", "mask")
ALPHA_DIRS = ("alpha", "alphas", "matte", "mattes")
YAML_NAMES = ("data.yaml", "classes.yaml")
LEVELS = ("binary", "coarse", "fine")

#: ARTeFACT-style damage taxonomy: 16 fine classes, 4 coarse groups, clean/damaged.
ARTEFACT_FINE = ("clean", "material_loss", "peel", "crack", "scratch", "fold", "puncture", "burn",
                 "dust", "dirt", "hair", "stain", "light_leak", "writing", "stamp", "sticker")
ARTEFACT_COARSE = {
    "clean": ["clean"],
    "structural": ["material_loss", "peel", "crack", "scratch", "fold", "puncture", "burn"],
    "surface": ["dust", "dirt", "hair", "stain", "light_leak"],
    "additions": ["writing", "stamp", "sticker"],
}
CLASS_MAPS: dict[str, dict] = {
    "artefact": {
        "classes": list(ARTEFACT_FINE),
        "coarse": ARTEFACT_COARSE,
        "binary": {"clean": ["clean"], "damaged": [c for c in ARTEFACT_FINE if c != "clean"]},
    },
}


def _default_palette(n: int) -> list[tuple[int, int, int]]:
    """Distinct colours (class 0 black) from matplotlib's tab20 (deterministic)."""
    from matplotlib import colormaps

    cmap = colormaps["tab20"]
    out = [(0, 0, 0)]
    for i in range(1, n):
        r, g, b, _ = cmap((i - 1) % 20 / 19.0 if n > 1 else 0)
        out.append((int(r * 255), int(g * 255), int(b * 255)))
    return out


@dataclass
class Level:
    """One level of a class hierarchy: its class names and the fine-label -> level-label table."""

    names: list[str]
    lut: np.ndarray  # int64, indexed by fine label (ignore index maps to itself)


@dataclass
class ClassSpec:
    """Classes of a segmentation data set (from its YAML)."""

    names: list[str]
    ignore_index: int | None = 255
    palette: list[tuple[int, int, int]] = field(default_factory=list)
    levels: dict[str, Level] = field(default_factory=dict)  # "coarse", "binary" (hierarchical data)
    source: str = ""
    binary_255: bool = False  # no YAML: masks stored 0/255 are read as 0/1

    @property
    def num_classes(self) -> int:
        return len(self.names)

    def colourise(self, mask: np.ndarray, names: list[str] | None = None) -> np.ndarray:
        """HxW labels -> HxWx3 float [0, 1] preview (ignored pixels grey)."""
        n = len(names or self.names)
        palette = np.array((self.palette if len(self.palette) >= n and names is None else _default_palette(n)),
                           dtype=np.float32) / 255.0
        out = np.full(mask.shape + (3,), 0.5, dtype=np.float32)
        valid = (mask >= 0) & (mask < n)
        out[valid] = palette[mask[valid]]
        return out


def find_yaml(folder: Path) -> Path | None:
    for name in YAML_NAMES:
        if (folder / name).is_file():
            return folder / name
    return None


def _level_from_groups(level: str, groups, fine: list[str], ignore: int | None, where: str) -> Level:
    if not isinstance(groups, dict) or not groups:
        raise DataError(f"{where}: class map `hierarchy.{level}` must map each {level} class to a list of fine "
                        f"classes, e.g. {{clean: [clean], damaged: [scratch, crack]}}; got {groups!r}.")
    size = max(len(fine), (ignore or 0) + 1)
    lut = np.full(size, -1, dtype=np.int64)
    if ignore is not None:
        lut[ignore] = ignore
    for j, (coarse_name, members) in enumerate(groups.items()):
        if not isinstance(members, list):
            raise DataError(f"{where}: `hierarchy.{level}.{coarse_name}` must be a list of fine class names, "
                            f"got {members!r}.")
        for m in members:
            if m not in fine:
                raise DataError(f"{where}: class map `hierarchy.{level}.{coarse_name}` names {m!r}, which is not a "
                                f"declared class (classes: {', '.join(fine)}).")
            i = fine.index(m)
            if lut[i] != -1:
                raise DataError(f"{where}: fine class {m!r} appears twice in class map `hierarchy.{level}`.")
            lut[i] = j
    missing = [fine[i] for i in range(len(fine)) if lut[i] == -1]
    if missing:
        raise DataError(f"{where}: class map `hierarchy.{level}` does not place fine class(es) "
                        f"{', '.join(missing)}; every class needs a {level} group.")
    lut[lut == -1] = ignore if ignore is not None else 0
    return Level(list(map(str, groups)), lut)


def load_class_spec(folder: str | Path, hierarchical: bool = False) -> ClassSpec:
    """The :class:`ClassSpec` of a data folder (its ``data.yaml``; binary when there is none)."""
    folder = Path(folder)
    path = find_yaml(folder)
    if path is None:
        if hierarchical:
            raise DataError(f"{folder} has no data.yaml; hierarchical segmentation needs one with `classes` and a "
                            "`hierarchy` class map (e.g. `hierarchy: artefact`).")
        return ClassSpec(["background", "foreground"], ignore_index=None, palette=[(0, 0, 0), (255, 255, 255)],
                         source="(no data.yaml: binary)", binary_255=True)
    where = str(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise DataError(f"{where} is not valid YAML ({exc}).") from None
    if not isinstance(raw, dict):
        raise DataError(f"{where} must be a mapping with `classes` (and optionally ignore_index, palette, hierarchy).")
    known = {"classes", "ignore_index", "palette", "hierarchy", "description", "names"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise DataError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}.")
    hierarchy = raw.get("hierarchy")
    named = None
    if isinstance(hierarchy, str):
        if hierarchy not in CLASS_MAPS:
            raise DataError(f"{where}: unknown class map `hierarchy: {hierarchy}`; built-in class maps: "
                            f"{', '.join(sorted(CLASS_MAPS))} (or give the map inline).")
        named = CLASS_MAPS[hierarchy]
    classes = raw.get("classes", raw.get("names"))
    if classes is None and named is not None:
        classes = named["classes"]
    if isinstance(classes, dict):  # {0: background, 1: person} style
        try:
            classes = [classes[i] for i in range(len(classes))]
        except KeyError:
            raise DataError(f"{where}: `classes` as a mapping must use the keys 0..N-1.") from None
    if not isinstance(classes, list) or len(classes) < 2 or not all(isinstance(c, (str, int)) for c in classes):
        raise DataError(f"{where}: `classes` must list at least two class names (index = mask value), got {classes!r}.")
    classes = [str(c) for c in classes]
    if len(set(classes)) != len(classes):
        raise DataError(f"{where}: class names must be unique, got {classes}.")
    ignore = raw.get("ignore_index", 255)
    if ignore is not None and (isinstance(ignore, bool) or not isinstance(ignore, int) or ignore < 0):
        raise DataError(f"{where}: `ignore_index` must be a non-negative integer or null, got {ignore!r}.")
    if ignore is not None and ignore < len(classes):
        raise DataError(f"{where}: `ignore_index` {ignore} is also class {classes[ignore]!r}; pick a value above "
                        f"{len(classes) - 1} (255 is usual).")
    palette = raw.get("palette") or _default_palette(len(classes))
    if len(palette) < len(classes) or not all(isinstance(c, (list, tuple)) and len(c) == 3 for c in palette):
        raise DataError(f"{where}: `palette` must give an [R, G, B] colour per class ({len(classes)}).")
    spec = ClassSpec(classes, ignore, [tuple(int(v) for v in c) for c in palette], source=where)
    if hierarchy is not None:
        groups = named if named is not None else hierarchy
        if named is not None and list(named["classes"]) != classes:
            raise DataError(f"{where}: class map {hierarchy!r} is for the classes {', '.join(named['classes'])}; "
                            f"this file declares {', '.join(classes)}. Give the map inline instead.")
        if not isinstance(groups, dict):
            raise DataError(f"{where}: `hierarchy` must be a built-in class map name ({', '.join(CLASS_MAPS)}) or "
                            "a mapping of levels (coarse, binary) to groups.")
        levels = {k: v for k, v in groups.items() if k != "classes"}
        bad = sorted(set(levels) - {"coarse", "binary"})
        if bad:
            raise DataError(f"{where}: unknown class map level(s) {', '.join(bad)} in `hierarchy`; the levels are "
                            "coarse and binary (fine is `classes`).")
        for level, grp in levels.items():
            spec.levels[level] = _level_from_groups(level, grp, classes, ignore, where)
    if hierarchical:
        missing = [lv for lv in ("coarse", "binary") if lv not in spec.levels]
        if missing:
            raise DataError(f"{where}: hierarchical segmentation needs class maps for {', '.join(missing)} under "
                            "`hierarchy` (e.g. `hierarchy: artefact`).")
    return spec


def _subdir(folder: Path, candidates: tuple[str, ...], what: str) -> str:
    for c in candidates:
        if (folder / c).is_dir():
            return c
    raise DataError(f"data folder {folder} has no {what} folder (looked for {', '.join(c + '/' for c in candidates)}).")


def check_mask(mask: np.ndarray, spec: ClassSpec, path: Path) -> np.ndarray:
    """Validate label values (and turn 0/255 binary masks into 0/1 when the spec allows)."""
    values = np.unique(mask)
    if spec.binary_255 and values.size and set(values.tolist()) <= {0, 255} and 255 in values:
        return (mask > 0).astype(np.uint8)
    allowed = set(range(spec.num_classes)) | ({spec.ignore_index} if spec.ignore_index is not None else set())
    bad = [int(v) for v in values if int(v) not in allowed]
    if bad:
        ign = f", ignore index {spec.ignore_index}" if spec.ignore_index is not None else ""
        raise DataError(f"mask {path} holds class value(s) {', '.join(map(str, bad[:10]))} outside the declared "
                        f"classes 0..{spec.num_classes - 1}{ign} ({spec.source}). Fix the mask or declare the "
                        "classes in data.yaml.")
    dtype = np.uint8 if max(allowed) <= 255 else np.uint16
    return mask.astype(dtype, copy=False)


def _signature(folder: Path, subs: tuple[str, ...]) -> tuple:
    out = []
    for sub in subs:
        for p in sorted((folder / sub).iterdir()):
            if p.is_file():
                st = p.stat()
                out.append((str(p), st.st_mtime_ns, st.st_size))
    y = find_yaml(folder)
    if y is not None:
        out.append((str(y), y.stat().st_mtime_ns, y.stat().st_size))
    return tuple(out)


@functools.lru_cache(maxsize=4)
def _load_masks_cached(folder: str, img_dir: str, mask_dir: str, signature: tuple, hierarchical: bool,
                       alpha: str) -> tuple[ClassSpec, tuple[Pair, ...]]:
    spec = load_class_spec(folder, hierarchical)
    items = []
    for stem, pimg, pmask in scan_pairs(folder, img_dir, mask_dir):
        img = apply_alpha(read_array(pimg), alpha, pimg)
        if img.dtype.kind == "f":
            img = img.astype(np.float32)
        mask = check_mask(read_mask(pmask), spec, pmask)
        if mask.shape != img.shape[:2]:
            raise DataError(f"mask {pmask} is {mask.shape[1]}x{mask.shape[0]} but its image {pimg.name} is "
                            f"{img.shape[1]}x{img.shape[0]}; a mask must have its image's size.")
        items.append(Pair(stem, img, mask))
    return spec, tuple(items)


def load_segmentation(folder: str | Path, hierarchical: bool = False, alpha: str = "error") -> tuple[ClassSpec, list[Pair]]:
    """Classes and items (image stored dtype HxWxC, mask HxW uint8/uint16), cached per process."""
    folder = Path(folder).resolve()
    if not folder.is_dir():
        raise DataError(f"data folder {folder} does not exist. Pass a folder with images/ and masks/ (index PNGs "
                        "matched by file name) and a data.yaml, or a bundled sample such as sample:damage.")
    img_dir, mask_dir = _subdir(folder, IMAGE_DIRS, "image"), _subdir(folder, MASK_DIRS, "mask")
    scan_pairs(folder, img_dir, mask_dir)  # name errors before the cache
    spec, items = _load_masks_cached(str(folder), img_dir, mask_dir, _signature(folder, (img_dir, mask_dir)),
                                     bool(hierarchical), alpha)
    return spec, list(items)


@functools.lru_cache(maxsize=4)
def _load_mattes_cached(folder: str, img_dir: str, alpha_dir: str, signature: tuple) -> tuple[Pair, ...]:
    items = []
    for stem, pimg, palpha in scan_pairs(folder, img_dir, alpha_dir):
        img = apply_alpha(read_array(pimg), "error", pimg)
        a = read_array(palpha)
        if a.shape[2] in (2, 4):  # an RGBA matte file: the alpha channel is the matte
            a = a[:, :, -1:]
        elif a.shape[2] == 3:
            if not (np.array_equal(a[:, :, 0], a[:, :, 1]) and np.array_equal(a[:, :, 0], a[:, :, 2])):
                raise DataError(f"alpha matte {palpha} is a colour image; save mattes as single-channel gray images.")
            a = a[:, :, :1]
        if a.dtype.kind == "f":
            a = np.clip(a, 0.0, 1.0).astype(np.float32)
        if a.shape[:2] != img.shape[:2]:
            raise DataError(f"alpha matte {palpha} is {a.shape[1]}x{a.shape[0]} but its image {pimg.name} is "
                            f"{img.shape[1]}x{img.shape[0]}; a matte must have its image's size.")
        items.append(Pair(stem, img, np.ascontiguousarray(a)))
    return tuple(items)


def load_mattes(folder: str | Path) -> list[Pair]:
    """Matting items: image (stored dtype, HxWx3) and alpha (stored dtype, HxWx1), cached per process."""
    folder = Path(folder).resolve()
    if not folder.is_dir():
        raise DataError(f"data folder {folder} does not exist. Pass a folder with images/ and alpha/ (mattes matched "
                        "by file name), or the bundled sample sample:matte.")
    img_dir, alpha_dir = _subdir(folder, IMAGE_DIRS, "image"), _subdir(folder, ALPHA_DIRS, "alpha matte")
    scan_pairs(folder, img_dir, alpha_dir)
    return list(_load_mattes_cached(str(folder), img_dir, alpha_dir, _signature(folder, (img_dir, alpha_dir))))


def hierarchical_targets(spec: ClassSpec):
    """A function fine-label crop (HxW) -> {"binary", "coarse", "fine"} int64 tensors."""
    import torch

    luts = {level: spec.levels[level].lut for level in ("binary", "coarse")}

    def transform(mask: np.ndarray) -> dict:
        m = np.ascontiguousarray(mask).astype(np.int64)
        out = {level: torch.from_numpy(lut[m]) for level, lut in luts.items()}
        out["fine"] = torch.from_numpy(m)
        return out

    return transform


def float_image(arr: np.ndarray) -> np.ndarray:
    """Stored image -> float32 [0, 1] (alias of :func:`platform.data.io.to_float`)."""
    return to_float(arr)
