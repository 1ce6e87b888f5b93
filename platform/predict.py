"""Run a trained model on full-resolution images, frame folders and videos.

::

    python -m platform.predict --model models:/nafnet_fewshot@champion --input plate.mp4 --output graded.mp4
    python -m platform.predict --model runs/trial_0003/checkpoint_000020 --input frames/ --output out/ --tta

``--model`` is a registry URI (``models:/NAME@ALIAS``, ``models:/NAME/VERSION``), a run's
model (``runs:/RUN_ID/model``) or a checkpoint file/folder (``state.pt``, ``weights.pt``, a Tune
trial folder). ``--input`` is an image, a folder of frames or a video; every frame is
processed at its native resolution (in tiles only when it does not fit in memory) and
written in the input's own format: 8-bit stays 8-bit, 16-bit PNG/TIFF stays 16-bit, float
EXR/TIFF stays float and linear (encoded for the network with the task's transfer function,
``task.transfer``, and decoded with its inverse, so with a ``log`` or ``linear`` transfer values
above 1 survive), a video keeps its frame rate, frame count, size and bit depth.

What is written depends on the model's task:

* image-to-image: the output image (folder, video) at ``--output``;
* segmentation: the class-index mask at ``--output`` (PNG, 8- or 16-bit) and a colour preview
  beside it (``NAME.preview.png``); hierarchical models write ``NAME.LEVEL.png`` and
  ``NAME.LEVEL.preview.png`` for every level; for a video, ``--output`` is the preview video
  and the masks go to ``OUTPUT_masks/``;
* matting: the alpha matte at ``--output`` (single channel, the input's depth) and the
  cut-out ``NAME.rgba.png`` beside it.

For sequences the temporal flicker (:func:`platform.metrics.temporal_flicker`) is printed:
against the input always, and against ``--reference`` (the ground-truth frames) when given.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from platform.coverage import FrameCheck, unseen_warning
from platform.data.video import (
    VIDEO_SUFFIXES,
    VideoInfo,
    VideoWriter,
    float_to_frame,
    frame_to_float,
    is_video_file,
    probe,
    read_video,
)
from platform.errors import ConfigError, DataError, UserError, cli_main
from platform.inference import PRECISIONS, InferenceOptions, Predictor, resolve_overlap
from platform.tasks import OUTPUT_KINDS, OutputKind, predictor as task_predictor
from platform.tasks.outputs import output_kind_named

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp", ".exr")
INTEGER_SUFFIXES = {".jpg": ("uint8",), ".jpeg": ("uint8",), ".bmp": ("uint8",), ".webp": ("uint8",),
                    ".png": ("uint8", "uint16")}


# --------------------------------------------------------------------------- image I/O
def read_image(path: Path) -> tuple[np.ndarray, str]:
    """(float32 H x W x C, source dtype "uint8"/"uint16"/"float32") through the data package."""
    from platform.data import io

    arr, info = io.read_image(path, with_info=True)
    return arr, str(info.dtype)


def write_image(path: Path, arr: np.ndarray, dtype: str) -> Path:
    from platform.data import io

    return io.write_image(path, arr, dtype=dtype)


def output_dtype(source_dtype: str, suffix: str) -> str:
    """The input's depth, unless the output format cannot hold it."""
    suffix = suffix.lower()
    if suffix == ".exr":  # half-float EXR stays half
        return source_dtype if source_dtype in ("float16", "float32") else "float32"
    allowed = INTEGER_SUFFIXES.get(suffix)
    if allowed is None:  # TIFF holds everything
        return source_dtype
    if source_dtype in allowed:
        return source_dtype
    best = allowed[-1]
    log.warning("%s cannot store %s pixels; writing %s", suffix, source_dtype, best)
    return best


