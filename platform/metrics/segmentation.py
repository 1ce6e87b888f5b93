"""Segmentation metrics from per-image confusion matrices.

Everything is computed from one integer confusion matrix per image, ``cm[b, t, p]`` =
number of pixels of image ``b`` with true class ``t`` predicted as ``p`` (pixels whose
target equals ``ignore_index`` are left out), counted by torchmetrics'
``multiclass_confusion_matrix`` (one ``bincount`` per image). From it, per class
(one-vs-rest):
``TP = cm[k, k]``, ``FP = column k - TP``, ``FN = row k - TP``, ``TN = rest``, and

===============  ==============================  ============================
metric           formula                         undefined (NaN) when
===============  ==============================  ============================
iou              TP / (TP + FP + FN)             class absent from target and prediction
dice, f1         2TP / (2TP + FP + FN)           idem (for hard labels dice == f1)
precision        TP / (TP + FP)                  class never predicted
recall           TP / (TP + FN)                  class absent from the target
(sensitivity)
specificity      TN / (TN + FP)                  every pixel belongs to the class
pixel_accuracy   sum(diag) / sum(cm)             image fully ignored
===============  ==============================  ============================

Inputs
------
``pred``: class labels (integer/bool, ``(B, H, W)`` or ``(B, 1, H, W)``), or float
scores ``(B, C, H, W)`` with ``C > 1`` (argmax over C), or a binary float map
``(B, 1, H, W)``/``(B, H, W)`` compared with ``threshold`` (default 0.5 for
probabilities; pass ``threshold=0.0`` for logits). ``target``: integer labels
``(B, H, W)`` or ``(B, 1, H, W)`` (integral floats are accepted).

Task: ``num_classes=None`` means binary (classes 0 and 1) unless ``pred`` has a class
dimension ``C > 1``, in which case ``num_classes = C``.

``average``: ``None`` (default) is ``"binary"`` for binary tasks (the foreground class
1 only) and ``"macro"`` for multiclass; ``"macro"`` is the mean over classes of the
per-class values, skipping classes where the value is undefined (so empty classes do
not count as 0 or 1); ``"micro"`` pools TP/FP/FN/TN over classes first; ``"none"``
returns the per-class values (last dimension = classes).

``reduction``: ``"mean"`` (default) is the mean over images of the per-image values
(images where the value is undefined are skipped); ``"none"`` the per-image values;
``"global"`` computes the value once from the confusion matrix summed over the batch
(the dataset-level convention of mIoU benchmarks; :class:`ConfusionMatrix` accumulates
it over many batches). ``zero_division`` replaces undefined values with a number
instead of NaN before averaging.

The ratios are taken here from the matrix rather than with torchmetrics'
``multiclass_jaccard_index`` & co.: those give 0 for an undefined per-class value (e.g.
``average="none"`` for a class absent from target and prediction: 0 there, NaN here, so
that per-image means skip it) and have no per-image reduction; their macro IoU agrees.
The scikit-learn parity tests pin the values.
"""

from __future__ import annotations

import math

import torch

_AVERAGES = ("binary", "macro", "micro", "none")
_REDUCTIONS = ("mean", "none", "global")


def _labels_from_pred(pred: torch.Tensor, threshold: float, name: str) -> tuple[torch.Tensor, int | None]:
    """Hard labels ``(B, H, W)`` and the class count implied by ``pred`` (None if unknown)."""
    if pred.is_floating_point():
        if pred.ndim == 4 and pred.shape[1] > 1:
            return pred.argmax(dim=1), pred.shape[1]
        if pred.ndim == 4:
            pred = pred[:, 0]
        if pred.ndim != 3:
            raise ValueError(f"{name}: expected pred of shape (B, C, H, W), (B, 1, H, W) or (B, H, W), "
                             f"got {tuple(pred.shape)}")
        return (pred >= threshold).long(), 2
    if pred.ndim == 4 and pred.shape[1] == 1:
        pred = pred[:, 0]
    if pred.ndim != 3:
        raise ValueError(f"{name}: integer label predictions must be (B, H, W) or (B, 1, H, W), "
                         f"got {tuple(pred.shape)}")
    return pred.long(), None


def _labels_from_target(target: torch.Tensor, name: str) -> torch.Tensor:
    if target.ndim == 4 and target.shape[1] == 1:
        target = target[:, 0]
    if target.ndim != 3:
        raise ValueError(f"{name}: target must hold class labels of shape (B, H, W) or (B, 1, H, W), "
                         f"got {tuple(target.shape)}")
    if target.is_floating_point() and not torch.equal(target, target.round()):
        raise ValueError(f"{name}: target holds non-integer values; pass class labels (threshold soft "
                         "masks first, e.g. (alpha > 0.5).long())")
    return target.long()


