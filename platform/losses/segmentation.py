"""Segmentation losses on logits: bce, ce, dice, focal, tversky, lovasz.

``pred`` are raw logits ``(B, C, H, W)`` (``(B, H, W)`` is read as one channel);
``target`` holds labels. ``mode``:

* ``"auto"`` (default): ``"binary"`` when ``pred`` has one channel, else ``"multiclass"``;
* ``"binary"``: one logit channel, target mask ``(B, H, W)`` or ``(B, 1, H, W)`` in {0, 1}
  (soft values in [0, 1] are accepted by bce/dice/tversky);
* ``"multiclass"``: ``C`` logit channels, integer target ``(B, H, W)`` (or ``(B, 1, H, W)``)
  in ``0..C-1``;
* ``"multilabel"``: ``C`` independent sigmoid channels, target of the same shape.

``ignore_index`` (e.g. 255): target pixels with that value contribute nothing. dice,
focal, tversky and lovasz are ``segmentation_models_pytorch`` losses (version 0.6);
bce and ce are torch's own functions with an ignore mask, because smp's SoftBCE /
SoftCrossEntropy average over ignored pixels too (diluting the loss). Math runs in
float32 with autocast off.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from platform.losses.base import fp32_forward, register_loss

MODES = ("auto", "binary", "multiclass", "multilabel")


class SegmentationLoss(nn.Module):
    """Shared mode resolution and target checks; subclasses implement ``compute``."""

    name = "segmentation"

    def __init__(self, mode: str = "auto", ignore_index: int | None = None):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if ignore_index is not None and (isinstance(ignore_index, bool) or int(ignore_index) != ignore_index):
            raise ValueError(f"ignore_index must be an integer or null, got {ignore_index!r}")
        self.mode = mode
        self.ignore_index = None if ignore_index is None else int(ignore_index)

    def _prepare(self, pred: torch.Tensor, target: torch.Tensor) -> tuple[str, torch.Tensor, torch.Tensor]:
        if pred.ndim == 3:
            pred = pred.unsqueeze(1)
        if pred.ndim != 4:
            raise ValueError(f"loss {self.name!r}: expected logits of shape (B, C, H, W), got {tuple(pred.shape)}")
        mode = self.mode
        if mode == "auto":
            mode = "binary" if pred.shape[1] == 1 else "multiclass"
        batch, channels, height, width = pred.shape
        if mode == "multilabel":
            if target.shape != pred.shape:
                raise ValueError(f"loss {self.name!r} (multilabel): target must have the logits' shape "
                                 f"{tuple(pred.shape)}, got {tuple(target.shape)}")
            return mode, pred, target.float()
        if target.ndim == 4 and target.shape[1] == 1:
            target = target[:, 0]
        if target.shape != (batch, height, width):
            raise ValueError(f"loss {self.name!r} ({mode}): target must be (B, H, W) = {(batch, height, width)} "
                             f"or (B, 1, H, W), got {tuple(target.shape)}")
        valid = target != self.ignore_index if self.ignore_index is not None else None
        if mode == "binary":
            if channels != 1:
                raise ValueError(f"loss {self.name!r}: mode 'binary' needs one logit channel, got {channels}; "
                                 "use mode 'multiclass' for a C-channel head")
            t = target.float()
            bad = (t < 0) | (t > 1)
            if valid is not None:
                bad &= valid
            if bool(bad.any()):
                raise ValueError(f"loss {self.name!r} (binary): target values must be in [0, 1] (or "
                                 f"ignore_index={self.ignore_index}), found {float(t[bad][0])}")
            return mode, pred, t.unsqueeze(1)
        # multiclass
        if channels < 2:
            raise ValueError(f"loss {self.name!r}: mode 'multiclass' needs at least 2 logit channels, got {channels}")
        if target.is_floating_point() and not torch.equal(target, target.round()):
            raise ValueError(f"loss {self.name!r} (multiclass): target must hold integer class labels")
        t = target.long()
        bad = (t < 0) | (t >= channels)
        if valid is not None:
            bad &= valid
        if bool(bad.any()):
            raise ValueError(f"loss {self.name!r} (multiclass): target has label {int(t[bad][0])} but the "
                             f"logits have {channels} channels (ignore_index={self.ignore_index})")
        return mode, pred, t

    @fp32_forward
    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        mode, pred, target = self._prepare(pred, target)
        return self.compute(mode, pred, target)

    def compute(self, mode: str, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class _SmpLoss(SegmentationLoss):
    """Wraps an smp loss class, built lazily once per resolved mode."""

    def __init__(self, mode: str = "auto", ignore_index: int | None = None, **options):
        super().__init__(mode, ignore_index)
        self._options = options
        self._impl: dict[str, nn.Module] = {}
        if mode != "auto":
            self._build(mode)  # surface bad options at construction time

    def _factory(self):
        raise NotImplementedError

    def _build(self, mode: str) -> nn.Module:
        if mode not in self._impl:
            try:
                self._impl[mode] = self._factory()(mode=mode, ignore_index=self.ignore_index, **self._options)
            except AssertionError as exc:  # smp validates options with assert
                raise ValueError(f"loss {self.name!r}: options {self._options} are not valid for mode "
                                 f"{mode!r} ({exc})") from None
        return self._impl[mode]

    def compute(self, mode: str, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self._build(mode)(pred, target)


def _masked_mean(loss: torch.Tensor, valid: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    if valid is None:
        return loss.mean()
    count = valid.sum()
    if int(count) == 0:
        return like.sum() * 0.0  # every pixel ignored: zero loss, still attached to the graph
    return (loss * valid).sum() / count


@register_loss("bce", kind="segmentation")
class BCELoss(SegmentationLoss):
    """Binary cross-entropy on logits (``binary_cross_entropy_with_logits``), mean over valid pixels.

    Binary mode: one channel vs a {0, 1} (or soft) mask. Multiclass mode (C channels,
    integer labels): one-vs-rest BCE on the one-hot target. Multilabel: per channel.
    ``pos_weight`` weighs positive pixels (foreground imbalance); ``smooth_factor``
    smooths targets towards 0.5 (``t * (1 - s) + (1 - t) * s``).
    """

    name = "bce"

    def __init__(self, mode: str = "auto", ignore_index: int | None = None, pos_weight: float | None = None,
                 smooth_factor: float | None = None):
        super().__init__(mode, ignore_index)
        self.pos_weight = None if pos_weight is None else float(pos_weight)
        self.smooth_factor = None if smooth_factor is None else float(smooth_factor)
        if self.pos_weight is not None and not self.pos_weight > 0:
            raise ValueError(f"bce pos_weight must be positive, got {pos_weight!r}")
        if self.smooth_factor is not None and not 0 <= self.smooth_factor < 0.5:
            raise ValueError(f"bce smooth_factor must be in [0, 0.5), got {smooth_factor!r}")

    def compute(self, mode: str, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        valid = None
        if mode == "multiclass":
            valid = (target != self.ignore_index) if self.ignore_index is not None else None
            labels = target.clamp(0, pred.shape[1] - 1) if valid is not None else target
            target = F.one_hot(labels, pred.shape[1]).permute(0, 3, 1, 2).float()
            if valid is not None:
                valid = valid.unsqueeze(1).expand_as(pred)
        elif self.ignore_index is not None:
            valid = target != self.ignore_index
            target = torch.where(valid, target, torch.zeros_like(target))
        if self.smooth_factor:
            target = target * (1 - self.smooth_factor) + (1 - target) * self.smooth_factor
        pos_weight = None if self.pos_weight is None else pred.new_tensor(self.pos_weight)
        loss = F.binary_cross_entropy_with_logits(pred, target, reduction="none", pos_weight=pos_weight)
        return _masked_mean(loss, valid, pred)


@register_loss("ce", kind="segmentation")
class CrossEntropyLoss(SegmentationLoss):
    """Softmax cross-entropy for multiclass logits (``F.cross_entropy``), mean over valid pixels.

    Options: ``class_weights`` (one per class), ``label_smoothing``.
    """

    name = "ce"

    def __init__(self, mode: str = "multiclass", ignore_index: int | None = None,
                 class_weights: Sequence[float] | None = None, label_smoothing: float = 0.0):
        if mode not in ("multiclass", "auto"):
            raise ValueError(f"ce supports mode 'multiclass' only (use bce for binary), got {mode!r}")
        super().__init__("multiclass", ignore_index)
        self.class_weights = None if class_weights is None else [float(w) for w in class_weights]
        self.label_smoothing = float(label_smoothing)
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(f"ce label_smoothing must be in [0, 1), got {label_smoothing!r}")

    def compute(self, mode: str, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        weight = None
        if self.class_weights is not None:
            if len(self.class_weights) != pred.shape[1]:
                raise ValueError(f"ce class_weights has {len(self.class_weights)} entries for "
                                 f"{pred.shape[1]} classes")
            weight = pred.new_tensor(self.class_weights)
        ignore = self.ignore_index if self.ignore_index is not None else -100
        if self.ignore_index is not None and not bool((target != ignore).any()):
            return pred.sum() * 0.0
        return F.cross_entropy(pred, target, weight=weight, ignore_index=ignore, label_smoothing=self.label_smoothing)


@register_loss("dice", kind="segmentation")
class DiceLoss(_SmpLoss):
    """``1 - Dice`` on soft predictions (smp ``DiceLoss``, from logits).

    Dice is pooled over the batch per class and averaged over classes; a class with no
    target pixels in the batch contributes 0 (smp's convention). Options: ``smooth``,
    ``log_loss`` (``-log dice``), ``classes`` (subset), ``class_weights``, ``eps``.
    """

    name = "dice"

    def __init__(self, mode: str = "auto", ignore_index: int | None = None, smooth: float = 0.0,
                 log_loss: bool = False, classes: Sequence[int] | None = None,
                 class_weights: Sequence[float] | None = None, eps: float = 1e-7):
        super().__init__(mode, ignore_index, smooth=float(smooth), log_loss=bool(log_loss), classes=classes,
                         class_weights=class_weights, eps=float(eps))

    def _factory(self):
        from segmentation_models_pytorch.losses import DiceLoss as SmpDice

        return SmpDice


@register_loss("focal", kind="segmentation")
class FocalLoss(_SmpLoss):
    """Focal loss (Lin et al. 2017; smp ``FocalLoss``): ``-alpha (1 - p_t)^gamma log p_t``.

    Options: ``gamma`` (2.0), ``alpha`` (None = no class balancing), ``normalized``,
    ``reduced_threshold``, ``class_weights``. Multiclass is one-vs-rest per class.
    """

    name = "focal"

    def __init__(self, mode: str = "auto", ignore_index: int | None = None, gamma: float = 2.0,
                 alpha: float | None = None, normalized: bool = False, reduced_threshold: float | None = None,
                 class_weights: Sequence[float] | None = None):
        if not (isinstance(gamma, (int, float)) and math.isfinite(gamma) and gamma >= 0):
            raise ValueError(f"focal gamma must be a non-negative number, got {gamma!r}")
        super().__init__(mode, ignore_index, gamma=float(gamma), alpha=alpha, normalized=bool(normalized),
                         reduced_threshold=reduced_threshold, class_weights=class_weights)

    def _factory(self):
        from segmentation_models_pytorch.losses import FocalLoss as SmpFocal

        return SmpFocal


@register_loss("tversky", kind="segmentation")
class TverskyLoss(_SmpLoss):
    """Tversky loss (smp ``TverskyLoss``): ``1 - TP / (TP + alpha FP + beta FN)``, to the power ``gamma``.

    ``alpha = beta = 0.5`` is Dice; ``beta > alpha`` penalises missed foreground more.
    """

    name = "tversky"

    def __init__(self, mode: str = "auto", ignore_index: int | None = None, alpha: float = 0.5, beta: float = 0.5,
                 gamma: float = 1.0, smooth: float = 0.0, log_loss: bool = False,
                 classes: Sequence[int] | None = None, eps: float = 1e-7):
        super().__init__(mode, ignore_index, alpha=float(alpha), beta=float(beta), gamma=float(gamma),
                         smooth=float(smooth), log_loss=bool(log_loss), classes=classes, eps=float(eps))

    def _factory(self):
        from segmentation_models_pytorch.losses import TverskyLoss as SmpTversky

        return SmpTversky


@register_loss("lovasz", kind="segmentation")
class LovaszLoss(_SmpLoss):
    """Lovasz loss (Berman et al. 2018; smp ``LovaszLoss``): hinge for binary, softmax for multiclass.

    A convex surrogate of IoU. ``per_image=True`` averages per-image losses instead of
    pooling the batch. Its minimum 0 is reached when every binary logit is beyond the
    hinge margin (|logit| >= 1 with the right sign) / every softmax is one-hot.
    """

    name = "lovasz"

    def __init__(self, mode: str = "auto", ignore_index: int | None = None, per_image: bool = False):
        super().__init__(mode, ignore_index, per_image=bool(per_image))

    def _factory(self):
        from segmentation_models_pytorch.losses import LovaszLoss as SmpLovasz

        return SmpLovasz
