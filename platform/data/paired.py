"""Paired few-shot data: a folder with ``input/`` and ``target/`` images matched by file name.

Images are held in memory for the whole training (a few-shot set is small), by default as
float32 in [0, 1]; ``load_pairs(..., compact=True)`` keeps the stored 8/16-bit integers instead
(4x / 2x less memory, converted to float per crop), which is what the tasks use. Training
draws random crops (:class:`CropDataset`), so a step never touches whole frames.
"""

from __future__ import annotations

import functools
import glob
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from platform.data.io import apply_alpha, is_image_file, read_array, to_float
from platform.errors import DataError

log = logging.getLogger(__name__)


@dataclass
class Pair:
    """One training/validation item: an input image and its target (image, mask or matte).

    Arrays are HxWxC float32 in [0, 1] (or, when loaded ``compact``, the stored uint8/uint16
    values; :func:`platform.data.io.to_float` converts). Masks are HxW integer labels.
    """

    name: str
    input: np.ndarray
    target: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        return self.input.shape[:2]


def _item_file(where: str | Path | None, name: str) -> str:
    """The file behind an item, for messages: ``where/a.png`` rather than ``where/a``."""
    stem = name.split("~", 1)[0]  # "a~rot90": a dihedral copy of item "a"
    if not where:
        return stem
    hits = sorted(f for f in Path(where).glob(f"{glob.escape(stem)}.*") if is_image_file(f))
    return str(hits[0]) if hits else f"{where}/{stem}"


def _list_images(folder: Path) -> dict[str, Path]:
    files = {}
    for p in sorted(folder.iterdir()):
        if is_image_file(p):
            if p.stem in files:
                raise DataError(f"{folder} has two images named {p.stem!r} ({files[p.stem].name}, {p.name}); "
                                "names must be unique so that inputs and targets can be matched.")
            files[p.stem] = p
    return files