def write_index_mask(path: Path, mask: np.ndarray, n_classes: int) -> Path:
    """Class indices as the pixel values of an 8-bit (up to 256 classes) or 16-bit PNG."""
    import imageio.v3 as iio

    path.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(path, mask.astype(np.uint8 if n_classes <= 256 else np.uint16))
    return path


def is_image_path(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def _natural_key(name: str):
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


# --------------------------------------------------------------------------- sources
@dataclass
class Frame:
    name: str  # file name (folders, images) or frame_000000 (videos)
    image: np.ndarray  # float32 H x W x C
    dtype: str  # the source's pixel type: uint8, uint16, float32


@dataclass
class Source:
    """An image, a folder of frames or a video, opened (and checked) before any output is written."""

    path: Path
    kind: str  # image | folder | video
    count: int
    files: list[Path] = field(default_factory=list)
    video: VideoInfo | None = None
    cached: tuple[np.ndarray, str] | None = None  # a single image, read when it was opened

    def frames(self) -> Iterator[Frame]:
        if self.kind == "video":
            dtype = "uint16" if self.video.bit_depth > 8 else "uint8"
            for i, raw in enumerate(read_video(self.path, self.video)):
                yield Frame(f"frame_{i:06d}", frame_to_float(raw), dtype)
            return
        for f in self.files:
            arr, dtype = self.cached if self.cached is not None else read_image(f)
            self.cached = None
            yield Frame(f.name, arr, dtype)

    def describe(self) -> str:
        if self.kind == "video":
            v = self.video
            return (f"{self.path}: video, {v.frames} frames {v.width}x{v.height} @ {v.fps} fps "
                    f"({float(v.fps):.3f}), {v.bit_depth if v.bit_depth == 8 else '10+'}-bit {v.codec}")
        if self.kind == "folder":
            return f"{self.path}: {self.count} frames"
        return str(self.path)


def open_source(path: str | Path, what: str = "--input") -> Source:
    path = Path(path)
    if not path.exists():
        raise DataError(f"{what} {path} does not exist. Give an image, a folder of frames or a video "
                        f"({', '.join(VIDEO_SUFFIXES)}).")
    if path.is_dir():
        files = sorted((p for p in path.iterdir() if p.is_file() and is_image_path(p) and not p.name.startswith(".")),
                       key=lambda p: _natural_key(p.name))
        if not files:
            raise DataError(f"{what} folder {path} has no images ({', '.join(IMAGE_SUFFIXES)}).")
        return Source(path, "folder", len(files), files=files)
    if is_video_file(path):
        info = probe(path)
        return Source(path, "video", info.frames, video=info)
    if is_image_path(path):
        source = Source(path, "image", 1, files=[path])
        source.cached = read_image(path)  # fail now, before anything is written, if it is unreadable
        return source
    raise DataError(f"{what} {path} is not an image ({', '.join(IMAGE_SUFFIXES)}) or a video "
                    f"({', '.join(VIDEO_SUFFIXES)}), nor a folder of images.")


# --------------------------------------------------------------------------- outputs
def palette(n: int) -> np.ndarray:
    """``n`` distinct RGB colours (float32), class 0 black; golden-angle hues (a fixed rule
    rather than a colormap, so that any number of classes gets distinct, stable colours)."""
    import colorsys

    colours = [(0.0, 0.0, 0.0)]
    for i in range(1, max(n, 1)):
        h = (i * 0.618033988749895) % 1.0
        colours.append(colorsys.hsv_to_rgb(h, 0.75 if i % 2 else 0.95, 0.95 if i % 3 else 0.75))
    return np.asarray(colours[:max(n, 1)], dtype=np.float32)


def colour_preview(mask: np.ndarray, image: np.ndarray | None, n_classes: int, opacity: float = 0.6) -> np.ndarray:
    """Classes in colour over the (grey) frame, float32 H x W x 3 in [0, 1]."""
    colours = palette(max(n_classes, int(mask.max()) + 1))[mask]
    if image is None:
        return colours
    rgb = np.clip(image[:, :, :3] if image.shape[2] >= 3 else np.repeat(image[:, :, :1], 3, axis=2), 0, 1)
    grey = rgb.mean(axis=2, keepdims=True)
    return (1 - opacity) * grey + opacity * colours


class Writer:
    """Where each frame's outputs go for one output kind and one source kind.

    The output kind (:mod:`platform.tasks.outputs`) decides which files a frame gives
    (:meth:`~platform.tasks.outputs.OutputKind.write`, :meth:`~platform.tasks.outputs.OutputKind.planned`);
    the writer names and writes them: :meth:`write_image`, :meth:`write_matte`, :meth:`write_masks`.
    """

    def __init__(self, kind: OutputKind | str, source: Source, output: Path, levels: list[str] | None = None):
        kind = output_kind_named(kind) if isinstance(kind, str) else kind  # a stored kind name
        self.kind, self.source, self.output = kind, source, output
        self.levels = list(levels or [])
        self.video_writers: dict[str, VideoWriter] = {}
        if source.kind == "image" and not output.suffix:
            raise ConfigError(f"--output {output} needs a file suffix (e.g. .png) for an image input.")
        if source.kind == "image" and not is_image_path(output):
            raise ConfigError(f"--output {output} is not an image file name ({', '.join(IMAGE_SUFFIXES)}).")
        if source.kind == "folder" and output.suffix and is_image_path(output):
            raise ConfigError(f"--output {output} must be a folder for a folder input.")
        kind.check_output(source, output)

    # -- names
    @property
    def video_out(self) -> bool:
        return self.source.kind == "video" and is_video_file(self.output)

    def planned(self) -> list[Path]:
        """The paths this run creates at the top level (checked for --overwrite)."""
        return self.kind.planned(self)

    def side_file(self, suffix: str) -> Path:
        """A file beside an image output: ``--output`` without its suffix, plus ``suffix``."""
        return Path(f"{self.output.with_suffix('')}{suffix}")

    def level_file(self, level: str) -> Path:
        """The output of one level of a hierarchical model (``NAME.LEVEL.SUFFIX``)."""
        return self.output.with_name(f"{self.output.stem}.{level}{self.output.suffix}")

    def masks_dir(self) -> Path:
        return self.output.with_name(self.output.stem + "_masks")

    def _frame_base(self, frame: Frame) -> tuple[Path, str]:
        """(folder, stem) of one frame's files."""
        if self.source.kind == "image":
            return self.output.parent, self.output.stem
        if self.video_out:
            return self.masks_dir(), Path(frame.name).stem
        return self.output, Path(frame.name).stem

    # -- writing
    def write(self, frame: Frame, outputs: dict[str, np.ndarray]) -> None:
        self.kind.write(self, frame, outputs)

    def write_image(self, frame: Frame, img: np.ndarray) -> None:
        if self.video_out:
            self._video("", self.source.video.bit_depth).write(float_to_frame(img, self.source.video.bit_depth))
            return
        if self.source.kind == "image":
            path = self.output
        elif self.source.kind == "video":
            path = self.output / f"{frame.name}.png"
        else:
            path = self.output / frame.name
        write_image(path, img, output_dtype(frame.dtype, path.suffix))

    def write_matte(self, frame: Frame, alpha: np.ndarray) -> None:
        if self.video_out:
            self._video("", self.source.video.bit_depth).write(float_to_frame(alpha, self.source.video.bit_depth))
            return
        folder, stem = self._frame_base(frame)
        path = self.output if self.source.kind == "image" else folder / (
            f"{stem}.png" if self.source.kind == "video" else frame.name)
        write_image(path, alpha[:, :, None], output_dtype(frame.dtype, path.suffix))
        rgb = np.clip(frame.image[:, :, :3] if frame.image.shape[2] >= 3 else np.repeat(frame.image, 3, axis=2), 0, 1)
        write_image(folder / f"{stem}.rgba.png", np.concatenate([rgb, alpha[:, :, None]], axis=2),
                    "uint16" if frame.dtype != "uint8" else "uint8")

    def write_masks(self, frame: Frame, outputs: dict[str, np.ndarray]) -> None:
        folder, stem = self._frame_base(frame)
        for key, mask in outputs.items():
            if not key.startswith("mask"):
                continue
            level = key.split("/", 1)[1] if "/" in key else ""
            probs = outputs[key.replace("mask", "probs", 1)]
            n_classes = probs.shape[-1]
            base = f"{stem}.{level}" if level else stem
            write_index_mask(folder / f"{base}.png", mask, n_classes)
            preview = colour_preview(mask, frame.image, n_classes)
            if self.video_out:
                self._video(level, 8).write(float_to_frame(preview, 8))
            else:
                write_image(folder / f"{base}.preview.png", preview, "uint8")

    def _video(self, level: str, bit_depth: int) -> VideoWriter:
        """The video writer of one output (``level`` "" for the main one) at ``bit_depth`` bits."""
        if level not in self.video_writers:
            path = self.level_file(level) if level else self.output
            info = self.source.video
            if bit_depth != info.bit_depth:
                info = VideoInfo(info.width, info.height, info.fps, info.frames, bit_depth, info.codec, info.pix_fmt)
            self.video_writers[level] = VideoWriter(path, info).__enter__()
        return self.video_writers[level]

    def close(self) -> None:
        for writer in self.video_writers.values():
            writer.__exit__(None, None, None)


def check_outputs(paths: list[Path], source: Source, overwrite: bool) -> None:
    for path in paths:
        if path.resolve() == source.path.resolve():
            raise UserError(f"--output {path} is the input itself; write the result somewhere else.")
        if source.kind == "folder" and source.path.resolve() in path.resolve().parents:
            raise UserError(f"--output {path} is inside the input folder {source.path}; write it elsewhere.")
        exists = path.exists() and (not path.is_dir() or any(path.iterdir()))
        if exists and not overwrite:
            raise UserError(f"--output {path} already exists; nothing was written. Pass --overwrite to replace "
                            "it, or choose another output path.")


# --------------------------------------------------------------------------- flicker
class FlickerMeter:
    """Streaming :func:`platform.metrics.temporal_flicker`: the mean over frame pairs of
    ``mean|o[t+1]-o[t]| - mean|g[t+1]-g[t]|``. All pairs have the same number of values, so
    the mean of the per-pair values equals the metric over the whole sequence."""

    def __init__(self):
        self.prev: tuple[torch.Tensor, torch.Tensor] | None = None
        self.total, self.pairs = 0.0, 0
        self.valid = True

    def update(self, output: np.ndarray, target: np.ndarray) -> None:
        o = torch.from_numpy(np.ascontiguousarray(np.atleast_3d(output), dtype=np.float32)).permute(2, 0, 1)
        g = torch.from_numpy(np.ascontiguousarray(np.atleast_3d(target), dtype=np.float32)).permute(2, 0, 1)
        if o.shape != g.shape:
            c = min(o.shape[0], g.shape[0])
            o, g = o[:c], g[:c]
        if self.prev is not None:
            if self.prev[0].shape != o.shape:
                self.valid = False
            else:
                self.total += float(temporal_flicker(torch.stack([self.prev[0], o]), torch.stack([self.prev[1], g])))
                self.pairs += 1
        self.prev = (o, g)

    @property
    def value(self) -> float | None:
        return self.total / self.pairs if self.pairs and self.valid else None


def temporal_flicker(output_frames: torch.Tensor, target_frames: torch.Tensor) -> torch.Tensor:
    try:
        from platform.metrics import temporal_flicker as metric
    except ImportError:  # the metrics package predates the video metric: the same formula
        def metric(o, g):
            return (o[1:] - o[:-1]).abs().mean() - (g[1:] - g[:-1]).abs().mean()
    return metric(output_frames, target_frames)


# --------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m platform.predict", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="models:/NAME@ALIAS, models:/NAME/VERSION, runs:/RUN_ID/model, "
                                                  "or a checkpoint file/folder")
    p.add_argument("--input", required=True, type=Path, help="an image, a folder of frames or a video")
    p.add_argument("--output", required=True, type=Path, help="image / folder / video to write")
    p.add_argument("--tile", type=int, default=0, help="tile side in pixels (default: whole frame if it fits in "
                                                       "memory, else chosen from free memory)")
    p.add_argument("--overlap", type=int, default=None, help="tile overlap in pixels (default: 32, or the TLC "
                                                             "window of a NAFNet)")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32")
    p.add_argument("--tta", action="store_true", help="average the 8 flips/rotations (8x slower)")
    p.add_argument("--no-tlc", dest="tlc", action="store_false", help="keep NAFNet's global channel statistics")
    p.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: cuda if available")
    p.add_argument("--task", choices=("auto", *OUTPUT_KINDS.available()), default="auto",
                   help="the kind of output expected; an error if the model's task differs")
    p.add_argument("--reference", type=Path, default=None,
                   help="ground-truth frames (video or folder) for the temporal flicker of a sequence")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