def confusion_matrix(
    pred: torch.Tensor,
    target: torch.Tensor,
    num_classes: int | None = None,
    *,
    ignore_index: int | None = None,
    threshold: float = 0.5,
) -> torch.Tensor:
    """Per-image confusion matrices, int64 ``(B, K, K)``, rows = target, columns = prediction."""
    name = "confusion_matrix"
    labels, implied = _labels_from_pred(pred, threshold, name)
    truth = _labels_from_target(target, name)
    if labels.shape != truth.shape:
        raise ValueError(f"{name}: prediction {tuple(labels.shape)} and target {tuple(truth.shape)} "
                         "cover different pixels")
    if num_classes is None:
        num_classes = implied if implied is not None else 2
    elif implied is not None and pred.ndim == 4 and pred.shape[1] > 1 and implied != num_classes:
        raise ValueError(f"{name}: num_classes={num_classes} but pred has {implied} channels")
    k = int(num_classes)
    if k < 2:
        raise ValueError(f"{name}: num_classes must be at least 2, got {num_classes}")
    valid = torch.ones_like(truth, dtype=torch.bool) if ignore_index is None else truth != ignore_index
    bad_t = valid & ((truth < 0) | (truth >= k))
    if bool(bad_t.any()):
        raise ValueError(f"{name}: target has label {int(truth[bad_t][0])} outside 0..{k - 1} "
                         f"(ignore_index={ignore_index}); set num_classes or ignore_index")
    bad_p = valid & ((labels < 0) | (labels >= k))
    if bool(bad_p.any()):
        raise ValueError(f"{name}: prediction has label {int(labels[bad_p][0])} outside 0..{k - 1}")
    if truth.shape[0] == 0:
        return torch.zeros(0, k, k, dtype=torch.long, device=truth.device)
    # Imported here: torchmetrics takes seconds to import, and every command line that only
    # reads a spec (the search driver's config check included) imports this module.
    from torchmetrics.functional.classification import multiclass_confusion_matrix

    # Labels were checked above, with messages that name the option to change.
    return torch.stack([multiclass_confusion_matrix(p, t, k, ignore_index=ignore_index, validate_args=False)
                        for p, t in zip(labels, truth)]).long()


