"""Paired few-shot data: a folder with ``input/`` and ``target/`` images matched by file name."""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from platform.data.io import is_image_file, read_image, to_rgb
from platform.errors import DataError

log = logging.getLogger(__name__)


@dataclass
class Pair:
    name: str
    input: np.ndarray  # float32 HxWx3 in [0, 1]
    target: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        return self.input.shape[:2]


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


def _signature(folder: Path) -> tuple:
    return tuple((str(p), p.stat().st_mtime_ns, p.stat().st_size)
                 for sub in ("input", "target") for p in sorted((folder / sub).iterdir()) if p.is_file())


@functools.lru_cache(maxsize=4)
def _load_pairs_cached(folder: str, signature: tuple) -> tuple[Pair, ...]:
    pairs = []
    for stem, pin, pout in scan_pairs(folder):
        x, y = to_rgb(read_image(pin), pin), to_rgb(read_image(pout), pout)
        if x.shape != y.shape:
            raise DataError(f"{pin.name}: input is {x.shape[1]}x{x.shape[0]} but target {pout.name} is "
                            f"{y.shape[1]}x{y.shape[0]}; pairs must have the same size.")
        pairs.append(Pair(stem, x, y))
    return tuple(pairs)


def load_pairs(folder: str | Path) -> list[Pair]:
    """Read every pair into memory (cached per process, invalidated when files change)."""
    folder = Path(folder).resolve()
    scan_pairs(folder)  # validates before touching the cache
    return list(_load_pairs_cached(str(folder), _signature(folder)))


def split_pairs(pairs: list[Pair], holdout: int | list[str]) -> tuple[list[Pair], list[Pair]]:
    names = [p.name for p in pairs]
    if isinstance(holdout, int):
        if holdout < 0 or holdout >= len(pairs):
            raise DataError(f"task.val_holdout is {holdout} but the data set has {len(pairs)} pairs; hold out "
                            f"between 0 and {len(pairs) - 1} so that something is left to train on.")
        val_names = set(names[len(names) - holdout:]) if holdout else set()
    else:
        missing = [n for n in holdout if n not in names]
        if missing:
            raise DataError(f"task.val_holdout names {', '.join(missing)}, which are not in the data set "
                            f"(pairs: {', '.join(names)}).")
        val_names = set(holdout)
        if len(val_names) >= len(pairs):
            raise DataError("task.val_holdout holds out every pair; leave at least one to train on.")
    train = [p for p in pairs if p.name not in val_names]
    val = [p for p in pairs if p.name in val_names]
    return train, val


def to_model_range(img: np.ndarray) -> torch.Tensor:
    """HxWxC [0, 1] -> CxHxW [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))) * 2.0 - 1.0


def from_model_range(t: torch.Tensor) -> np.ndarray:
    """CxHxW [-1, 1] -> HxWxC [0, 1]."""
    return ((t.float().clamp(-1, 1) + 1.0) / 2.0).permute(1, 2, 0).cpu().numpy()


class CropDataset(Dataset):
    """``length`` random paired crops per epoch from full images held in memory.

    Item ``i`` of epoch ``e`` is a pure function of ``(seed, e, i)``: a distributed sampler
    that splits the indices over workers gives each worker a distinct shard, and the union
    over workers is exactly what one worker would see (the basis of the DDP equivalence test).
    Geometric augmentation is applied identically to input and target through albumentations.
    """

    def __init__(self, pairs: list[Pair], crop: int, length: int, seed: int = 0,
                 hflip: float = 0.5, vflip: float = 0.5, rotate90: float = 0.5):
        import albumentations as A

        for p in pairs:
            h, w = p.shape
            if h < crop or w < crop:
                raise DataError(f"image {p.name} is {w}x{h}, smaller than the crop size {crop}; lower task.crop "
                                f"to at most {min(h, w)} or remove the image.")
        self.pairs, self.crop, self.length, self.seed = pairs, crop, length, seed
        self.epoch = 0
        # Sample images in proportion to their area so that every pixel is equally likely.
        areas = np.array([p.shape[0] * p.shape[1] for p in pairs], dtype=np.float64)
        self.weights = areas / areas.sum()
        self.transform = A.Compose(
            [A.HorizontalFlip(p=hflip), A.VerticalFlip(p=vflip), A.RandomRotate90(p=rotate90)],
            additional_targets={"target": "image"},
        )

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int):
        rng = np.random.default_rng([self.seed, self.epoch, index])
        k = int(rng.choice(len(self.pairs), p=self.weights))
        pair = self.pairs[k]
        h, w = pair.shape
        y = int(rng.integers(0, h - self.crop + 1))
        x = int(rng.integers(0, w - self.crop + 1))
        a = pair.input[y:y + self.crop, x:x + self.crop]
        b = pair.target[y:y + self.crop, x:x + self.crop]
        self.transform.set_random_seed(int(rng.integers(0, 2**31 - 1)))
        out = self.transform(image=a, target=b)
        return to_model_range(out["image"]), to_model_range(out["target"])
