"""Export a trained model as a deployable ONNX or TorchScript file, checked against PyTorch.

::

    python -m platform.export --model models:/nafnet_fewshot@champion --format onnx --output champion.onnx
    python -m platform.export --model models:/nafnet_fewshot@champion --format onnx --quantize int8 \\
        --output champion.int8.onnx --target graded_frame.png
    python -m platform.export --model models:/look@champion --format cube --output look.cube

``--format cube`` writes a pure ``lut3d`` model (one fixed colour map) as an Adobe/Resolve
``.cube`` 3D LUT that Nuke, DaVinci Resolve and OpenColorIO read; the file is read back with
colour-science, applied to the check image and compared with the model (max difference printed).

The exported network takes what ``predict`` feeds it after reading a file: ``image``, float32
``N x C x H x W`` in [0, 1] (display-referred; apply the task's transfer function first for
linear EXR data) with **dynamic batch, height and width**; padding to the network's size
multiple is inside the graph. It returns, by task kind: ``output`` (img2img, [0, 1]),
``logits`` (segmentation, N x K x H x W), one logits output per level (hierarchical), or
``alpha`` (matting, N x 1 x H x W in [0, 1]). A NAFNet is exported with TLC on (as
``predict`` runs it); its graph then needs frames at least as large as the TLC window
(1.5 x the training crop) on each side, which is stored with the model's metadata;
``--no-tlc`` exports the plain network, valid at any size. Tiling and TTA stay outside the
graph (a runtime concern).

After the export the file is run (ONNX Runtime / ``torch.jit.load``) on a real image and
compared with the PyTorch network: the maximum absolute difference is printed. ``--quantize
int8`` applies ONNX Runtime's dynamic int8 quantisation (weights int8, activations quantised
on the fly; for CPU inference) and prints its PSNR cost: against the fp32 export, and, with
``--target``, the drop in PSNR against that ground truth. ``--quantize int8-static
--calibration DIR`` quantises activations too, with ranges calibrated on the frames in DIR
(frames of the shot; :mod:`platform.compress.quantize`, docs/compression.md).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import shutil
import sys
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from platform.errors import ConfigError, UserError, cli_main
from platform.safeio import atomic_path

log = logging.getLogger(__name__)

FORMATS = ("onnx", "torchscript", "cube")
DEFAULT_OPSET = 17
QUANTIZE = (None, "int8", "int8-static")


class ExportModule(nn.Module):
    """The network with the platform's pre- and post-processing, traceable at any size.

    ``kind`` is the task's output kind object (:mod:`platform.tasks.outputs`): it gives the head of
    a single-output network (e.g. [0, 1] images, alphas, raw logits) and its output name."""

    def __init__(self, model: nn.Module, kind, multiple: int, heads: list[str] | None = None):
        super().__init__()
        self.model = model
        self.kind = kind
        self.multiple = int(multiple)
        self.heads = heads

    def forward(self, image: torch.Tensor):
        h, w = image.shape[-2], image.shape[-1]
        m = self.multiple
        # Branch-free padding (a traced branch on the size would freeze one case into the graph).
        ph, pw = (m - h % m) % m, (m - w % m) % m
        x = F.pad(image * 2.0 - 1.0, (0, pw, 0, ph), mode="reflect")
        y = self.model(x)
        if isinstance(y, dict):
            return tuple(y[k][..., :h, :w] for k in self.heads)
        if isinstance(y, (list, tuple)):
            return tuple(t[..., :h, :w] for t in y)
        return self.kind.export_head(y[..., :h, :w])


@dataclass
class ExportReport:
    path: Path
    format: str
    max_abs_diff: float
    check_size: tuple[int, int]
    min_side: int
    outputs: list[str]
    int8_psnr_vs_fp32: float | None = None
    int8_target_psnr: tuple[float, float] | None = None  # (fp32, int8) PSNR against --target
    sizes: dict[str, int] = field(default_factory=dict)

    @property
    def psnr_cost(self) -> float | None:
        if self.int8_target_psnr is None:
            return None
        return self.int8_target_psnr[0] - self.int8_target_psnr[1]


def psnr(a: np.ndarray, b: np.ndarray, data_range: float = 1.0) -> float:
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * math.log10(data_range ** 2 / mse)


def check_image(path: str | Path | None, min_side: int, channels: int) -> np.ndarray:
    """The image the export is checked on (float32 H x W x C in [0, 1]): ``path``, or a crop of
    scikit-image's astronaut photo; reflect-padded up to ``min_side`` where needed."""
    if path is not None:
        from platform.predict import read_image

        img, _ = read_image(Path(path))
    else:
        import skimage.data

        img = skimage.data.astronaut()[:301, :451].astype(np.float32) / 255.0  # odd sizes on purpose
    img = np.clip(img, 0.0, 1.0)
    if img.shape[2] in (2, 4):
        img = img[:, :, :-1]
    if img.shape[2] == 1 and channels == 3:
        img = np.repeat(img, 3, axis=2)
    if img.shape[2] != channels:
        raise ConfigError(f"the check image has {img.shape[2]} channels, the model takes {channels}.")
    ph, pw = max(0, min_side - img.shape[0]), max(0, min_side - img.shape[1])
    if ph or pw:
        img = np.pad(img, ((0, ph), (0, pw), (0, 0)), mode="reflect")
    return np.ascontiguousarray(img, dtype=np.float32)


