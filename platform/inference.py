"""Full-resolution inference shared by validation, the registry model, ``predict`` and export.

Layers, from the network outwards:

* :func:`pad_forward` runs a network at any size (reflect-pad to its ``size_multiple``,
  crop back); :func:`predict_image` is the trainer's whole-frame pass (clamped to [-1, 1]).
* :func:`tiled_predict` runs frames that do not fit in memory as overlapping tiles blended
  with complementary linear ramps, so no seam shows; for a network whose receptive field
  is shorter than ``overlap // 4`` the result equals the whole-frame pass (see the function).
  :func:`auto_tile` picks the tile size from the free memory of the device.
* :func:`tta_predict` averages the eight flips/rotations (each inverted) of a frame.
* :func:`apply_tlc` converts a NAFNet to its test-time local converter (TLC) so that the
  channel-attention statistics at full resolution match those the network saw on crops.
* :class:`Predictor` ties these to a trial config: input preprocessing, and the task's output
  kind object (:mod:`platform.tasks.outputs`), which encodes frames and decodes the network's
  output. The kind comes from the caller (:func:`platform.tasks.predictor` looks it up in the
  task registry): this module does not import the tasks.
  ``python -m platform.predict`` and the MLflow pyfunc model both go through it, so a served
  model answers exactly what ``predict`` writes.

Network tensors are float NCHW in the trainer's range [-1, 1]; images handed to
:class:`Predictor` are float32 H x W x C in [0, 1].
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from platform.errors import ConfigError

log = logging.getLogger(__name__)

#: Rec. 709 luma weights (RGB -> grey, as a 3 x 1 matrix for ``image @ REC709_LUMA``).
REC709_LUMA = np.array([0.2126, 0.7152, 0.0722], dtype=np.float32)[:, None]

PRECISIONS = ("fp32", "bf16", "fp16")
DEFAULT_OVERLAP = 32
MIN_TILE = 128
MAX_AUTO_TILE = 4096

Output = torch.Tensor | dict


# --------------------------------------------------------------------------- basics
def size_multiple(model: torch.nn.Module) -> int:
    model = getattr(model, "module", model)  # DDP
    return int(getattr(model, "size_multiple", 1) or 1)


def autocast_for(device: torch.device, precision: str):
    """The autocast context for a precision name ("fp32", "bf16", "fp16")."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if precision == "fp16" and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()


