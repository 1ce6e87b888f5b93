"""What a network costs to run: parameters, multiply-accumulates and ms per frame on this CPU.

* MACs are counted by ``torch.utils.flop_counter.FlopCounterMode`` (no extra dependency) on a
  copy of the network on the ``meta`` device, so a 1080p count allocates and computes nothing;
  it counts matrix products and convolutions (FLOPs / 2), not element-wise work or sampling
  (a 3D LUT's ``grid_sample``), which is small next to them in these networks.
* Time per frame runs the project's own inference benchmark (:func:`platform.bench.predict.bench_setting`:
  the ``Predictor`` path of ``python -m platform.predict`` on a real photo tiled to the frame
  size) for a PyTorch network, and an ONNX Runtime session on the same photo for an ONNX file.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

FRAME_1080P = (1920, 1080)


@dataclass
class Cost:
    params: int
    macs: float  # per frame at the measured size
    ms_per_frame: float | None = None

    @property
    def params_m(self) -> float:
        return self.params / 1e6

    @property
    def gmacs(self) -> float:
        return self.macs / 1e9


def count_params(model: nn.Module, nonzero: bool = False) -> int:
    """Number of parameters (``nonzero``: only those not exactly zero, as masks leave them)."""
    if nonzero:
        return sum(int((p != 0).sum()) for p in model.parameters())
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, width: int = FRAME_1080P[0], height: int = FRAME_1080P[1],
               in_channels: int = 3) -> float:
    """Multiply-accumulates of one forward pass on a ``width`` x ``height`` frame (padded to the
    network's size multiple as inference pads it)."""
    from torch.utils.flop_counter import FlopCounterMode

    m = int(getattr(model, "size_multiple", 1) or 1)
    h, w = -(-height // m) * m, -(-width // m) * m
    meta = copy.deepcopy(model).to("meta").eval()
    x = torch.empty(1, in_channels, h, w, device="meta")
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        meta(x)
    return counter.get_total_flops() / 2.0


def torch_ms_per_frame(model: nn.Module, config: dict, width: int = FRAME_1080P[0], height: int = FRAME_1080P[1],
                       frames: int = 1) -> float:
    """Milliseconds per frame of the PyTorch network on the CPU, fp32, through the project's
    inference benchmark (no TLC: the exported graphs are timed without it too)."""
    from platform.bench.predict import bench_setting

    seconds, _, _ = bench_setting(model.eval(), config, torch.device("cpu"), "fp32", width, height, frames,
                                  None, False, False)
    return 1000.0 * seconds


def onnx_session(path: str | Path):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def onnx_ms_per_frame(path: str | Path, width: int = FRAME_1080P[0], height: int = FRAME_1080P[1],
                      frames: int = 1) -> float:
    """Milliseconds per frame of an exported ONNX file (input ``image``, N x 3 x H x W in [0, 1])
    in ONNX Runtime on the CPU, after one untimed warm-up run on a small frame."""
    from platform.bench.predict import photo_frame

    session = onnx_session(path)
    warm = photo_frame(256, 256).transpose(2, 0, 1)[None]
    session.run(None, {"image": np.ascontiguousarray(warm)})
    x = np.ascontiguousarray(photo_frame(width, height).transpose(2, 0, 1)[None])
    start = time.perf_counter()
    for _ in range(frames):
        session.run(None, {"image": x})
    return 1000.0 * (time.perf_counter() - start) / frames
