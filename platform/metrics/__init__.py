"""Image, segmentation, matting and video metrics (functions on tensors).

Every function takes ``pred``/``target`` tensors and keyword options; the image ones
need an explicit ``data_range`` (2.0 for the trainer's [-1, 1] tensors). Per-image
values come back with ``reduction="none"``, the batch mean with ``reduction="mean"``
(default); segmentation metrics also offer ``reduction="global"`` (from the summed
confusion matrix) and ``average`` = binary / macro / micro / none.

:data:`METRICS` registers each function with ``higher_is_better`` and ``kind``
metadata so a search can pick ``mode="max"``/``"min"`` for a metric named in YAML::

    from platform.metrics import METRICS, psnr
    fn = METRICS.get("psnr"); METRICS.meta("psnr")["higher_is_better"]  # True
"""

from __future__ import annotations

from platform.metrics.image import lpips, ms_ssim, mse, psnr, ssim
from platform.metrics.matting import gradient_error, make_trimap, sad, trimap_accuracy, unknown_region
from platform.metrics.segmentation import (
    ConfusionMatrix,
    confusion_matrix,
    dice,
    f1,
    iou,
    metric_from_confusion,
    pixel_accuracy,
    precision,
    recall,
    sensitivity,
    specificity,
)
from platform.metrics.video import temporal_flicker
from platform.registry import Registry

METRICS = Registry("metric")

for _fn, _higher, _kind in (
    (psnr, True, "image"),
    (ssim, True, "image"),
    (ms_ssim, True, "image"),
    (lpips, False, "image"),
    (mse, False, "image"),
    (iou, True, "segmentation"),
    (dice, True, "segmentation"),
    (f1, True, "segmentation"),
    (precision, True, "segmentation"),
    (recall, True, "segmentation"),
    (specificity, True, "segmentation"),
    (pixel_accuracy, True, "segmentation"),
    (sad, False, "matting"),
    (gradient_error, False, "matting"),
    (trimap_accuracy, True, "matting"),
    (temporal_flicker, False, "video"),
):
    METRICS.register(_fn.__name__, higher_is_better=_higher, kind=_kind)(_fn)
METRICS.register("sensitivity", higher_is_better=True, kind="segmentation")(sensitivity)

__all__ = [
    "METRICS",
    "ConfusionMatrix",
    "confusion_matrix",
    "dice",
    "f1",
    "gradient_error",
    "iou",
    "lpips",
    "make_trimap",
    "metric_from_confusion",
    "ms_ssim",
    "mse",
    "pixel_accuracy",
    "precision",
    "psnr",
    "recall",
    "sad",
    "sensitivity",
    "specificity",
    "ssim",
    "temporal_flicker",
    "trimap_accuracy",
    "unknown_region",
]