@dataclass
class PredictResult:
    frames: int
    seconds: float
    outputs: list[Path]
    flicker_vs_input: float | None = None
    flicker_vs_reference: float | None = None
    unseen_colours: dict[str, float] = field(default_factory=dict)  # {frame: share outside the training colours}

    @property
    def fps(self) -> float:
        return self.frames / max(self.seconds, 1e-9)


def resolve_device(name: str | None) -> torch.device:
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for but PyTorch sees no CUDA GPU here; use --device cpu.")
    return torch.device(name)


def predict(model: str, input: str | Path, output: str | Path, *, options: InferenceOptions | None = None,
            device: str | None = None, task: str = "auto", reference: str | Path | None = None,
            overwrite: bool = False, progress: bool = True, report=print) -> PredictResult:
    """Everything ``python -m platform.predict`` does (the CLI is a thin wrapper)."""
    from platform.inference import deterministic
    from platform.pyfunc import load_any

    options = options or InferenceOptions()
    dev = resolve_device(device)
    source = open_source(input)
    ref = open_source(reference, "--reference") if reference is not None else None
    if ref is not None:
        if source.kind == "image":
            raise ConfigError("--reference is for sequences (a video or a folder of frames), the input is one image.")
        if ref.count != source.count:
            raise DataError(f"--reference {ref.path} has {ref.count} frames, the input {source.count}; "
                            "they must match frame for frame.")
    output = Path(output)
    # Cheap checks on the outputs come before loading the model; the kind-specific ones after.
    check_outputs([output], source, overwrite)

    with deterministic(dev):
        loaded = load_any(model, dev)
        predictor = task_predictor(loaded.model, loaded.config, dev, options)
        if task != "auto" and task != predictor.kind.name:
            raise ConfigError(
                f"model {loaded.source} was trained for the {predictor.kind.name!r} task "
                f"({loaded.config.get('task', {}).get('name')}), but --task {task} was asked for; it cannot write "
                f"{task} outputs. Use a {task} model, or drop --task.")
        if options.precision == "fp16" and dev.type != "cuda":
            log.warning("fp16 autocast needs CUDA; running in fp32 on the CPU")
        writer = Writer(predictor.kind, source, output, levels=head_names(predictor))
        check_outputs(writer.planned(), source, overwrite)

        m = loaded.config.get("model", {})
        overlap = resolve_overlap(predictor.model, options.tile, options.overlap)
        report(f"model     {loaded.source} ({m.get('architecture')} {m.get('size') or ''}, task {predictor.kind.name}"
               f"{'; TLC ' + str(predictor.model.tlc['base_size'][0]) + ' px' if predictor.tlc else ''})")
        report(f"input     {source.describe()}")
        report(f"settings  {dev.type} {options.precision}, tile {options.tile or 'auto'}, overlap {overlap}, "
               f"TTA {options.tta_transforms}")
        res = _run(predictor, source, ref, writer, progress)
    report(f"output    {', '.join(str(p) for p in res.outputs)}")
    report(f"speed     {res.frames} frame{'s' if res.frames != 1 else ''} in {res.seconds:.2f} s "
           f"({res.fps:.3f} frames/s)")
    if res.flicker_vs_input is not None:
        report(f"flicker   {res.flicker_vs_input:+.6f} vs the input (mean |frame-to-frame change| added, [0, 1] units)")
    if res.flicker_vs_reference is not None:
        report(f"flicker   {res.flicker_vs_reference:+.6f} vs the reference {ref.path} (0 = no added flicker)")
    if res.unseen_colours:
        report(f"colours   {max(res.unseen_colours.values()):.1%} of a frame's pixels at most in colours the "
               "training frames lack")
        warning = unseen_warning(res.unseen_colours)
        if warning:
            log.warning("%s", warning)
    return res