def prepare(model: nn.Module, config: dict, tlc: bool = True) -> tuple[ExportModule, int]:
    """The export module for a loaded model and the smallest frame side its graph accepts."""
    from platform.inference import apply_tlc, size_multiple
    from platform.tasks import output_kind

    kind = output_kind(config)
    model = model.eval().cpu()
    min_side = size_multiple(model)
    if tlc and apply_tlc(model, config):
        min_side = max(min_side, max(model.tlc["base_size"]))
    module = ExportModule(model, kind, size_multiple(model))
    # eval(): the exporters run the module in its own mode, and a module starts in training mode
    # (BatchNorm would use batch statistics and dropout would be on in the graph and the check).
    return module.eval(), min_side


def _trace_input(module: ExportModule, min_side: int, channels: int) -> torch.Tensor:
    m = module.multiple
    side = max(256, min_side + 2 * m)
    side = ((side + m - 1) // m) * m
    g = torch.Generator().manual_seed(0)
    return torch.rand(1, channels, side, side + m, generator=g)


def _output_names(module: ExportModule, dummy: torch.Tensor) -> list[str]:
    with torch.no_grad():
        y = module.model(dummy * 2 - 1)
    if isinstance(y, dict):
        module.heads = list(y)
        return list(y)
    if isinstance(y, (list, tuple)):
        return [f"level{i + 1}" for i in range(len(y))]
    return [module.kind.export_name]


@contextlib.contextmanager
def _quiet_tracing():
    """Tracer warnings about Python booleans come from size checks that are constant for
    frames above the graph's minimum side (documented); the exporter's notices are noise."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        for text in ("legacy TorchScript-based ONNX export", "will be removed", "Constant folding",
                     "torch.jit.* deprecated"):
            warnings.filterwarnings("ignore", message=f".*{text}.*")
        yield


def export_onnx(module: ExportModule, path: Path, channels: int, min_side: int, metadata: dict,
                opset: int = DEFAULT_OPSET) -> list[str]:
    """Write ``module`` as ONNX with dynamic batch/height/width; returns the output names."""
    import onnx

    dummy = _trace_input(module, min_side, channels)
    names = _output_names(module, dummy)
    axes = {"image": {0: "batch", 2: "height", 3: "width"}}
    axes.update({n: {0: "batch", 2: "height", 3: "width"} for n in names})
    with _quiet_tracing():
        # The TorchScript-based exporter: the dynamo exporter needs onnxscript (not installed) and
        # would refuse the size-dependent branches of NAFNet's TLC pooling.
        torch.onnx.export(module, (dummy,), str(path), dynamo=False, input_names=["image"], output_names=names,
                          dynamic_axes=axes, opset_version=opset, do_constant_folding=True)
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, str(value)
    onnx.save(proto, str(path))
    return names


def export_torchscript(module: ExportModule, path: Path, channels: int, min_side: int, metadata: dict) -> list[str]:
    dummy = _trace_input(module, min_side, channels)
    names = _output_names(module, dummy)
    with _quiet_tracing(), torch.no_grad():
        traced = torch.jit.trace(module, (dummy,), check_trace=False)
        torch.jit.save(traced, str(path), _extra_files={"platform.json": json.dumps(metadata, default=str)})
    return names


def run_onnx(path: Path, image: np.ndarray) -> list[np.ndarray]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    x = np.ascontiguousarray(image.transpose(2, 0, 1)[None], dtype=np.float32)
    return session.run(None, {"image": x})


def run_torchscript(path: Path, image: np.ndarray) -> list[np.ndarray]:
    with _quiet_tracing():
        module = torch.jit.load(str(path), map_location="cpu")
    x = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))[None]
    with torch.no_grad():
        y = module(x)
    return [t.numpy() for t in (y if isinstance(y, (list, tuple)) else (y,))]


def run_torch(module: ExportModule, image: np.ndarray) -> list[np.ndarray]:
    x = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))[None]
    with torch.no_grad():
        y = module(x)
    return [t.numpy() for t in (y if isinstance(y, (list, tuple)) else (y,))]


def quantize_int8(src: Path, dest: Path) -> Path:
    """ONNX Runtime dynamic quantisation: int8 weights, activations quantised at run time."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from platform.compress.quantize import prepared_for_quantisation

    with prepared_for_quantisation(src, "pre") as source:
        quantize_dynamic(str(source), str(dest), weight_type=QuantType.QInt8)
    return dest


def _quantize_static(src: Path, dest: Path, calibration, channels: int) -> Path:
    from platform.compress.quantize import calibration_frames, quantize_static_int8

    return quantize_static_int8(src, dest, calibration_frames(calibration, channels=channels))


def export(model: str, fmt: str, output: str | Path | None = None, *, quantize: str | None = None, image: str | Path | None = None,
           target: str | Path | None = None, tlc: bool = True, opset: int = DEFAULT_OPSET,
           overwrite: bool = False, report=print, calibration: str | Path | None = None) -> ExportReport:
    """Everything ``python -m platform.export`` does."""
    from platform.pyfunc import load_any

    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt!r} is not supported; use {', '.join(FORMATS)}.")
    if fmt == "cube" and quantize:
        raise ConfigError("--quantize applies to ONNX exports; a .cube file is a table of colours.")
    if quantize not in QUANTIZE:
        raise ConfigError(f"--quantize {quantize!r} is not supported; use int8 or int8-static.")
    if (quantize == "int8-static") != (calibration is not None):
        raise ConfigError("--quantize int8-static needs --calibration DIR (a folder of frames of the shot), and "
                          "--calibration is only used by int8-static.")
    if calibration is not None and not Path(calibration).is_dir():
        raise ConfigError(f"--calibration {calibration} is not a folder; give a folder of frames of the shot.")
    if quantize and fmt != "onnx":
        raise ConfigError("--quantize int8 is ONNX Runtime's dynamic quantisation: use it with --format onnx.")
    output = Path(output) if output else default_output(model, fmt, quantize)
    if output.exists() and not overwrite:
        raise UserError(f"--output {output} already exists; nothing was written. Pass --overwrite to replace it.")
    if output.is_dir():
        raise UserError(f"--output {output} is a folder; give a file name such as model.onnx.")
    truth = None
    if target is not None:
        from platform.predict import read_image

        truth, _ = read_image(Path(target))
        if image is None:
            raise ConfigError("--target needs --image: the input frame whose ground truth it is.")

    loaded = load_any(model, "cpu")
    if fmt == "cube":
        return export_cube(loaded, output, image, report)
    module, min_side = prepare(loaded.model, loaded.config, tlc=tlc)
    channels = int((loaded.config.get("_model_kwargs") or {}).get("in_channels", 3))
    img = check_image(image, min_side, channels)
    if truth is not None and truth.shape[:2] != img.shape[:2]:
        raise ConfigError(f"--target is {truth.shape[1]}x{truth.shape[0]}, --image {img.shape[1]}x{img.shape[0]}.")
    m = loaded.config.get("model", {})
    metadata = {"platform.source": loaded.source, "platform.task_kind": module.kind.name,
                "platform.architecture": m.get("architecture"), "platform.size": m.get("size"),
                "platform.input": "image: float32 N x C x H x W in [0, 1]", "platform.min_side": min_side,
                "platform.size_multiple": module.multiple, "platform.tlc": bool(getattr(loaded.model, "tlc", None)),
                "platform.config": json.dumps(loaded.config, default=str)}
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = Path(tmp) / ("model.onnx" if fmt == "onnx" else "model.pt")
        try:
            if fmt == "onnx":
                names = export_onnx(module, fp32, channels, min_side, metadata, opset)
                got = run_onnx(fp32, img)
            else:
                names = export_torchscript(module, fp32, channels, min_side, metadata)
                got = run_torchscript(fp32, img)
        except (UserError, OSError):
            raise
        except Exception as exc:  # an operator the exporter cannot express: say which and what to try
            other = "torchscript" if fmt == "onnx" else "onnx"
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
            raise UserError(f"{model}: the {config_arch(loaded.config)} network could not be exported to {fmt} "
                            f"({type(exc).__name__}: {first}). Nothing was written. Try --format {other}, or "
                            "serve the registered MLflow model instead (mlflow models serve).") from exc
        want = run_torch(module, img)
        diff = max(float(np.abs(g - w).max()) for g, w in zip(got, want))
        result = ExportReport(output, fmt, diff, img.shape[:2], min_side, names)
        result.sizes["fp32"] = fp32.stat().st_size
        final = fp32
        if quantize:
            final = quantize_int8(fp32, Path(tmp) / "model.int8.onnx") if quantize == "int8" else \
                _quantize_static(fp32, Path(tmp) / "model.int8.onnx", calibration, channels)
            q = run_onnx(final, img)
            result.int8_psnr_vs_fp32 = psnr(q[0], got[0])
            result.sizes["int8"] = final.stat().st_size
            if truth is not None and module.kind.image_like:
                t = truth[:, :, :got[0].shape[1]]
                result.int8_target_psnr = (psnr(got[0][0].transpose(1, 2, 0), t), psnr(q[0][0].transpose(1, 2, 0), t))

        with atomic_path(output) as dest:  # checked first, then in place at once: never a half-written file
            shutil.copyfile(final, dest)

    h, w = result.check_size
    report(f"exported  {output} ({fmt}{' ' + quantize if quantize else ''}, inputs image N x {channels} x H x W in [0, 1], "
           f"dynamic batch/height/width, frames of at least {min_side} px a side; outputs {', '.join(names)})")
    report(f"check     {w}x{h} image: max |{fmt} fp32 - pytorch| = {diff:.3e}")
    if quantize:
        report(f"int8      {result.sizes['fp32'] / 1e6:.2f} MB -> {result.sizes['int8'] / 1e6:.2f} MB; "
               f"PSNR vs the fp32 export {result.int8_psnr_vs_fp32:.2f} dB")
        if result.int8_target_psnr:
            a, b = result.int8_target_psnr
            report(f"int8 cost PSNR vs --target: fp32 {a:.2f} dB, int8 {b:.2f} dB (cost {a - b:.3f} dB)")
    return result