def pad_forward(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Run ``model`` on ``x`` (NCHW) at any size: reflect-pad to the model's multiple, crop back."""
    m = size_multiple(model)
    h, w = x.shape[-2:]
    ph, pw = (-h) % m, (-w) % m
    if ph or pw:
        mode = "reflect" if ph < h and pw < w else "replicate"
        x = F.pad(x, (0, pw, 0, ph), mode=mode)
    y = model(x)
    return _map(y, lambda t: t[..., :h, :w])


@torch.inference_mode()
def predict_image(model: torch.nn.Module, x: torch.Tensor, precision: str = "fp32") -> torch.Tensor:
    """Deterministic full-frame prediction in [-1, 1] (float32) for an NCHW batch."""
    with autocast_for(x.device, precision):
        y = pad_forward(model, x)
    return y.float().clamp_(-1.0, 1.0)


def _map(y: Output, fn: Callable[[torch.Tensor], torch.Tensor]) -> Output:
    """Apply ``fn`` to a network output: a tensor, or a dict of tensors (hierarchical heads)."""
    if isinstance(y, Mapping):
        return {k: _map(v, fn) for k, v in y.items()}
    if isinstance(y, (list, tuple)):
        return type(y)(_map(v, fn) for v in y)
    return fn(y)


def _zip(a: Output, b: Output, fn) -> Output:
    if isinstance(a, Mapping):
        return {k: _zip(a[k], b[k], fn) for k in a}
    if isinstance(a, (list, tuple)):
        return type(a)(_zip(u, v, fn) for u, v in zip(a, b))
    return fn(a, b)


def _forward(model: torch.nn.Module, x: torch.Tensor, precision: str) -> Output:
    with autocast_for(x.device, precision):
        y = pad_forward(model, x)
    return _map(y, lambda t: t.float())


def _finish(y: Output, clamp: bool) -> Output:
    return _map(y, lambda t: t.clamp_(-1.0, 1.0)) if clamp else y


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ConfigError(f"precision {precision!r} is not supported; use one of {', '.join(PRECISIONS)}.")
    return precision


# --------------------------------------------------------------------------- tiles
def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of ``tile`` pixels covering ``length`` with ``overlap`` pixels shared.

    Every tile is full size: the last one is shifted back to end at the border (it then
    overlaps its neighbour by more than ``overlap``, which the blend weights handle).
    """
    if length <= tile:
        return [0]
    stride = tile - overlap
    return list(range(0, length - tile, stride)) + [length - tile]


def blend_profile(size: int, overlap: int, ramp_before: bool, ramp_after: bool) -> torch.Tensor:
    """1-D blend weights of one tile along one axis.

    On a side shared with a neighbour the outer ``overlap // 4`` pixels get weight 0 (they
    are the pixels a convolutional network predicts worst, with padding in its receptive
    field), then the weight rises linearly to 1 over the middle half of the overlap. The
    neighbour's profile is the mirror image, so for the regular stride the weights of two
    tiles sum to exactly 1 and the transition is a cross-fade rather than a seam. Sides on
    the frame's border keep weight 1.
    """
    w = torch.ones(size, dtype=torch.float32)
    if overlap <= 0:
        return w
    margin = overlap // 4
    ramp_len = overlap - 2 * margin
    ramp = (torch.arange(ramp_len, dtype=torch.float32) + 0.5) / ramp_len
    if ramp_before:
        rise = torch.ones(size)
        rise[:margin] = 0.0
        rise[margin:margin + ramp_len] = ramp
        w = torch.minimum(w, rise)
    if ramp_after:
        fall = torch.ones(size)
        if margin:
            fall[size - margin:] = 0.0
        fall[size - margin - ramp_len:size - margin] = ramp.flip(0)
        w = torch.minimum(w, fall)
    return w


def _check_tiling(model: torch.nn.Module, tile: int, overlap: int) -> tuple[int, int]:
    tile, overlap = int(tile), int(overlap)
    if overlap < 0:
        raise ConfigError(f"tile overlap is {overlap}; it must be >= 0 pixels.")
    m = size_multiple(model)
    rounded = max(m, (tile // m) * m)
    if rounded != tile:
        log.info("tile %d rounded down to %d (a multiple of the network's %d)", tile, rounded, m)
    tlc = getattr(getattr(model, "module", model), "tlc", None)
    if tlc and overlap < max(tlc["base_size"]) and not getattr(model, "_warned_tlc_overlap", False):
        log.warning("tile overlap %d px is smaller than the %d px TLC window of this NAFNet: tiles will not match "
                    "the whole-frame result closely (use tiles of at least %d px)", overlap, max(tlc["base_size"]),
                    2 * max(tlc["base_size"]))
        model._warned_tlc_overlap = True
    if overlap * 2 > rounded:
        raise ConfigError(
            f"tile overlap {overlap} is more than half the tile size {rounded}; use a larger --tile "
            f"or a smaller --overlap (e.g. --overlap {rounded // 4})."
        )
    return rounded, overlap


@torch.inference_mode()
def tiled_predict(model: torch.nn.Module, x: torch.Tensor, tile: int | None, overlap: int | None = None,
                  precision: str = "fp32", *, clamp: bool = True) -> Output:
    """Prediction of an NCHW batch as overlapping ``tile`` x ``tile`` tiles blended seamlessly.

    Args:
        model: the network (eval mode), on ``x``'s device.
        x: NCHW float input in the trainer's range.
        tile: tile side in pixels (rounded down to the network's ``size_multiple``); ``None``
            or 0 chooses it from free memory (:func:`auto_tile`); a frame no larger than the
            tile is run whole (then the result *is* :func:`predict_image`'s).
        overlap: pixels shared by neighbouring tiles (``None``: :func:`default_overlap`, 32 px, or
            the TLC window for a TLC NAFNet). The outer quarter of each overlap is
            discarded and the middle half cross-faded, so a network whose receptive field
            reaches less than ``overlap // 4`` pixels gives the whole-frame result exactly
            (up to float rounding); networks with wider context (global pooling) differ a little
            near tile borders, without a visible seam.
        precision: "fp32", "bf16" or "fp16" autocast.
        clamp: clamp to [-1, 1] like :func:`predict_image` (image outputs); pass ``False`` for
            logits (segmentation).

    Returns the output in float32 (a tensor, or a dict of tensors for multi-head networks).
    """
    check_precision(precision)
    h, w = x.shape[-2:]
    if not tile:
        tile = auto_tile(model, x, precision, overlap)
    if tile is None or (h <= tile and w <= tile):
        return _finish(_forward(model, x, precision), clamp)
    tile, overlap = _check_tiling(model, tile, resolve_overlap(model, tile, overlap))
    ys, xs = tile_starts(h, tile, overlap), tile_starts(w, tile, overlap)
    th, tw = min(tile, h), min(tile, w)
    acc: Output | None = None
    wsum = torch.zeros(1, 1, h, w, device=x.device)
    for iy, y0 in enumerate(ys):
        wy = blend_profile(th, overlap, iy > 0, iy < len(ys) - 1)
        for ix, x0 in enumerate(xs):
            wx = blend_profile(tw, overlap, ix > 0, ix < len(xs) - 1)
            weight = (wy[:, None] * wx[None, :]).to(x.device)[None, None]
            out = _forward(model, x[..., y0:y0 + th, x0:x0 + tw], precision)
            if first_output(out).shape[-2:] != (th, tw):
                raise ConfigError("tiled inference needs a network whose output has its input's size, got "
                                  f"{tuple(first_output(out).shape[-2:])} for a {th}x{tw} tile.")
            if acc is None:
                acc = _map(out, lambda t: torch.zeros(*t.shape[:-2], h, w, device=x.device))
            # _zip calls the function at once, inside this iteration: the loop variables are current.
            _zip(acc, out, lambda a, o: a[..., y0:y0 + th, x0:x0 + tw].add_(o * weight))  # noqa: B023
            wsum[..., y0:y0 + th, x0:x0 + tw] += weight
    return _finish(_map(acc, lambda a: a.div_(wsum)), clamp)


def default_overlap(model: torch.nn.Module) -> int:
    """Tile overlap for ``model``: 32 px, or for a TLC NAFNet its pooling window (1.5x the
    training crop), since its local statistics reach that far (rounded up to 8 px)."""
    tlc = getattr(getattr(model, "module", model), "tlc", None)
    if tlc:
        return max(DEFAULT_OVERLAP, math.ceil(max(tlc["base_size"]) / 8.0) * 8)
    return DEFAULT_OVERLAP


def resolve_overlap(model: torch.nn.Module, tile: int | None, overlap: int | None) -> int:
    """``overlap``, or the default one, which is capped at half the tile so that a default never
    makes an explicit tile size invalid."""
    if overlap is not None:
        return int(overlap)
    overlap = default_overlap(model)
    if tile:
        m = size_multiple(model)
        overlap = min(overlap, max(m, (int(tile) // m) * m) // 2)
    return overlap


# --------------------------------------------------------------------------- memory
_BYTES_PER_PIXEL: weakref.WeakKeyDictionary[torch.nn.Module, dict] = weakref.WeakKeyDictionary()


def free_memory_bytes(device: torch.device) -> int:
    """Free memory of ``device``: the CUDA allocator's view, or the host's MemAvailable."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


@torch.inference_mode()
def bytes_per_pixel(model: torch.nn.Module, device: torch.device, channels: int, precision: str = "fp32") -> float:
    """Peak inference memory per input pixel (batch 1), estimated once on a small probe frame.

    The peak is taken as 6x the largest activation that forward hooks see (a block's input,
    output and residual plus a U-Net's skip tensors): PyTorch does not track host memory, and
    on CUDA reading the allocator's peak would mean resetting it under a trainer that reports
    it (validation calls this). Checked against the measured RSS of NAFNet-small at 960x544 on
    the CPU: estimate 0.75 GiB, measured 0.70 GiB.
    """
    key = (str(device), channels, precision)
    cache = _BYTES_PER_PIXEL.setdefault(model, {})
    if key in cache:
        return cache[key]
    m = size_multiple(model)
    side = max(128, 2 * m)
    side = ((side + m - 1) // m) * m
    param = next(model.parameters(), None)
    dtype = param.dtype if param is not None else torch.float32
    probe = torch.zeros(1, channels, side, side, device=device, dtype=dtype)
    largest = [probe.numel() * 4]

    def hook(_module, _inputs, output):
        for t in (output.values() if isinstance(output, Mapping) else
                  output if isinstance(output, (list, tuple)) else (output,)):
            if isinstance(t, torch.Tensor):
                largest[0] = max(largest[0], t.numel() * t.element_size())

    handles = [mod.register_forward_hook(hook) for mod in model.modules()]
    try:
        _forward(model, probe, precision)
    finally:
        for handle in handles:
            handle.remove()
    value = 6.0 * largest[0] / (side * side)
    cache[key] = value
    return value


def auto_tile(model: torch.nn.Module, x: torch.Tensor, precision: str = "fp32", overlap: int | None = None,
              fraction: float = 0.5) -> int | None:
    """The tile side for ``x`` that fits in ``fraction`` of the free memory; ``None`` if the
    whole frame fits (no tiling).

    The side is rounded down to a multiple of 256 px (and of the network's multiple) so that
    small changes in free memory do not change the tiling, and so the output bytes; for
    results that are identical across machines give the tile size explicitly.
    """
    overlap = default_overlap(model) if overlap is None else overlap
    n, c, h, w = x.shape
    per_pixel = bytes_per_pixel(model, x.device, c, precision) * n
    budget = free_memory_bytes(x.device) * fraction
    m = size_multiple(model)
    ph, pw = h + (-h) % m, w + (-w) % m
    if ph * pw * per_pixel <= budget:
        return None
    side = int(math.sqrt(max(budget, 1.0) / per_pixel))
    side = min(MAX_AUTO_TILE, side)
    if side >= 256:
        side = (side // 256) * 256
    side = max(MIN_TILE, 2 * overlap + m, side)
    side = ((side + m - 1) // m) * m
    log.info("frame %dx%d does not fit in %.1f GiB: tiles of %d px (overlap %d)", w, h, budget / 2**30, side, overlap)
    return side


# --------------------------------------------------------------------------- TTA
TTA_TRANSFORMS: dict[str, tuple[tuple[int, bool], ...]] = {
    "none": ((0, False),),
    "flips": ((0, False), (0, True), (2, False), (2, True)),  # identity, h-flip, 180°, v-flip
    "d4": tuple((k, flip) for flip in (False, True) for k in range(4)),  # + the four 90° rotations
}


def _transform(t: torch.Tensor, k: int, flip: bool) -> torch.Tensor:
    if flip:
        t = t.flip(-1)
    return torch.rot90(t, k, dims=(-2, -1)) if k else t


def _untransform(t: torch.Tensor, k: int, flip: bool) -> torch.Tensor:
    if k:
        t = torch.rot90(t, -k, dims=(-2, -1))
    return t.flip(-1) if flip else t


@torch.inference_mode()
def tta_predict(model: torch.nn.Module, x: torch.Tensor, precision: str = "fp32", tile: int | None = None,
                overlap: int | None = None, *, clamp: bool = True, transforms: str = "d4",
                run: Callable[[torch.Tensor], Output] | None = None) -> Output:
    """Test-time augmentation: the mean over flips/rotations of the inverted predictions.

    ``transforms`` is "d4" (the 8 flips and 90° rotations, the default), "flips" (4) or "none".
    The mean over a group of transforms makes the result equivariant to that group: the
    prediction of a flipped frame is the flipped prediction. Raw outputs (logits for
    segmentation) are averaged; the clamp is applied to the mean.
    """
    if transforms not in TTA_TRANSFORMS:
        raise ConfigError(f"TTA transforms {transforms!r} unknown; use one of {', '.join(TTA_TRANSFORMS)}.")
    if run is None:
        if not tile:
            h, w = x.shape[-2:]
            tile = auto_tile(model, x if h >= w else x.transpose(-2, -1), precision, overlap)

        def run(t: torch.Tensor) -> Output:
            return tiled_predict(model, t, tile, overlap, precision, clamp=False)

    acc: Output | None = None
    group = TTA_TRANSFORMS[transforms]
    for k, flip in group:
        out = _map(run(_transform(x, k, flip)), lambda t, k=k, flip=flip: _untransform(t, k, flip))
        acc = out if acc is None else _zip(acc, out, lambda a, o: a.add_(o))
    return _finish(_map(acc, lambda a: a.div_(len(group))), clamp)


# --------------------------------------------------------------------------- TLC
def apply_tlc(model: torch.nn.Module, config: Mapping[str, Any] | None) -> bool:
    """Convert a NAFNet in place to TLC with the trial's training crop; True if converted.

    NAFNet's channel attention pools globally; trained on crops of ``task.crop`` pixels and
    run on a 4K frame it would see very different statistics. TLC (Chu et al., 2022) makes the
    pooling local with a window of 1.5x the training crop. Other networks, a config without a
    crop, or an already converted model are left as they are.
    """
    try:
        from platform.models.nafnet import NAFNet, to_tlc
    except ImportError:  # pragma: no cover - models package missing
        return False
    raw = getattr(model, "module", model)
    if not isinstance(raw, NAFNet) or getattr(raw, "tlc", None):
        return False
    crop = ((config or {}).get("task") or {}).get("crop")
    if not crop:
        return False
    to_tlc(raw, train_size=(int(crop), int(crop)))
    for module in raw.modules():
        if type(module).__name__ == "LocalAvgPool2d":
            module.register_forward_pre_hook(_pool_in_fp32)
    log.info("NAFNet TLC on: local statistics over %s px (training crop %s)", raw.tlc["base_size"], crop)
    return True


def _pool_in_fp32(module: torch.nn.Module, args: tuple) -> tuple:
    """TLC's box average is an integral image (two cumulative sums over the whole feature map):
    in bf16/fp16, which autocast keeps for ``cumsum`` on the CPU, the sums of a 4K map lose
    all precision. Its input is lifted to float32 (the next convolution autocasts back)."""
    return (args[0].float(), *args[1:])


# --------------------------------------------------------------------------- determinism
@contextlib.contextmanager
def deterministic(device: torch.device | str = "cpu"):
    """Same input -> same bytes on the same device, inside the block: deterministic kernels
    where they exist (``warn_only`` where none does), cuDNN autotuning off. The previous
    settings are restored afterwards, so a library caller's training is not affected."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # read by cuBLAS at its first use
    before = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
              torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = before[2], before[3]


# --------------------------------------------------------------------------- options
@dataclass
class InferenceOptions:
    """How a frame is run: precision, tiling, TTA, TLC."""

    precision: str = "fp32"
    tile: int | None = None  # None/0: whole frame if it fits, else tiles sized from free memory
    overlap: int | None = None  # None: default_overlap(model)
    tta: bool | str = False  # True = "d4"
    tlc: bool = True

    def __post_init__(self) -> None:
        check_precision(self.precision)
        if self.tile is not None and int(self.tile) < 0:
            raise ConfigError(f"tile is {self.tile}; give a positive number of pixels (or 0 for automatic).")
        if self.overlap is not None and int(self.overlap) < 0:
            raise ConfigError(f"overlap is {self.overlap}; it must be >= 0 pixels.")

    @property
    def tta_transforms(self) -> str:
        if self.tta is True:
            return "d4"
        return self.tta or "none"


class Predictor:
    """A trained network plus its trial config, ready to run frames of any size.

    ``run(image)`` takes a float32 H x W x C frame as :func:`platform.data.io.read_image` gives
    it (integers scaled to [0, 1], floats such as linear EXR as stored) and returns a dict of
    outputs, all at the input's size, as the task's output kind decodes them
    (:mod:`platform.tasks.outputs`: ``{"image"}``, ``{"alpha"}``, ``{"mask", "probs"}``, or one
    ``mask/<level>`` and ``probs/<level>`` per level).

    ``kind`` is the task's output kind object; this module does not import the tasks, so callers
    build predictors with :func:`platform.tasks.predictor`, which looks it up. The kind encodes
    each frame for the network (an image-to-image task applies its transfer function,
    ``task.transfer``, and decodes its outputs with the exact inverse, so a linear EXR comes back
    linear) and decodes the network's output. Grey frames are repeated to RGB. An alpha channel
    the network does not take (``task.alpha`` other than ``keep``) is set aside, premultiplied
    into the colour first for ``composite``, and given back with an image output.
    """

    def __init__(self, model: torch.nn.Module, config: Mapping[str, Any], device: str | torch.device = "cpu",
                 options: InferenceOptions | None = None, *, kind=None):
        if kind is None or isinstance(kind, str):
            name = (config.get("task") or {}).get("name", "img2img")
            raise ConfigError(f"the output kind of task {name!r} is needed to run its network: build the predictor "
                              "with platform.tasks.predictor(model, config), which looks it up in the task registry.")
        self.options = options or InferenceOptions()
        self.device = torch.device(device)
        self.config = dict(config)
        self.kind = kind
        self.alpha_policy = str((self.config.get("task") or {}).get("alpha") or "error")
        self.model = model.eval().to(self.device)
        self.tlc = bool(self.options.tlc) and apply_tlc(self.model, self.config)
        if self.device.type == "cuda":
            self.model = self.model.to(memory_format=torch.channels_last)
        kwargs = self.config.get("_model_kwargs") or {}
        self.in_channels = int(kwargs.get("in_channels", _first_conv_in_channels(self.model) or 3))
        self._tiles: dict[tuple, int] = {}

    # ----------------------------------------------------------- input
    def prepare(self, image: np.ndarray) -> tuple[torch.Tensor, np.ndarray | None]:
        """H x W x C frame -> (1 x C x H x W model-range tensor, alpha set aside or None)."""
        arr = np.asarray(image, dtype=np.float32)
        if arr.ndim == 2:
            arr = arr[:, :, None]
        if arr.ndim != 3:
            raise ConfigError(f"expected an H x W x C image, got an array of shape {arr.shape}.")
        alpha = None
        c = arr.shape[2]
        want = self.in_channels
        if c in (2, 4) and want in (1, 3):
            alpha, arr = arr[:, :, -1:].copy(), arr[:, :, :-1]
            if self.alpha_policy == "composite":
                arr = arr * alpha
            c -= 1
        if c == 1 and want in (3, 4):
            arr = np.repeat(arr, 3, axis=2)
        elif c == 3 and want == 1:
            arr = arr @ REC709_LUMA
        if arr.shape[2] == 3 and want == 4:  # an RGBA network (task.alpha: keep) on an opaque frame
            arr = np.concatenate([arr, np.ones_like(arr[:, :, :1])], axis=2)
        if arr.shape[2] != want:
            raise ConfigError(f"the model takes {want}-channel images, got {image.shape[-1]} channels.")
        arr = self.kind.encode(arr)
        x = torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1), dtype=np.float32))[None].to(self.device)
        x = x * 2.0 - 1.0
        if self.device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        return x, alpha

    # ----------------------------------------------------------- network
    def tile_for(self, x: torch.Tensor) -> int:
        """The tile side for frames of ``x``'s size: the option, or chosen from free memory once
        per frame size, so every frame of a sequence is cut the same way (a tiling that changed
        with free memory mid-shot would flicker). Whole frames get their long side."""
        if self.options.tile:
            return int(self.options.tile)
        key = tuple(x.shape)
        if key not in self._tiles:
            h, w = x.shape[-2:]
            probe = x if h >= w else x.transpose(-2, -1)
            self._tiles[key] = auto_tile(self.model, probe, self.options.precision, self.options.overlap) or max(h, w)
        return self._tiles[key]

    def forward(self, x: torch.Tensor) -> Output:
        """Raw network output (float32, model range; not clamped) for a prepared input."""
        o = self.options
        tile = self.tile_for(x)
        if o.tta_transforms != "none":
            return tta_predict(self.model, x, o.precision, tile, o.overlap, clamp=False, transforms=o.tta_transforms)
        return tiled_predict(self.model, x, tile, o.overlap, o.precision, clamp=False)

    # ----------------------------------------------------------- outputs
    def run(self, image: np.ndarray) -> dict[str, np.ndarray]:
        """The task's outputs for one frame (see the class docstring)."""
        x, alpha = self.prepare(image)
        colour = 1 if np.ndim(image) == 2 else int(np.shape(image)[2]) - (alpha is not None)
        return self.kind.decode(self.forward(x), alpha, colour)


def first_output(y: Output) -> torch.Tensor:
    if isinstance(y, Mapping):
        return next(iter(y.values()))
    if isinstance(y, (list, tuple)):
        return y[0]
    return y


def _first_conv_in_channels(model: torch.nn.Module) -> int | None:
    for mod in model.modules():
        if isinstance(mod, torch.nn.Conv2d):
            return mod.in_channels
    return None