def head_names(predictor: Predictor) -> list[str]:
    """The levels of a hierarchical network (from one forward pass on a small frame), else []."""
    if not predictor.kind.has_levels:
        return []
    from platform.inference import size_multiple

    side = 2 * size_multiple(predictor.model)
    probe = np.full((side, side, predictor.in_channels), 0.5, dtype=np.float32)
    return [k.split("/", 1)[1] for k in predictor.run(probe) if k.startswith("mask/")]


def _run(predictor: Predictor, source: Source, ref: Source | None, writer: Writer, progress: bool) -> PredictResult:
    from tqdm import tqdm

    kind = predictor.kind
    colours = FrameCheck(predictor.config)
    vs_input = FlickerMeter() if source.count > 1 and kind.image_like else None
    vs_ref = FlickerMeter() if ref is not None and kind.flicker_vs_reference else None
    ref_frames = ref.frames() if ref is not None else None
    start = time.perf_counter()
    n = 0
    bar = tqdm(total=source.count, unit="frame", desc="predict", disable=not progress, file=sys.stderr,
               dynamic_ncols=True)
    try:
        for frame in source.frames():
            outputs = predictor.run(frame.image)
            writer.write(frame, outputs)
            colours.update(frame.name, frame.image)
            result = outputs.get("image", outputs.get("alpha"))
            if vs_input is not None:
                vs_input.update(result[:, :, :3], frame.image[:, :, :3] if frame.image.shape[2] >= 3 else frame.image)
            if ref_frames is not None:
                truth = next(ref_frames).image
                if truth.shape[:2] != frame.image.shape[:2]:
                    raise DataError(f"--reference frame {n} is {truth.shape[1]}x{truth.shape[0]}, the input "
                                    f"{frame.image.shape[1]}x{frame.image.shape[0]}; they must match.")
                if vs_ref is not None:
                    vs_ref.update(result if result.ndim == 2 else result[:, :, :3],
                                  truth[:, :, 0] if result.ndim == 2 else truth[:, :, :3])
            n += 1
            bar.update(1)
    finally:
        bar.close()
        writer.close()
    return PredictResult(n, time.perf_counter() - start, writer.planned(),
                         vs_input.value if vs_input else None, vs_ref.value if vs_ref else None, colours.shares)


@cli_main
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    options = InferenceOptions(precision=args.precision, tile=args.tile or None, overlap=args.overlap,
                               tta=args.tta, tlc=args.tlc)
    predict(args.model, args.input, args.output, options=options, device=args.device, task=args.task,
            reference=args.reference, overwrite=args.overwrite, progress=not args.quiet)
    return 0


if __name__ == "__main__":
    sys.exit(main())
