"""Knowledge-distillation losses: a student network scored against a teacher's outputs.

Two registered components (kind ``distillation``: ``target`` is the *teacher's* output, not the
ground truth):

* ``distill_kl`` — soft-label KL divergence at temperature T for segmentation (Hinton, Vinyals
  and Dean, "Distilling the Knowledge in a Neural Network", 2015)::

      T² · mean over pixels of KL( softmax(t / T) || softmax(s / T) )

  with ``s``/``t`` the student's/teacher's logits (B, C, H, W). The T² factor keeps the
  gradient's magnitude independent of T, as in the paper. A binary head (one logit channel) is
  the two-class case with logits ``[z, 0]`` (``sigmoid(z / T)`` against its complement).
* ``distill_output`` — output distillation for image-to-image and matting: the teacher's image
  (or alpha) is a target, scored by a registered image loss (``l1``, ``mse`` or ``charbonnier``).

:class:`TeacherStudentLoss` combines a task's ground-truth loss with one of them:
``total = L_gt(labelled crops) + λ · L_distill(every crop)``; its targets are the dicts
``{"target", "teacher", "labelled"}`` that :mod:`platform.distill.data` yields.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from platform.losses.base import fp32_forward, register_loss

OUTPUT_LOSSES = ("l1", "mse", "charbonnier")


def _two_class(logits: torch.Tensor) -> torch.Tensor:
    """A binary head's (B, 1, H, W) logit ``z`` as the two-class logits ``[z, 0]``."""
    return torch.cat([logits, torch.zeros_like(logits)], dim=1) if logits.shape[1] == 1 else logits


@register_loss("distill_kl", kind="distillation")
class SoftTargetKL(nn.Module):
    """``T² · KL(softmax(teacher / T) || softmax(student / T))``, averaged over pixels."""

    def __init__(self, temperature: float = 4.0):
        super().__init__()
        if not float(temperature) > 0:
            raise ValueError(f"distill_kl: temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)

    @fp32_forward
    def forward(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        if student.shape != teacher.shape or student.ndim != 4:
            raise ValueError(f"distill_kl: student and teacher logits must both be (B, C, H, W), got "
                             f"{tuple(student.shape)} and {tuple(teacher.shape)}")
        t = self.temperature
        log_s = F.log_softmax(_two_class(student) / t, dim=1)
        log_t = F.log_softmax(_two_class(teacher.detach()) / t, dim=1)
        per_pixel = F.kl_div(log_s, log_t, reduction="none", log_target=True).sum(dim=1)
        return per_pixel.mean() * t * t


@register_loss("distill_output", kind="distillation")
class OutputDistillation(nn.Module):
    """The teacher's output as an image target, scored by ``loss`` (l1, mse or charbonnier)."""

    def __init__(self, loss: str = "l1"):
        super().__init__()
        if loss not in OUTPUT_LOSSES:
            raise ValueError(f"distill_output: loss must be one of {', '.join(OUTPUT_LOSSES)}, got {loss!r}")
        from platform.losses.base import LOSSES

        self.name = loss
        self.inner = LOSSES.get(loss)()

    def forward(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        return self.inner(student, teacher.detach())


class TeacherStudentLoss(nn.Module):
    """``L_gt`` on the labelled crops of a batch plus ``λ · L_distill`` on all of them.

    ``forward(pred, targets)`` with ``targets = {"target": ground truth, "teacher": teacher output,
    "labelled": (B,) 1/0}`` returns ``(total, parts)`` like :class:`~platform.losses.HybridLoss`:
    the ground-truth components plus ``distill`` (unweighted, detached). A batch without a
    labelled crop has a ground-truth term of 0 (its parts read 0).
    """

    def __init__(self, base: nn.Module, distill: nn.Module, weight: float):
        super().__init__()
        self.base = base
        self.distill = distill
        self.weight = float(weight)
        self.weights: dict[str, float] = {**base.weights, "distill": self.weight}
        self.dropped: dict[str, str] = dict(getattr(base, "dropped", {}))

    def forward(self, pred: torch.Tensor, targets) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if not isinstance(targets, dict):  # a plain target (no teacher): the ground-truth loss alone
            return self.base(pred, targets)
        mask = targets["labelled"].to(pred.device) > 0.5
        d = self.distill(pred, targets["teacher"])
        if bool(mask.any()):
            gt_total, gt_parts = self.base(pred[mask], targets["target"][mask])
        else:  # keep the graph connected (every parameter gets a gradient, as DDP expects)
            gt_total = pred.sum() * 0.0
            gt_parts = {n: torch.zeros((), device=pred.device) for n in self.base.weights}
        parts = {**gt_parts, "distill": d.detach()}
        return gt_total + self.weight * d, parts
