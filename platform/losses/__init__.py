"""Loss library: registered components combined into weighted hybrid losses.

Public interface (used by the common trainer)::

    from platform.losses import LOSSES, register_loss, create, HybridLoss
    loss = create({"l1": 1.0, "lpips": 0.1, "laplacian": 0.5, "ssim": 0.2})
    loss = create(spec, allow_unavailable=True)   # drop components whose weights are missing
    loss.dropped                                  # {name: reason}
    total, parts = loss(pred, target)             # weighted scalar, {name: unweighted detached}
    loss.weights                                  # active components only

    from platform.losses import create_hierarchical   # one loss per head of a hierarchical model
    h = create_hierarchical({"binary": 0.2, "coarse": 0.3, "fine": 0.5}, base={"dice": 1.0})
    total, parts = h({"binary": b, "coarse": c, "fine": f}, {"binary": tb, ...})

Image components (pred/target in [-1, 1]): l1, mse, charbonnier, psnr, ssim, ms_ssim,
laplacian, sobel, fft, lpips, vgg. Segmentation components (logits vs labels): bce,
ce, dice, focal, tversky, lovasz. Distillation components (student vs teacher outputs,
platform.losses.distill): distill_kl, distill_output. Presets: ``create("background_removal")``,
``create("vfx_hybrid")``. See docs/losses-and-metrics.md.
"""

from __future__ import annotations

from platform.losses import (
    distill as _distill,  # noqa: F401  (registers distill_kl, distill_output)
    image as _image,  # noqa: F401  (registers components)
    perceptual as _perceptual,  # noqa: F401
    segmentation as _segmentation,  # noqa: F401
)
from platform.losses.base import LOSSES, register_loss
from platform.losses.hybrid import (
    DEFAULT_LEVEL_WEIGHTS,
    PRESETS,
    HierarchicalLoss,
    HybridLoss,
    create,
    create_hierarchical,
)

__all__ = [
    "DEFAULT_LEVEL_WEIGHTS",
    "LOSSES",
    "PRESETS",
    "HierarchicalLoss",
    "HybridLoss",
    "create",
    "create_hierarchical",
    "register_loss",
]