def export_cube(loaded, output: Path, image: str | Path | None, report=print) -> ExportReport:
    """A pure lut3d model as a ``.cube`` file, read back with colour-science and checked."""
    import colour

    from platform.models.lut3d import cube_text
    from platform.tasks import output_kind

    text = cube_text(loaded.model, title=f"{loaded.source}")
    transfer = (loaded.config.get("task") or {}).get("transfer", "identity")
    output.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(output) as tmp:  # never a half-written LUT under the final name
        tmp.write_text(text)
    img = check_image(image, 1, 3)
    lut = colour.read_LUT(str(output))
    got = np.clip(lut.apply(img.astype(np.float64)), 0, 1)
    want = run_torch(ExportModule(loaded.model, output_kind(loaded.config), 1), img)[0][0].transpose(1, 2, 0)
    diff = float(np.abs(got - want).max())
    result = ExportReport(output, "cube", diff, img.shape[:2], 1, ["lut"])
    result.sizes["cube"] = output.stat().st_size
    report(f"exported  {output} (.cube, {loaded.model.lut_size}^3 nodes, domain [0, 1]"
           f"{'' if transfer in (None, 'identity') else f'; values in the space of task.transfer {transfer!r}'})")
    report(f"check     {img.shape[1]}x{img.shape[0]} image: max |colour-science read-back - pytorch| = {diff:.3e}")
    return result


