"""Segmentation metrics against hand-computed confusion matrices (and sklearn on random data)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import sklearn.metrics as sk
import torch

from platform.metrics import (
    ConfusionMatrix,
    confusion_matrix,
    dice,
    f1,
    iou,
    pixel_accuracy,
    precision,
    recall,
    sensitivity,
    specificity,
)

NAN = float("nan")

# Image 0 (ignore_index 255 at one pixel):         Image 1:
#   target [[0, 0, 1, 1], [2, 2, 255, 0]]            target all 1
#   pred   [[0, 1, 1, 1], [2, 0, 2,   0]]            pred   all 1 except the last pixel (0)
TARGET = torch.tensor([[[0, 0, 1, 1], [2, 2, 255, 0]], [[1, 1, 1, 1], [1, 1, 1, 1]]])
PRED = torch.tensor([[[0, 1, 1, 1], [2, 0, 2, 0]], [[1, 1, 1, 1], [1, 1, 1, 0]]])
# Hand-computed: rows = target, columns = prediction.
CM0 = [[2, 1, 0], [0, 2, 0], [1, 0, 1]]
CM1 = [[0, 0, 0], [1, 7, 0], [0, 0, 0]]
# Per class (one-vs-rest) from CM0 / CM1 / CM0 + CM1:
IOU0 = [2 / 4, 2 / 3, 1 / 2]
IOU1 = [0 / 1, 7 / 8, NAN]  # class 2 absent from target and prediction: undefined
IOU_GLOBAL = [2 / 5, 9 / 11, 1 / 2]


def _logits(labels: torch.Tensor, classes: int) -> torch.Tensor:
    safe = labels.clamp(0, classes - 1)
    return torch.nn.functional.one_hot(safe, classes).permute(0, 3, 1, 2).float() * 5.0


def _close(actual: torch.Tensor, expected) -> None:
    expected = torch.tensor(expected, dtype=torch.float32)
    assert torch.allclose(actual.float(), expected, atol=1e-6, equal_nan=True), (actual, expected)


def test_confusion_matrix_by_hand_with_ignore_index():
    cm = confusion_matrix(PRED, TARGET, 3, ignore_index=255)
    assert cm.tolist() == [CM0, CM1]
    # Logits give the same matrices (argmax over channels).
    assert confusion_matrix(_logits(PRED, 3), TARGET, ignore_index=255).tolist() == [CM0, CM1]


def test_iou_per_image_per_class_macro_global():
    kw = dict(num_classes=3, ignore_index=255)
    _close(iou(PRED, TARGET, average="none", reduction="none", **kw), [IOU0, IOU1])
    macro0, macro1 = sum(IOU0) / 3, (0 + 7 / 8) / 2  # NaN class skipped, not counted as 0 or 1
    _close(iou(PRED, TARGET, reduction="none", **kw), [macro0, macro1])
    _close(iou(PRED, TARGET, **kw), (macro0 + macro1) / 2)
    _close(iou(PRED, TARGET, reduction="global", average="none", **kw), IOU_GLOBAL)
    _close(iou(PRED, TARGET, reduction="global", **kw), sum(IOU_GLOBAL) / 3)
    # micro: pooled TP/FP/FN over classes; image 0: TP 5, FP 2, FN 2.
    _close(iou(PRED, TARGET, average="micro", reduction="none", **kw)[0], 5 / 9)
    # zero_division fills undefined values before averaging.
    _close(iou(PRED, TARGET, average="none", reduction="none", zero_division=1.0, **kw)[1], [0, 7 / 8, 1])


def test_empty_class_in_larger_label_space():
    # A fourth class that never occurs: NaN per class, ignored by the macro mean.
    per_class = iou(PRED, TARGET, num_classes=4, ignore_index=255, average="none", reduction="none")
    assert torch.isnan(per_class[:, 3]).all()
    _close(iou(PRED[:1], TARGET[:1], num_classes=4, ignore_index=255), sum(IOU0) / 3)
    _close(iou(PRED[:1], TARGET[:1], num_classes=4, ignore_index=255, zero_division=0.0), sum(IOU0) / 4)


def test_precision_recall_specificity_dice_f1_pixel_accuracy_by_hand():
    kw = dict(num_classes=3, ignore_index=255, average="none", reduction="none")
    # Image 0 from CM0: TP [2, 2, 1], FP [1, 1, 0], FN [1, 0, 1], TN [3, 4, 5] (7 valid pixels).
    _close(precision(PRED, TARGET, **kw)[0], [2 / 3, 2 / 3, 1])
    _close(recall(PRED, TARGET, **kw)[0], [2 / 3, 1, 1 / 2])
    _close(sensitivity(PRED, TARGET, **kw)[0], [2 / 3, 1, 1 / 2])
    _close(specificity(PRED, TARGET, **kw)[0], [3 / 4, 4 / 5, 5 / 5])
    _close(dice(PRED, TARGET, **kw)[0], [4 / 6, 4 / 5, 2 / 3])
    _close(f1(PRED, TARGET, **kw)[0], [4 / 6, 4 / 5, 2 / 3])
    # Image 1 from CM1: class 2 never predicted and absent -> precision/recall NaN.
    _close(precision(PRED, TARGET, **kw)[1], [0 / 1, 7 / 7, NAN])
    _close(recall(PRED, TARGET, **kw)[1], [NAN, 7 / 8, NAN])
    _close(pixel_accuracy(PRED, TARGET, num_classes=3, ignore_index=255, reduction="none"), [5 / 7, 7 / 8])
    _close(pixel_accuracy(PRED, TARGET, num_classes=3, ignore_index=255, reduction="global"), 12 / 15)


def test_binary_probabilities_logits_and_empty_images():
    target = torch.tensor([[[1, 1, 0, 0]], [[0, 0, 0, 0]]])
    prob = torch.tensor([[[0.9, 0.4, 0.6, 0.1]], [[0.1, 0.2, 0.3, 0.4]]])
    # Image 0 at threshold 0.5: TP 1, FP 1, FN 1, TN 1. Image 1: nothing anywhere.
    _close(iou(prob, target, reduction="none"), [1 / 3, NAN])
    _close(iou(prob, target), 1 / 3)  # the empty image is skipped in the batch mean
    _close(iou(prob, target, zero_division=1.0), (1 / 3 + 1) / 2)
    _close(dice(prob, target, reduction="none")[0], 0.5)
    _close(precision(prob, target, reduction="none")[0], 0.5)
    _close(recall(prob, target, reduction="none")[0], 0.5)
    _close(specificity(prob, target, reduction="none"), [0.5, 1.0])
    _close(pixel_accuracy(prob, target, reduction="none"), [0.5, 1.0])
    logits = torch.logit(prob).unsqueeze(1)  # (B, 1, H, W) logits, threshold 0
    _close(iou(logits, target, threshold=0.0, reduction="none"), [1 / 3, NAN])
    # macro over background and foreground: background IoU of image 0 = 1/3 as well.
    _close(iou(prob, target, average="macro", reduction="none")[0], 1 / 3)
    # Boolean / integer label predictions work too.
    _close(iou(prob >= 0.5, target, reduction="none")[0], 1 / 3)


def test_matches_sklearn_on_random_labels():
    g = torch.Generator().manual_seed(0)
    target = torch.randint(0, 5, (2, 23, 17), generator=g)
    pred = torch.where(torch.rand(2, 23, 17, generator=g) < 0.6, target, torch.randint(0, 5, (2, 23, 17), generator=g))
    target[0, :3] = 255
    valid = target != 255
    t, p = target[valid].numpy(), pred[valid].numpy()
    labels = list(range(5))
    ref_cm = sk.confusion_matrix(t, p, labels=labels)
    assert np.array_equal(confusion_matrix(pred, target, 5, ignore_index=255).sum(0).numpy(), ref_cm)
    kw = dict(num_classes=5, ignore_index=255, reduction="global")
    _close(iou(pred, target, average="none", **kw), sk.jaccard_score(t, p, labels=labels, average=None))
    _close(iou(pred, target, **kw), sk.jaccard_score(t, p, labels=labels, average="macro"))
    _close(precision(pred, target, average="none", **kw), sk.precision_score(t, p, labels=labels, average=None))
    _close(recall(pred, target, average="micro", **kw), sk.recall_score(t, p, labels=labels, average="micro"))
    _close(f1(pred, target, **kw), sk.f1_score(t, p, labels=labels, average="macro"))
    _close(pixel_accuracy(pred, target, **kw), sk.accuracy_score(t, p))


def test_confusion_matrix_accumulator_equals_global():
    acc = ConfusionMatrix(num_classes=3, ignore_index=255)
    acc.update(PRED[:1], TARGET[:1])
    acc.update(PRED[1:], TARGET[1:])
    assert acc.matrix.tolist() == (torch.tensor(CM0) + torch.tensor(CM1)).tolist()
    _close(acc.compute("iou", average="none"), IOU_GLOBAL)
    summary = acc.summary()
    assert summary["iou"] == pytest.approx(sum(IOU_GLOBAL) / 3)
    assert summary["pixel_accuracy"] == pytest.approx(12 / 15)
    acc.reset()
    with pytest.raises(ValueError, match="before any update"):
        acc.compute("iou")


def test_bad_labels_and_options_are_clear():
    with pytest.raises(ValueError, match="label 255 outside 0..2"):
        iou(PRED, TARGET, num_classes=3)
    with pytest.raises(ValueError, match="average='binary' needs a 2-class task"):
        iou(PRED, TARGET, num_classes=3, ignore_index=255, average="binary")
    with pytest.raises(ValueError, match="non-integer"):
        iou(torch.rand(1, 4, 4), torch.rand(1, 4, 4))
    with pytest.raises(ValueError, match="reduction"):
        iou(PRED, TARGET, num_classes=3, ignore_index=255, reduction="sum")
    assert math.isnan(float(iou(PRED[:1], torch.full_like(TARGET[:1], 255), num_classes=3, ignore_index=255)))
