"""Output kinds: what a task's network output means outside training.

An output kind turns the network's raw output into results (:meth:`OutputKind.decode`, used by
:class:`platform.inference.Predictor`), stacks per-frame results into the MLflow pyfunc model's
batch output (:meth:`~OutputKind.stack`), gives the head of the exported ONNX/TorchScript graph
(:meth:`~OutputKind.export_head`, :attr:`~OutputKind.export_name`) and tells ``predict`` which
files to write (:meth:`~OutputKind.planned`, :meth:`~OutputKind.write`, through the writer's
primitives). :mod:`platform.inference`, :mod:`platform.pyfunc`, :mod:`platform.export` and
:mod:`platform.predict` ask the kind object and never switch on its name.

Built in: ``img2img`` (:class:`ImageOutput`), ``matting`` (:class:`MattingOutput`),
``segmentation`` (:class:`SegmentationOutput`) and ``hierarchical``
(:class:`HierarchicalOutput`). A task names its kind with its ``kind`` class attribute; checkpoints
and registered models store that name (``platform.task_kind``), and :data:`OUTPUT_KINDS` maps
it back to the class, so models saved before the kind objects existed still load. A new kind is
a subclass registered with :func:`register_output_kind`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from platform.errors import ConfigError
from platform.inference import REC709_LUMA, first_output
from platform.registry import Registry

OUTPUT_KINDS = Registry("output kind")


def register_output_kind(name: str):
    return OUTPUT_KINDS.register(name)


def output_kind_named(name: str, config: Mapping[str, Any] | None = None,
                      output_range: tuple[float, float] = (-1.0, 1.0)) -> OutputKind:
    """The output kind ``name`` (as stored in a checkpoint or registered model) for ``config``."""
    if name not in OUTPUT_KINDS:
        raise ConfigError(f"output kind {name!r} is unknown (known: {', '.join(OUTPUT_KINDS.available())}); the "
                          "model's task module must be imported first (see docs/data-and-tasks.md, adding a task).")
    return OUTPUT_KINDS.get(name)(config, output_range)


def stack(items: list[np.ndarray], dtype) -> np.ndarray:
    """Frames of one size as one array; frames of several sizes as a 1-D object array of arrays."""
    if len({a.shape for a in items}) == 1:
        return np.stack(items).astype(dtype, copy=False)
    ragged = np.empty(len(items), dtype=object)
    for i, a in enumerate(items):
        ragged[i] = a.astype(dtype, copy=False)
    return ragged


def segmentation_from_logits(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(K x H x W probabilities, H x W int64 class indices) from K x H x W logits.

    One channel is a binary head (sigmoid, foreground where p > 0.5); several are mutually
    exclusive classes (softmax, argmax).
    """
    logits = logits.float()
    if logits.shape[0] == 1:
        p = torch.sigmoid(logits)
        return torch.cat([1 - p, p]), (p[0] > 0.5).long()
    probs = torch.softmax(logits, dim=0)
    return probs, logits.argmax(dim=0)


class OutputKind:
    """One output kind, bound to a trial config (its transfer function) and the network's output range.

    Subclasses set ``name``, ``clamp`` (whether whole-frame passes clamp the output to the model
    range; logits are not clamped) and ``export_name``, and implement the methods below.
    ``image_like`` outputs are pictures comparable frame to frame (``predict`` measures flicker
    against the input), ``has_levels`` outputs have one mask per hierarchy level.
    """

    name = ""
    clamp = True
    export_name = "output"
    image_like = False
    flicker_vs_reference = False
    has_levels = False

    def __init__(self, config: Mapping[str, Any] | None = None, output_range: tuple[float, float] = (-1.0, 1.0)):
        self.config = dict(config or {})
        self.output_range = (float(output_range[0]), float(output_range[1]))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"

    # -- inference
    def encode(self, image: np.ndarray) -> np.ndarray:
        """An input frame (H x W x C, [0, 1] or float data values) as the network's [0, 1] input."""
        return image

    def decode(self, y, alpha: np.ndarray | None, colour: int) -> dict[str, np.ndarray]:
        """Raw network output (model range, batch of one) -> named results at the frame's size.

        ``alpha`` is the input's alpha channel set aside (or None); ``colour`` the number of colour
        channels of the input frame."""
        raise NotImplementedError

    # -- MLflow pyfunc
    def stack(self, outputs: list[dict[str, np.ndarray]]):
        """Per-frame :meth:`decode` results as the pyfunc model's batch output."""
        raise NotImplementedError

    # -- export
    def export_head(self, y: torch.Tensor) -> torch.Tensor:
        """The traced graph's output from the network's (cropped) single-tensor output."""
        return y

    # -- predict
    def check_output(self, source, output) -> None:
        """Raise a ConfigError when ``output`` cannot hold this kind's results for ``source``."""

    def planned(self, writer) -> list:
        """The paths :meth:`write` creates at the top level (checked for --overwrite)."""
        return [writer.output]

    def write(self, writer, frame, outputs: dict[str, np.ndarray]) -> None:
        raise NotImplementedError


