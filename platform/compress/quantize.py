"""ONNX Runtime static int8 quantisation, calibrated on frames of the shot.

Dynamic int8 (:func:`platform.export.quantize_int8`) quantises weights ahead of time and each
activation at run time from its own range; static int8 fixes every activation's scale and zero
point beforehand from calibration frames, so the graph runs integer convolutions end to end
(QDQ format: QuantizeLinear/DequantizeLinear pairs that ONNX Runtime fuses into int8 kernels).
The calibration frames should be frames of the shot the model will run on (ungraded plates are
fine: only the input distribution matters); :class:`FrameReader` feeds them as crops.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from platform.errors import ConfigError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".exr", ".bmp", ".webp")
CALIBRATION_SIDE = 256  # calibration crop side: ranges need typical pixels, not whole frames
MAX_CALIBRATION_FRAMES = 32


def calibration_frames(folder: str | Path, side: int = CALIBRATION_SIDE, limit: int = MAX_CALIBRATION_FRAMES,
                       channels: int = 3) -> list[np.ndarray]:
    """Centre crops (``side`` px, or the whole frame when smaller) of the images in ``folder``,
    float32 H x W x C in [0, 1], sorted by name, at most ``limit``."""
    from platform.data.io import read_image

    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"--calibration {folder} is not a folder; give a folder of frames of the shot "
                          "(the ungraded plates are fine) for static int8 calibration.")
    files = sorted(f for f in folder.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)[:limit]
    if not files:
        raise ConfigError(f"--calibration {folder} holds no images ({', '.join(IMAGE_SUFFIXES)}); "
                          "give a folder of frames of the shot.")
    return [centre_crop(_channels(read_image(f), channels, f), side) for f in files]


def _channels(img: np.ndarray, channels: int, path: Path) -> np.ndarray:
    img = np.clip(np.asarray(img, np.float32), 0.0, 1.0)
    if img.shape[2] == 1 and channels == 3:
        img = np.repeat(img, 3, axis=2)
    if img.shape[2] > channels:
        img = img[:, :, :channels]
    if img.shape[2] != channels:
        raise ConfigError(f"calibration frame {path} has {img.shape[2]} channels, the model takes {channels}.")
    return img


def centre_crop(img: np.ndarray, side: int) -> np.ndarray:
    h, w = img.shape[:2]
    top, left = max(0, (h - side) // 2), max(0, (w - side) // 2)
    return np.ascontiguousarray(img[top:top + side, left:left + side])


def reader(frames: Sequence[np.ndarray], input_name: str = "image"):
    """An ONNX Runtime ``CalibrationDataReader`` over H x W x C frames (fed as 1 x C x H x W)."""
    from onnxruntime.quantization import CalibrationDataReader

    class FrameReader(CalibrationDataReader):
        def __init__(self):
            self._it: Iterator[dict] = iter({input_name: f.transpose(2, 0, 1)[None].astype(np.float32)}
                                            for f in frames)

        def get_next(self):
            return next(self._it, None)

    return FrameReader()


def quantize_static_int8(src: Path, dest: Path, frames: Sequence[np.ndarray], per_channel: bool = True) -> Path:
    """``src`` (fp32 ONNX) quantised to static int8 QDQ at ``dest``, activation ranges from ``frames``
    (MinMax calibration), weights int8 per output channel, activations uint8 (ONNX Runtime's
    recommended combination for x86 CPUs)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if not frames:
        raise ConfigError("static int8 needs at least one calibration frame.")
    with prepared_for_quantisation(src, "static-pre") as source:
        quantize_static(str(source), str(dest), reader(frames), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=per_channel,
                        calibrate_method=CalibrationMethod.MinMax)
    return dest


@contextmanager
def prepared_for_quantisation(src: Path, tag: str) -> Iterator[Path]:
    """The model to quantise: ``src`` after ONNX Runtime's pre-processing (written beside it as
    ``<stem>.<tag>.onnx``), or ``src`` itself when that fails; the root logger is kept at ERROR
    meanwhile (the quantiser logs a line per tensor it leaves in float). Static and dynamic int8
    (:func:`platform.export.quantize_int8`) both quantise through it."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        source = src
        try:
            from onnxruntime.quantization.shape_inference import quant_pre_process

            pre = src.with_name(f"{src.stem}.{tag}.onnx")
            quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
            source = pre
        except Exception as exc:  # pre-processing (graph optimisation) helps; quantisation works without it
            log.debug("quantisation pre-processing skipped: %s", exc)
        yield source
    finally:
        root.setLevel(level)