def scan_pairs(folder: str | Path, a: str = "input", b: str = "target") -> list[tuple[str, Path, Path]]:
    """Match ``folder/a/*`` with ``folder/b/*`` by file stem, with clear errors."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"data folder {folder} does not exist. Pass --data DIR (a folder with {a}/ and {b}/ "
                        "images matched by file name) or use a bundled sample such as sample:vfx_grade.")
    for sub in (a, b):
        if not (folder / sub).is_dir():
            raise DataError(f"data folder {folder} has no {sub}/ subfolder. A paired data set needs {a}/ and "
                            f"{b}/ with images matched by file name (e.g. {a}/shot_010.png and {b}/shot_010.png).")
    ins, outs = _list_images(folder / a), _list_images(folder / b)
    if not ins:
        raise DataError(f"{folder / a} contains no images (looked for .png, .jpg, .tif, .exr ...).")
    only_in = sorted(set(ins) - set(outs))
    only_out = sorted(set(outs) - set(ins))
    if only_in or only_out:
        parts = []
        if only_in:
            parts.append(f"in {a}/ without a {b}: {', '.join(ins[s].name for s in only_in)}")
        if only_out:
            parts.append(f"in {b}/ without an {a}: {', '.join(outs[s].name for s in only_out)}")
        raise DataError(f"unmatched images in {folder}: " + "; ".join(parts) +
                        f". Every {a} image needs a {b} image with the same name (extension may differ).")
    return [(s, ins[s], outs[s]) for s in sorted(ins)]


def _signature(folder: Path, subs: tuple[str, ...] = ("input", "target")) -> tuple:
    return tuple((str(p), p.stat().st_mtime_ns, p.stat().st_size)
                 for sub in subs for p in sorted((folder / sub).iterdir()) if p.is_file())


def _load_one(path: Path, compact: bool, alpha: str) -> np.ndarray:
    arr = apply_alpha(read_array(path), alpha, path)
    return arr if compact and arr.dtype.kind == "u" else to_float(arr)


@functools.lru_cache(maxsize=4)
def _load_pairs_cached(folder: str, signature: tuple, compact: bool = False, alpha: str = "error") -> tuple[Pair, ...]:
    pairs = []
    for stem, pin, pout in scan_pairs(folder):
        x, y = _load_one(pin, compact, alpha), _load_one(pout, compact, alpha)
        if x.shape[:2] != y.shape[:2]:
            raise DataError(f"{pin}: input is {x.shape[1]}x{x.shape[0]} but target {pout.name} is "
                            f"{y.shape[1]}x{y.shape[0]}; pairs must have the same size.")
        if x.shape != y.shape:
            raise DataError(f"{pin}: input has {x.shape[2]} channels but target {pout.name} has {y.shape[2]}; "
                            "save both as RGB (or both with alpha and task.alpha: keep).")
        pairs.append(Pair(stem, x, y))
    return tuple(pairs)


def load_pairs(folder: str | Path, compact: bool = False, alpha: str = "error") -> list[Pair]:
    """Read every pair into memory (cached per process, invalidated when files change).

    ``compact``: keep 8/16-bit images as stored integers (float files stay float32).
    ``alpha``: the alpha policy of :func:`platform.data.io.apply_alpha` (default: an image
    with a non-opaque alpha channel is an error).
    """
    folder = Path(folder).resolve()
    scan_pairs(folder)  # validates before touching the cache
    return list(_load_pairs_cached(str(folder), _signature(folder), bool(compact), str(alpha)))


def split_pairs(pairs: list[Pair], holdout: int | list[str], *, fraction: float | None = None,
                folds: int | None = None, fold: int = 0, seed: int = 0) -> tuple[list[Pair], list[Pair]]:
    """Split pairs into (train, val); see :mod:`platform.data.splits` for the rules."""
    from platform.data.splits import split_names

    _, val_names = split_names([p.name for p in pairs], holdout=holdout, fraction=fraction, folds=folds,
                               fold=fold, seed=seed)
    val_set = set(val_names)
    return [p for p in pairs if p.name not in val_set], [p for p in pairs if p.name in val_set]


def to_model_range(img: np.ndarray) -> torch.Tensor:
    """HxWxC [0, 1] -> CxHxW [-1, 1] (float32; 8/16-bit arrays are scaled first)."""
    if img.dtype.kind != "f":
        img = to_float(img)
    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))) * 2.0 - 1.0


def from_model_range(t: torch.Tensor) -> np.ndarray:
    """CxHxW [-1, 1] -> HxWxC [0, 1]."""
    return ((t.float().clamp(-1, 1) + 1.0) / 2.0).permute(1, 2, 0).cpu().numpy()


def target_to_tensor(target: np.ndarray, kind: str) -> torch.Tensor:
    """A target crop as the loss expects it: images/mattes CxHxW in [-1, 1], masks HxW int64."""
    if kind == "mask":
        return torch.from_numpy(np.ascontiguousarray(target).astype(np.int64))
    if target.ndim == 2:
        target = target[:, :, None]
    return to_model_range(to_float(np.ascontiguousarray(target)))


class CropDataset(Dataset):
    """``length`` random paired crops per epoch from full images held in memory.

    Item ``i`` of epoch ``e`` is a pure function of ``(seed, e, i)``: a distributed sampler
    that splits the indices over workers gives each worker a distinct shard, and the union
    over workers is exactly what one worker would see (the basis of the DDP equivalence test).
    Geometric augmentation is applied identically to input and target through albumentations.

    ``augment``: a :class:`platform.data.augment.PairedAugment` (the search space's
    ``task.augment``); without it, the historical flips/rotate-90 with the given
    probabilities. ``target_kind``: ``"image"`` (img2img), ``"mask"`` (labels) or ``"alpha"``.
    ``target_transform``: applied to the augmented target crop (e.g. fine labels -> a dict of
    hierarchical levels); it must return tensors. ``where``: the images' folder, for messages.
    """

    def __init__(self, pairs: list[Pair], crop: int, length: int, seed: int = 0,
                 hflip: float = 0.5, vflip: float = 0.5, rotate90: float = 0.5, augment=None,
                 target_kind: str = "image", target_transform=None, where: str | Path | None = None):
        from platform.data.augment import PairedAugment

        if not pairs:
            raise DataError("no training items: the data set is empty, or every item is held out for validation.")
        for p in pairs:
            h, w = p.shape
            if h < crop or w < crop:
                raise DataError(f"image {_item_file(where, p.name)} is {w}x{h}, smaller than the crop size {crop}; lower task.crop "
                                f"to at most {min(h, w)} or remove the image.")
        self.pairs, self.crop, self.length, self.seed = pairs, crop, length, seed
        self.target_kind = target_kind
        self.target_transform = target_transform
        self.epoch = 0
        # Sample images in proportion to their area so that every pixel is equally likely.
        areas = np.array([p.shape[0] * p.shape[1] for p in pairs], dtype=np.float64)
        self.weights = areas / areas.sum()
        if augment is None:
            augment = PairedAugment({"hflip": hflip, "vflip": vflip, "rotate90": rotate90},
                                    target_kind="mask" if target_kind == "mask" else "image")
        self.augment = augment

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def crop_plan(self, epoch: int, index: int) -> tuple[int, int, int, int]:
        """(pair, top, left, augmentation seed) of item ``index`` in ``epoch``: a pure function of
        ``(seed, epoch, index)``, shared by the host pipeline and :mod:`platform.data.device_crops`."""
        rng = np.random.default_rng([self.seed, epoch, index])
        k = int(rng.choice(len(self.pairs), p=self.weights))
        h, w = self.pairs[k].shape
        y = int(rng.integers(0, h - self.crop + 1))
        x = int(rng.integers(0, w - self.crop + 1))
        return k, y, x, int(rng.integers(0, 2**31 - 1))

    def __getitem__(self, index: int):
        k, y, x, aug_seed = self.crop_plan(self.epoch, index)
        pair = self.pairs[k]
        a = to_float(pair.input[y:y + self.crop, x:x + self.crop])
        b = pair.target[y:y + self.crop, x:x + self.crop]
        if self.target_kind != "mask":
            b = to_float(b)
        a, b = self.augment(a, b, aug_seed)
        target = self.target_transform(b) if self.target_transform is not None else target_to_tensor(b, self.target_kind)
        return to_model_range(np.ascontiguousarray(a)), target
