"""Transfer functions: how a task maps stored pixel values to the network's [0, 1] (then [-1, 1]).

Integer files are display-referred and already in [0, 1] after :func:`platform.data.io.to_float`
(``identity``). Float files (EXR, float TIFF) usually hold scene-linear light, which may exceed 1:
they stay linear in memory and on disk, and the task declares in ``task.transfer`` how they are
encoded for the network; predictions are decoded with the exact inverse before they are written.

==========  ===========================================  =====================================
name        encode (data -> [0, 1])                       domain (exact round trip)
==========  ===========================================  =====================================
identity    ``x``                                          [0, 1]
linear      ``x / white`` (stays linear)                   [0, white]
srgb        the sRGB OETF (IEC 61966-2-1)                  [0, 1] linear light
log         ``(log2(x + offset) - lo) / (hi - lo)`` with   [0, max_value]
            ``lo = log2(offset)``, ``hi = log2(max_value
            + offset)`` (0 -> 0, max_value -> 1)
==========  ===========================================  =====================================

``task.transfer`` is a name, or a mapping with ``name`` and the options above, e.g.
``{name: log, max_value: 64.0, offset: 0.0039}``. Every function works on NumPy arrays and
torch tensors; ``decode(encode(x)) == x`` up to float32 rounding inside the domain. Values
outside the domain are clipped by ``encode`` (:meth:`Transfer.out_of_domain` counts them, so a
task can warn).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from platform.errors import ConfigError

TRANSFERS = ("identity", "linear", "srgb", "log")


def _lib(x):
    import torch

    return torch if isinstance(x, torch.Tensor) else np


def _clip(x, lo: float, hi: float):
    return x.clamp(lo, hi) if _lib(x) is not np else np.clip(x, lo, hi)


@dataclass(frozen=True)
class Transfer:
    """An invertible map between stored values and the network's [0, 1]."""

    name: str = "identity"
    options: dict[str, float] = field(default_factory=dict)

    @property
    def domain(self) -> tuple[float, float]:
        if self.name == "linear":
            return 0.0, float(self.options["white"])
        if self.name == "log":
            return 0.0, float(self.options["max_value"])
        return 0.0, 1.0

    def out_of_domain(self, x: np.ndarray) -> float:
        """Fraction of values outside the domain (they would be clipped)."""
        lo, hi = self.domain
        x = np.asarray(x)
        return float(np.count_nonzero((x < lo) | (x > hi))) / max(1, x.size)

    def encode(self, x):
        """Stored values -> [0, 1]."""
        lo, hi = self.domain
        x = _clip(x, lo, hi)
        lib = _lib(x)
        if self.name == "identity":
            return x
        if self.name == "linear":
            return x / self.options["white"]
        if self.name == "srgb":
            upper = _clip(x, 0.0031308, 1.0)  # keeps the power's argument in its own branch
            return lib.where(x <= 0.0031308, 12.92 * x, 1.055 * upper ** (1 / 2.4) - 0.055)
        off = self.options["offset"]
        a, b = math.log2(off), math.log2(self.options["max_value"] + off)
        return (lib.log2(x + off) - a) / (b - a)

    def decode(self, y):
        """[0, 1] -> stored values (the exact inverse of :meth:`encode` inside the domain)."""
        y = _clip(y, 0.0, 1.0)
        lib = _lib(y)
        if self.name == "identity":
            return y
        if self.name == "linear":
            return y * self.options["white"]
        if self.name == "srgb":
            upper = _clip(y, 0.04045, 1.0)
            return lib.where(y <= 0.04045, y / 12.92, ((upper + 0.055) / 1.055) ** 2.4)
        off = self.options["offset"]
        a, b = math.log2(off), math.log2(self.options["max_value"] + off)
        return 2.0 ** (y * (b - a) + a) - off

    def describe(self) -> str:
        opts = ", ".join(f"{k}={v:g}" for k, v in self.options.items())
        return f"{self.name}({opts})" if opts else self.name


_DEFAULTS: dict[str, dict[str, float]] = {
    "identity": {},
    "srgb": {},
    "linear": {"white": 1.0},
    "log": {"max_value": 16.0, "offset": 1.0 / 256.0},
}


def get_transfer(spec: Any = "identity", where: str = "task.transfer") -> Transfer:
    """A :class:`Transfer` from a name or ``{name: ..., <options>}``; bad specs raise ConfigError."""
    if spec is None:
        spec = "identity"
    if isinstance(spec, Transfer):
        return spec
    if isinstance(spec, str):
        name, given = spec, {}
    elif isinstance(spec, dict):
        given = dict(spec)
        name = given.pop("name", None)
        if not isinstance(name, str):
            raise ConfigError(f"`{where}` needs a `name` ({', '.join(TRANSFERS)}), got {spec!r}.")
    else:
        raise ConfigError(f"`{where}` is {spec!r}; give a name ({', '.join(TRANSFERS)}) or {{name: ..., ...}}.")
    if name not in _DEFAULTS:
        raise ConfigError(f"`{where}` names an unknown transfer function {name!r}; known: {', '.join(TRANSFERS)}.")
    unknown = sorted(set(given) - set(_DEFAULTS[name]))
    if unknown:
        allowed = ", ".join(_DEFAULTS[name]) or "none"
        raise ConfigError(f"`{where}`: transfer {name!r} has no option(s) {', '.join(unknown)} (options: {allowed}).")
    options = {**_DEFAULTS[name], **{k: float(v) for k, v in given.items()}}
    for key, value in options.items():
        if not math.isfinite(value) or value <= 0:
            raise ConfigError(f"`{where}.{key}` is {value!r}; it must be a positive number.")
    return Transfer(name, options)
