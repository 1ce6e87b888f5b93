"""Training augmentation declared in a search space (``task.augment``), built on albumentations.

Three albumentations pipelines run in order on every training crop:

1. **geometric**, identical on the input and its target (image, mask or alpha matte): horizontal
   and vertical flips, rotation by multiples of 90 degrees, and shift-scale-rotate (an
   ``A.Affine`` with reflected borders, so no empty corners appear; masks use nearest-neighbour
   interpolation, images and mattes bilinear);
2. **photometric** (brightness/contrast, hue/saturation/value): on the input only, or on input
   and target with the same random parameters when ``photometric_on: both`` (image targets only:
   a mask or a matte is never recoloured). Each task declares its default;
3. **degradations** (Gaussian blur, Gaussian noise): on the input only, always - a target with
   added noise would teach the network to produce noise.

``task.augment`` keys (every number can be searched, e.g. ``p: {uniform: [0, 0.5]}``)::

    hflip: 0.5                    # probabilities
    vflip: 0.5
    rotate90: 0.5
    shift_scale_rotate: {p: 0.0, shift: 0.0625, scale: 0.1, rotate: 15}
    brightness_contrast: {p: 0.0, brightness: 0.1, contrast: 0.1}
    hue_saturation: {p: 0.0, hue: 5, saturation: 10, value: 5}
    blur: {p: 0.0, max_kernel: 5}
    noise: {p: 0.0, std: 0.03}     # maximum noise standard deviation (images in [0, 1])
    photometric_on: null          # input | both | null (the task's default)
    offline_copies: 0             # offline data multiplier: 3 = +hflip, +vflip, +rot90 copies
    extra: []                     # more albumentations transforms: [{type: CLAHE, p: 0.2, clip_limit: 2}]

Determinism: a crop's augmentation is a pure function of the seed handed to
:meth:`PairedAugment.__call__` (each pipeline is re-seeded with ``Compose.set_random_seed``).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from platform.errors import ConfigError

log = logging.getLogger(__name__)

PHOTOMETRIC_ON = ("input", "both")
#: The offline copies in the order they are added (the dihedral group minus the identity).
OFFLINE_OPS = ("hflip", "vflip", "rot90", "rot180", "rot270", "transpose", "transverse")

DEFAULTS: dict[str, Any] = {
    "hflip": 0.5,
    "vflip": 0.5,
    "rotate90": 0.5,
    "shift_scale_rotate": {"p": 0.0, "shift": 0.0625, "scale": 0.1, "rotate": 15.0},
    "brightness_contrast": {"p": 0.0, "brightness": 0.1, "contrast": 0.1},
    "hue_saturation": {"p": 0.0, "hue": 5.0, "saturation": 10.0, "value": 5.0},
    "blur": {"p": 0.0, "max_kernel": 5},
    "noise": {"p": 0.0, "std": 0.03},
    "photometric_on": None,
    "offline_copies": 0,
    "extra": [],
}


def concrete(value: Any) -> Any:
    """A plain value for a possibly still-searchable leaf (``{choice: [...]}`` -> first option,
    ``{uniform: [lo, hi]}`` -> lo). Lets a driver build a task from an unresolved search space
    (e.g. to check the data before trials start)."""
    if isinstance(value, dict) and len(value) == 1:
        kind, args = next(iter(value.items()))
        if kind in ("choice", "grid") and isinstance(args, list) and args:
            return args[0]
        if kind in ("uniform", "loguniform", "quniform", "randint") and isinstance(args, list) and args:
            return args[0]
    return value


def _merged(cfg: dict | None) -> dict[str, Any]:
    cfg = dict(cfg or {})
    out: dict[str, Any] = {}
    unknown = sorted(set(cfg) - set(DEFAULTS))
    if unknown:
        raise ConfigError(f"`task.augment` has unknown key(s) {', '.join(unknown)}; known: {', '.join(DEFAULTS)}.")
    for key, default in DEFAULTS.items():
        value = cfg.get(key, default)
        if isinstance(default, dict):
            value = value or {}
            extra = sorted(set(value) - set(default))
            if extra:
                raise ConfigError(f"`task.augment.{key}` has unknown key(s) {', '.join(extra)}; known: "
                                  f"{', '.join(default)}.")
            out[key] = {k: concrete(value.get(k, v)) for k, v in default.items()}
        else:
            out[key] = concrete(value)
    return out


def apply_dihedral(arr: np.ndarray, op: str) -> np.ndarray:
    """One exact flip/rotation of an HxW(xC) array (no interpolation)."""
    if op == "hflip":
        out = arr[:, ::-1]
    elif op == "vflip":
        out = arr[::-1]
    elif op == "rot90":
        out = np.rot90(arr, 1)
    elif op == "rot180":
        out = np.rot90(arr, 2)
    elif op == "rot270":
        out = np.rot90(arr, 3)
    elif op == "transpose":
        out = np.swapaxes(arr, 0, 1)
    elif op == "transverse":
        out = np.rot90(np.swapaxes(arr, 0, 1), 2)
    else:
        raise ConfigError(f"unknown offline augmentation {op!r}; known: {', '.join(OFFLINE_OPS)}.")
    return np.ascontiguousarray(out)


def offline_ops(copies: int) -> tuple[str, ...]:
    """The operations behind ``offline_copies`` (0..7)."""
    copies = int(copies)
    if not 0 <= copies <= len(OFFLINE_OPS):
        raise ConfigError(f"`task.augment.offline_copies` is {copies}; it must be between 0 and {len(OFFLINE_OPS)} "
                          f"(copies are, in order: {', '.join(OFFLINE_OPS)}).")
    return OFFLINE_OPS[:copies]


class PairedAugment:
    """The three pipelines for one task; call ``aug(image, target, seed)``.

    ``target_kind``: ``"image"`` (img2img: float HxWxC), ``"mask"`` (uint8/uint16 HxW labels)
    or ``"alpha"`` (float HxWx1 matte). ``default_photometric_on``: the task's declaration.
    """

    def __init__(self, cfg: dict | None, target_kind: str = "image", default_photometric_on: str = "input"):
        import albumentations as A
        import cv2

        if target_kind not in ("image", "mask", "alpha"):
            raise ValueError(f"target_kind must be image, mask or alpha, got {target_kind!r}")
        c = _merged(cfg)
        self.config = c
        self.target_kind = target_kind
        on = c["photometric_on"] or default_photometric_on
        if on not in PHOTOMETRIC_ON:
            raise ConfigError(f"`task.augment.photometric_on` is {on!r}; allowed: {', '.join(PHOTOMETRIC_ON)}.")
        if on == "both" and target_kind != "image":
            on = "input"  # a mask or matte is not a picture: never recoloured
        self.photometric_on = on
        for key in ("hflip", "vflip", "rotate90"):
            _check_p(c[key], f"task.augment.{key}")
        geo: list = [A.HorizontalFlip(p=c["hflip"]), A.VerticalFlip(p=c["vflip"]), A.RandomRotate90(p=c["rotate90"])]
        ssr = c["shift_scale_rotate"]
        if _check_p(ssr["p"], "task.augment.shift_scale_rotate.p") > 0:
            geo.append(A.Affine(translate_percent=(-float(ssr["shift"]), float(ssr["shift"])),
                                scale=(1.0 - float(ssr["scale"]), 1.0 + float(ssr["scale"])),
                                rotate=(-float(ssr["rotate"]), float(ssr["rotate"])),
                                border_mode=cv2.BORDER_REFLECT_101, interpolation=cv2.INTER_LINEAR,
                                mask_interpolation=cv2.INTER_NEAREST, p=float(ssr["p"])))
        photo: list = []
        bc = c["brightness_contrast"]
        if _check_p(bc["p"], "task.augment.brightness_contrast.p") > 0:
            photo.append(A.RandomBrightnessContrast(brightness_limit=float(bc["brightness"]),
                                                    contrast_limit=float(bc["contrast"]), p=float(bc["p"])))
        hs = c["hue_saturation"]
        if _check_p(hs["p"], "task.augment.hue_saturation.p") > 0:
            photo.append(A.HueSaturationValue(hue_shift_limit=float(hs["hue"]), sat_shift_limit=float(hs["saturation"]),
                                              val_shift_limit=float(hs["value"]), p=float(hs["p"])))
        degrade: list = []
        bl = c["blur"]
        if _check_p(bl["p"], "task.augment.blur.p") > 0:
            k = int(bl["max_kernel"])
            if k < 3:
                raise ConfigError(f"`task.augment.blur.max_kernel` is {k}; it must be >= 3.")
            degrade.append(A.GaussianBlur(blur_limit=(3, k | 1), p=float(bl["p"])))
        nz = c["noise"]
        if _check_p(nz["p"], "task.augment.noise.p") > 0:
            degrade.append(A.GaussNoise(std_range=(0.0, float(nz["std"])), p=float(nz["p"])))
        for i, spec in enumerate(c["extra"] or []):
            t = _extra_transform(A, spec, i)
            (geo if isinstance(t, A.DualTransform) else photo).append(t)

        other = "mask" if target_kind == "mask" else "image"
        self._geo = A.Compose(geo, additional_targets={"target": other})
        self._photo = (A.Compose(photo, additional_targets={"target": "image"} if on == "both" else None)
                       if photo else None)
        self._degrade = A.Compose(degrade) if degrade else None
        self.offline = offline_ops(c["offline_copies"])

    def flip_probabilities(self) -> tuple[float, float, float] | None:
        """(hflip, vflip, rotate90) when flips and 90° rotations are the only augmentation, else None."""
        if self._photo is not None or self._degrade is not None or len(self._geo.transforms) != 3:
            return None
        c = self.config
        return float(c["hflip"]), float(c["vflip"]), float(c["rotate90"])

    def __call__(self, image: np.ndarray, target: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(seed)
        seeds = rng.integers(0, 2**31 - 1, size=3)
        self._geo.set_random_seed(int(seeds[0]))
        out = self._geo(image=image, target=target)
        image, target = out["image"], out["target"]
        if self._photo is not None:
            self._photo.set_random_seed(int(seeds[1]))
            if self.photometric_on == "both":
                out = self._photo(image=image, target=target)
                image, target = out["image"], out["target"]
            else:
                image = self._photo(image=image)["image"]
        if self._degrade is not None:
            self._degrade.set_random_seed(int(seeds[2]))
            image = self._degrade(image=image)["image"]
        if image.dtype.kind == "f":
            image = np.clip(image, 0.0, 1.0) if self._photo is not None or self._degrade is not None else image
        return image, target


def _check_p(p: Any, where: str) -> float:
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p <= 1:
        raise ConfigError(f"`{where}` is {p!r}; a probability must be a number in [0, 1].")
    return float(p)


def _extra_transform(A, spec: Any, index: int):
    where = f"task.augment.extra[{index}]"
    if not isinstance(spec, dict) or not isinstance(spec.get("type"), str):
        raise ConfigError(f"`{where}` is {spec!r}; give {{type: <albumentations transform>, p: ..., <options>}}.")
    kwargs = {k: concrete(v) for k, v in spec.items() if k != "type"}
    cls = getattr(A, spec["type"], None)
    if not isinstance(cls, type) or not issubclass(cls, (A.DualTransform, A.ImageOnlyTransform)):
        raise ConfigError(f"`{where}.type` is {spec['type']!r}, which is not an albumentations image transform "
                          "(e.g. CLAHE, RandomGamma, ElasticTransform).")
    try:
        return cls(**kwargs)
    except Exception as exc:  # albumentations validates its arguments with pydantic
        raise ConfigError(f"`{where}` ({spec['type']}): {exc}") from None