def config_arch(config: dict) -> str:
    return str((config.get("model") or {}).get("architecture", "model"))


def default_output(model: str, fmt: str, quantize: str | None) -> Path:
    """``<name>.onnx`` / ``<name>.int8.onnx`` / ``<name>.pt`` in the current folder, named after the
    registered model (``models:/NAME@ALIAS`` -> ``NAME-ALIAS``) or the checkpoint folder."""
    import re

    if model.startswith(("models:/", "runs:/")):
        stem = re.sub(r"[^A-Za-z0-9._-]+", "-", model.split(":/", 1)[1]).strip("-")
    else:
        stem = Path(model).name if Path(model).name not in ("state.pt", "weights.pt") else Path(model).parent.name
        stem = Path(stem).stem if stem.endswith(".pt") else stem
    suffix = {"onnx": ".int8.onnx" if quantize else ".onnx", "cube": ".cube"}.get(fmt, ".pt")
    return Path(f"{stem or 'model'}{suffix}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m platform.export", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="models:/NAME@ALIAS, runs:/RUN_ID/model or a checkpoint")
    p.add_argument("--format", required=True, choices=FORMATS)
    p.add_argument("--output", type=Path, default=None,
                   help="file to write (default: named after the model, e.g. nafnet_fewshot-champion.onnx)")
    p.add_argument("--quantize", choices=QUANTIZE[1:], default=None,
                   help="ONNX Runtime int8 (CPU): int8 dynamic, int8-static calibrated on --calibration")
    p.add_argument("--calibration", type=Path, default=None, help="folder of frames of the shot (int8-static)")
    p.add_argument("--image", type=Path, default=None, help="check image (default: a photo from scikit-image)")
    p.add_argument("--target", type=Path, default=None, help="ground truth of --image, for the int8 PSNR cost")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET)
    p.add_argument("--no-tlc", dest="tlc", action="store_false", help="export NAFNet without TLC (any frame size)")
    p.add_argument("--overwrite", action="store_true")
    return p


@cli_main
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    export(args.model, args.format, args.output, quantize=args.quantize, image=args.image, target=args.target,
           tlc=args.tlc, opset=args.opset, overwrite=args.overwrite, calibration=args.calibration)
    return 0


if __name__ == "__main__":
    sys.exit(main())