@register_output_kind("img2img")
class ImageOutput(OutputKind):
    """An image: ``{"image": H x W x C float32}`` in the data's own values (the task's transfer
    function inverted), the input's alpha channel given back; a grey frame comes back grey."""

    name = "img2img"
    export_name = "output"
    image_like = True
    flicker_vs_reference = True

    def __init__(self, config=None, output_range=(-1.0, 1.0)):
        from platform.data.transfer import get_transfer

        super().__init__(config, output_range)
        self.transfer = get_transfer((self.config.get("task") or {}).get("transfer"))

    def encode(self, image: np.ndarray) -> np.ndarray:
        return self.transfer.encode(image)

    def decode(self, y, alpha, colour):
        t = first_output(y)[0].clamp(-1.0, 1.0).add(1.0).div(2.0)
        img = np.asarray(self.transfer.decode(t.permute(1, 2, 0).cpu().numpy()), dtype=np.float32)
        if colour == 1 and img.shape[2] == 3:  # a grey frame comes back grey (Rec. 709 luma)
            img = img @ REC709_LUMA
        if alpha is not None:
            img = np.concatenate([img, alpha], axis=2)
        return {"image": np.ascontiguousarray(img, dtype=np.float32)}

    def stack(self, outputs):
        return stack([o["image"] for o in outputs], np.float32)

    def export_head(self, y):
        return (y.clamp(-1.0, 1.0) + 1.0) / 2.0

    def check_output(self, source, output):
        from platform.data.video import VIDEO_SUFFIXES, is_video_file

        if source.kind == "video" and output.suffix and not is_video_file(output):
            raise ConfigError(f"--output {output}: a video input needs a video output ({', '.join(VIDEO_SUFFIXES)}) "
                              "or a folder (no suffix) for its frames.")

    def write(self, writer, frame, outputs):
        writer.write_image(frame, outputs["image"])


@register_output_kind("matting")
class MattingOutput(OutputKind):
    """An alpha matte: ``{"alpha": H x W float32 in [0, 1]}`` (the last output channel, mapped from
    the network's output range); ``predict`` also writes the cut-out ``NAME.rgba.png``."""

    name = "matting"
    export_name = "alpha"
    flicker_vs_reference = True

    def _alpha(self, t: torch.Tensor) -> torch.Tensor:
        lo, hi = self.output_range
        return ((t - lo) / (hi - lo)).clamp(0.0, 1.0)

    def decode(self, y, alpha, colour):
        a = first_output(y)[0]
        a = a[-1] if a.shape[0] > 1 else a[0]
        return {"alpha": self._alpha(a).cpu().numpy().astype(np.float32)}

    def stack(self, outputs):
        return stack([o["alpha"] for o in outputs], np.float32)

    def export_head(self, y):
        return self._alpha(y[:, -1:] if y.shape[1] > 1 else y)

    def planned(self, writer):
        if writer.source.kind != "image":
            return [writer.output]
        return [writer.output, writer.side_file(".rgba.png")]

    def write(self, writer, frame, outputs):
        writer.write_matte(frame, outputs["alpha"])


@register_output_kind("segmentation")
class SegmentationOutput(OutputKind):
    """Class masks: ``{"mask": H x W int64, "probs": H x W x K float32}`` (one head), or
    ``{"mask/<head>": ..., "probs/<head>": ...}`` for a network with several heads."""

    name = "segmentation"
    clamp = False
    export_name = "logits"

    def heads(self, y) -> dict[str, torch.Tensor]:
        if isinstance(y, Mapping):
            return dict(y)
        if isinstance(y, (list, tuple)):
            return {f"level{i + 1}": t for i, t in enumerate(y)}
        return {"mask": y}

    def key(self, head: str, count: int) -> str:
        return "mask" if count == 1 else f"mask/{head}"

    def decode(self, y, alpha, colour):
        heads = self.heads(y)
        out: dict[str, np.ndarray] = {}
        for name, logits in heads.items():
            key = self.key(name, len(heads))
            probs, mask = segmentation_from_logits(logits[0])
            out[key] = mask.cpu().numpy()
            out[key.replace("mask", "probs", 1)] = probs.permute(1, 2, 0).cpu().numpy()
        return out

    def stack(self, outputs):
        return stack([o["mask"] for o in outputs], np.int64)

    def check_output(self, source, output):
        if source.kind == "image" and output.suffix.lower() not in (".png", ".tif", ".tiff"):
            raise ConfigError(f"--output {output}: class-index masks need a lossless format; use .png or .tif.")

    def planned(self, writer):
        if writer.source.kind != "image":
            return [writer.output, writer.masks_dir()] if writer.video_out else [writer.output]
        return [writer.output, writer.side_file(".preview.png")]

    def write(self, writer, frame, outputs):
        writer.write_masks(frame, outputs)


@register_output_kind("hierarchical")
class HierarchicalOutput(SegmentationOutput):
    """One mask per hierarchy level: ``{"mask/<level>": ..., "probs/<level>": ...}`` (the network
    returns a dict of logits per level, or a list/tuple: ``level1``, ``level2``...)."""

    name = "hierarchical"
    has_levels = True

    def key(self, head, count):
        return f"mask/{head}"

    def stack(self, outputs):
        levels = [k.split("/", 1)[1] for k in outputs[0] if k.startswith("mask/")]
        return {level: stack([o[f"mask/{level}"] for o in outputs], np.int64) for level in levels}

    def planned(self, writer):
        if writer.source.kind != "image":
            if not writer.video_out:
                return [writer.output]
            return [*(writer.level_file(lv) for lv in writer.levels), writer.masks_dir()]
        return [writer.side_file(f".{lv}{ext}") for lv in writer.levels for ext in (".png", ".preview.png")]