def _stats(cm: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """TP, FP, FN, TN per class (..., K) as float64."""
    cm = cm.double()
    tp = torch.diagonal(cm, dim1=-2, dim2=-1)
    fp = cm.sum(dim=-2) - tp
    fn = cm.sum(dim=-1) - tp
    tn = cm.sum(dim=(-2, -1)).unsqueeze(-1) - tp - fp - fn
    return tp, fp, fn, tn


def _ratio(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    return torch.where(den > 0, num / den.clamp_min(1e-300), torch.full_like(num, math.nan))


_FORMULAS = {
    "iou": lambda tp, fp, fn, tn: _ratio(tp, tp + fp + fn),
    "dice": lambda tp, fp, fn, tn: _ratio(2 * tp, 2 * tp + fp + fn),
    "precision": lambda tp, fp, fn, tn: _ratio(tp, tp + fp),
    "recall": lambda tp, fp, fn, tn: _ratio(tp, tp + fn),
    "specificity": lambda tp, fp, fn, tn: _ratio(tn, tn + fp),
}
_FORMULAS["f1"] = _FORMULAS["dice"]
_FORMULAS["sensitivity"] = _FORMULAS["recall"]


def metric_from_confusion(
    cm: torch.Tensor,
    metric: str,
    *,
    average: str = "macro",
    zero_division: float | None = None,
) -> torch.Tensor:
    """Evaluate ``metric`` on confusion matrices ``(..., K, K)`` -> ``(...)`` or ``(..., K)``."""
    if metric == "pixel_accuracy":
        cmd = cm.double()
        value = _ratio(torch.diagonal(cmd, dim1=-2, dim2=-1).sum(-1), cmd.sum(dim=(-2, -1)))
        return value if zero_division is None else torch.nan_to_num(value, nan=float(zero_division))
    if metric not in _FORMULAS:
        raise ValueError(f"unknown segmentation metric {metric!r}; known: "
                         f"{', '.join(sorted([*_FORMULAS, 'pixel_accuracy']))}")
    if average not in _AVERAGES:
        raise ValueError(f"{metric}: average must be one of {_AVERAGES}, got {average!r}")
    tp, fp, fn, tn = _stats(cm)
    formula = _FORMULAS[metric]
    if average == "micro":
        value = formula(tp.sum(-1), fp.sum(-1), fn.sum(-1), tn.sum(-1))
        return value if zero_division is None else torch.nan_to_num(value, nan=float(zero_division))
    per_class = formula(tp, fp, fn, tn)
    if zero_division is not None:
        per_class = torch.nan_to_num(per_class, nan=float(zero_division))
    if average == "none":
        return per_class
    if average == "binary":
        if cm.shape[-1] != 2:
            raise ValueError(f"{metric}: average='binary' needs a 2-class task, got {cm.shape[-1]} classes; "
                             "use 'macro', 'micro' or 'none'")
        return per_class[..., 1]
    return torch.nanmean(per_class, dim=-1)


def _segmentation_metric(
    metric: str,
    pred: torch.Tensor,
    target: torch.Tensor,
    num_classes: int | None,
    ignore_index: int | None,
    threshold: float,
    average: str | None,
    reduction: str,
    zero_division: float | None,
) -> torch.Tensor:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"{metric}: reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    cm = confusion_matrix(pred, target, num_classes, ignore_index=ignore_index, threshold=threshold)
    if average is None:
        binary_task = num_classes is None and not (pred.ndim == 4 and pred.shape[1] > 1)
        average = "binary" if binary_task else "macro"
    if reduction == "global":
        return metric_from_confusion(cm.sum(0), metric, average=average, zero_division=zero_division).float()
    values = metric_from_confusion(cm, metric, average=average, zero_division=zero_division)
    if reduction == "none":
        return values.float()
    return torch.nanmean(values, dim=0).float()


def _make(metric: str, doc: str):
    def fn(
        pred: torch.Tensor,
        target: torch.Tensor,
        *,
        num_classes: int | None = None,
        ignore_index: int | None = None,
        threshold: float = 0.5,
        average: str | None = None,
        reduction: str = "mean",
        zero_division: float | None = None,
    ) -> torch.Tensor:
        return _segmentation_metric(metric, pred, target, num_classes, ignore_index, threshold, average,
                                    reduction, zero_division)

    fn.__name__ = fn.__qualname__ = metric
    fn.__doc__ = doc + "\n\nSee the module docstring for inputs, ``average``, ``reduction`` and empty classes."
    return fn


iou = _make("iou", "Intersection over union (Jaccard index) TP / (TP + FP + FN).")
dice = _make("dice", "Dice coefficient 2TP / (2TP + FP + FN).")
f1 = _make("f1", "F1 score, the harmonic mean of precision and recall (equal to dice for hard labels).")
precision = _make("precision", "Precision TP / (TP + FP).")
recall = _make("recall", "Recall (sensitivity) TP / (TP + FN).")
sensitivity = recall
specificity = _make("specificity", "Specificity TN / (TN + FP).")


def pixel_accuracy(
    pred: torch.Tensor,
    target: torch.Tensor,
    *,
    num_classes: int | None = None,
    ignore_index: int | None = None,
    threshold: float = 0.5,
    reduction: str = "mean",
) -> torch.Tensor:
    """Fraction of (non-ignored) pixels whose predicted class is right: (TP + TN) / N for binary."""
    return _segmentation_metric("pixel_accuracy", pred, target, num_classes, ignore_index, threshold,
                                "micro", reduction, None)


class ConfusionMatrix:
    """Accumulates a dataset-level confusion matrix over batches (for validation loops).

    ``cm = ConfusionMatrix(num_classes=16, ignore_index=255)``; ``cm.update(logits,
    labels)`` per batch; ``cm.compute("iou")`` (macro mIoU), ``cm.compute("iou",
    average="none")`` (per class) or ``cm.summary()``. ``cm.matrix`` is a plain int64
    tensor, so a DDP trainer can ``all_reduce`` it before computing.
    """

    def __init__(self, num_classes: int | None = None, *, ignore_index: int | None = None, threshold: float = 0.5):
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.threshold = threshold
        self.matrix: torch.Tensor | None = None
        self._binary_task: bool | None = None

    def reset(self) -> None:
        self.matrix = None

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        cm = confusion_matrix(pred, target, self.num_classes, ignore_index=self.ignore_index,
                              threshold=self.threshold).sum(0)
        if self._binary_task is None:
            self._binary_task = self.num_classes is None and not (pred.ndim == 4 and pred.shape[1] > 1)
        if self.matrix is None:
            self.matrix = cm
        elif self.matrix.shape != cm.shape:
            raise ValueError(f"ConfusionMatrix: batch has {cm.shape[-1]} classes, earlier batches had "
                             f"{self.matrix.shape[-1]}")
        else:
            self.matrix = self.matrix + cm.to(self.matrix.device)

    def compute(self, metric: str, *, average: str | None = None, zero_division: float | None = None) -> torch.Tensor:
        if self.matrix is None:
            raise ValueError("ConfusionMatrix.compute() called before any update()")
        if average is None:
            average = "binary" if self._binary_task else "macro"
        if metric == "pixel_accuracy":
            average = "micro"
        return metric_from_confusion(self.matrix, metric, average=average, zero_division=zero_division).float()

    def summary(self) -> dict[str, float]:
        """Every metric, with the default average, as Python floats (for logging)."""
        names = ("iou", "dice", "precision", "recall", "specificity", "f1", "pixel_accuracy")
        return {name: float(self.compute(name)) for name in names}
