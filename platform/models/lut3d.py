"""Learnable 3D lookup tables (after Zeng et al., "Learning Image-adaptive 3D Lookup Tables for
High Performance Photo Enhancement in Real-time", TPAMI 2020), optionally with a small CNN
residual for local effects.

A colour grade is, to first order, a map from one RGB colour to another: a 3D LUT applied with
trilinear interpolation expresses any such map, trains in seconds on a CPU and exports to a
``.cube`` file that Nuke, DaVinci Resolve and OpenColorIO read (``python -m platform.export
--format cube``). Three variants, all starting as the exact identity:

* ``lut``: one LUT (``lut_size``³ nodes per output channel);
* ``adaptive``: ``basis`` LUTs blended per image by a tiny CNN that looks at a 64x64 thumbnail
  (Zeng et al.'s image-adaptive LUT; the first basis starts as the identity, the others at 0);
* ``local`` / ``local_large``: one LUT plus a two-level U-Net residual (width 16 / 32) that sees
  the input and the LUT's output and adds local effects the LUT cannot (grain removal, local
  contrast); its last convolution starts at zero. ``local_tiny`` / ``local_small`` (width 4 / 8)
  are narrower students;
* ``local_fast`` / ``local_fast_small``: the same residual (width 16 / 8) run at half resolution on
  the 2x2 space-to-depth rearrangement of its inputs (``PixelUnshuffle``: lossless, 24 channels),
  its 12 output channels put back by ``PixelShuffle`` (as ESPCN and NAFNet's up-sampling do):
  nothing convolves at full resolution, about 5x / 10x faster than ``local`` on a 1080p CPU frame
  (thin full-resolution convolutions are memory-bound: ``local_tiny`` is only 3.6x faster), the
  distillation students of a ``local`` champion.

By default (``init: fit``) the trainer starts the LUT at the least-squares LUT of the training
pairs (the global grade is a linear problem in the LUT's nodes: solved, not learnt), so training
spends its steps on what least squares cannot do; ``init: identity`` starts from the identity.

The LUT is stored as the identity plus a learned offset, so weight decay pulls colours that the
training frames never visit back towards "unchanged" rather than towards grey. Written here:
neither timm nor segmentation_models_pytorch ship a learnable LUT, and Zeng et al.'s CUDA
extension is not packaged; ``torch.nn.functional.grid_sample`` on a 5-D volume is the same
trilinear interpolation, on every device, with gradients for the nodes.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from platform.errors import ConfigError
from platform.models._registry import register_model
from platform.models._utils import check_channels, identity_start, no_pretrained, pad_to_multiple

FIT_SIZE, FIT_SMOOTHNESS = 17, 1e-2  # the least-squares start: the 3D LUT floor's size and penalty

LUT3D_SIZES = {
    "lut": dict(basis=0, residual_width=0),
    "adaptive": dict(basis=3, residual_width=0),
    "local_tiny": dict(basis=0, residual_width=4),   # students of a distillation (platform.distill)
    "local_small": dict(basis=0, residual_width=8),
    "local": dict(basis=0, residual_width=16),
    "local_large": dict(basis=0, residual_width=32),
    "local_fast": dict(basis=0, residual_width=16, residual_stride=2),
    "local_fast_small": dict(basis=0, residual_width=8, residual_stride=2),
}


def identity_lut(size: int) -> torch.Tensor:
    """(3, S, S, S) nodes indexed ``[channel, b, g, r]`` in the model range [-1, 1]: output = input."""
    c = torch.linspace(-1.0, 1.0, size)
    b, g, r = torch.meshgrid(c, c, c, indexing="ij")
    return torch.stack([r, g, b])


def apply_lut(lut: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Trilinear lookup of NCHW images in [-1, 1] through ``lut`` ((3, S, S, S) or (N, 3, S, S, S))."""
    n = x.shape[0]
    volume = lut.expand(n, *lut.shape) if lut.dim() == 4 else lut
    grid = x.permute(0, 2, 3, 1)[:, None].to(volume.dtype)  # (N, 1, H, W, 3): (r, g, b) -> (W, H, D)
    out = F.grid_sample(volume, grid, mode="bilinear", padding_mode="border", align_corners=True)
    return out[:, :, 0].to(x.dtype)


def trilinear_design(x: np.ndarray, size: int):
    """Sparse (N, S³) matrix of trilinear weights of colours ``x`` (N, 3) in [0, 1] on the node grid
    indexed ``b * S² + g * S + r`` (the layout of :func:`platform.models.lut3d.identity_lut`)."""
    from scipy import sparse

    pos = np.clip(x, 0, 1) * (size - 1)
    lo = np.minimum(np.floor(pos).astype(np.int64), size - 2)
    frac = pos - lo
    rows, cols, vals = [], [], []
    n = np.arange(len(x))
    for dr in (0, 1):
        for dg in (0, 1):
            for db in (0, 1):
                w = (np.where(dr, frac[:, 0], 1 - frac[:, 0]) * np.where(dg, frac[:, 1], 1 - frac[:, 1])
                     * np.where(db, frac[:, 2], 1 - frac[:, 2]))
                idx = (lo[:, 2] + db) * size * size + (lo[:, 1] + dg) * size + (lo[:, 0] + dr)
                rows.append(n), cols.append(idx), vals.append(w)
    return sparse.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                             shape=(len(x), size ** 3))


def second_differences(size: int):
    """Sparse operator of the second differences along r, g and b of a node grid (zero on linear maps)."""
    from scipy import sparse

    d1 = sparse.diags([np.ones(size - 2), -2 * np.ones(size - 2), np.ones(size - 2)], [0, 1, 2],
                      shape=(size - 2, size))
    eye = sparse.identity(size)
    return sparse.vstack([sparse.kron(sparse.kron(eye, eye), d1),   # along r (fastest)
                          sparse.kron(sparse.kron(eye, d1), eye),   # along g
                          sparse.kron(sparse.kron(d1, eye), eye)]).tocsr()  # along b


def least_squares_nodes(x: np.ndarray, y: np.ndarray, size: int, smoothness: float) -> np.ndarray:
    """(3, S³) node values in [0, 1] minimising the squared error of the trilinear lookup of colours
    ``x`` (N, 3) against ``y`` plus ``smoothness`` x the mean data weight per node x the squared
    second differences (zero on linear maps: unvisited colours are extrapolated linearly)."""
    from scipy import sparse
    from scipy.sparse.linalg import splu

    a = trilinear_design(x, size)
    d = second_differences(size)
    lam = smoothness * len(x) / size ** 3
    m = (a.T @ a + lam * (d.T @ d) + 1e-9 * len(x) * sparse.identity(size ** 3, format="csr")).tocsc()
    # One factorisation for the three channels, with a fill-reducing ordering for a symmetric matrix
    # (3x faster than a solve per channel: it runs before every trial of a time-boxed search).
    return splu(m, permc_spec="MMD_AT_PLUS_A").solve(np.asarray(a.T @ y[:, :3], dtype=np.float64)).T


class _Thumbnail(nn.Module):
    """Zeng et al.'s weight predictor, scaled down: a 64x64 thumbnail -> ``basis`` blend weights."""

    def __init__(self, basis: int, width: int = 16):
        super().__init__()
        layers, ch = [], 3
        for out in (width, 2 * width, 4 * width, 4 * width):
            layers += [nn.Conv2d(ch, out, 3, stride=2, padding=1), nn.LeakyReLU(0.2), nn.InstanceNorm2d(out, affine=True)]
            ch = out
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(ch, basis)
        identity_start(self.head)
        with torch.no_grad():
            self.head.bias[0] = 1.0  # weights (1, 0, ...): the identity basis alone

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(F.interpolate(x, size=(64, 64), mode="bilinear", align_corners=False)))


def _block(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1), nn.GELU(),
                         nn.Conv2d(cout, cout, 3, padding=1), nn.GELU())


class _LocalResidual(nn.Module):
    """A two-level U-Net on [input, LUT(input)] whose zeroed last convolution starts it at 0;
    ``stride`` 2: at half resolution on the space-to-depth rearrangement of its inputs."""

    def __init__(self, width: int, stride: int = 1):
        super().__init__()
        if stride not in (1, 2):
            raise ConfigError(f"lut3d: residual_stride must be 1 (full resolution) or 2 (half), got {stride}.")
        self.stride = stride
        self.enc1 = _block(6 * stride * stride, width)
        self.enc2 = _block(width, 2 * width, stride=2)
        self.mid = _block(2 * width, 4 * width, stride=2)
        self.up2 = nn.Sequential(nn.Conv2d(4 * width, 8 * width, 1), nn.PixelShuffle(2))
        self.dec2 = _block(4 * width, 2 * width)
        self.up1 = nn.Sequential(nn.Conv2d(2 * width, 4 * width, 1), nn.PixelShuffle(2))
        self.dec1 = _block(2 * width, width)
        head = nn.Conv2d(width, 3 * stride * stride, 3, padding=1)
        identity_start(head)
        # A Sequential with the PixelShuffle: platform.compress.prune keeps such a conv's channels whole.
        self.out = head if stride == 1 else nn.Sequential(head, nn.PixelShuffle(stride))

    def forward(self, x: torch.Tensor, graded: torch.Tensor) -> torch.Tensor:
        z = torch.cat([x, graded], dim=1)
        e1 = self.enc1(z if self.stride == 1 else F.pixel_unshuffle(z, self.stride))
        e2 = self.enc2(e1)
        y = self.dec2(torch.cat([self.up2(self.mid(e2)), e2], dim=1))
        y = self.dec1(torch.cat([self.up1(y), e1], dim=1))
        return self.out(y)


class LUT3D(nn.Module):
    """A learnable 3D LUT (optionally image-adaptive, optionally with a local CNN residual)."""

    def __init__(self, lut_size: int = 33, basis: int = 0, residual_width: int = 0, init: str = "identity",
                 lut_lr: float = 1.0, residual_stride: int = 1):
        super().__init__()
        if not 0 <= lut_lr <= 10:
            raise ConfigError(f"lut3d: lut_lr (the LUT nodes' learning-rate factor) must be in 0..10, got {lut_lr}.")
        self.lut_lr = float(lut_lr)
        if init not in ("identity", "fit"):
            raise ConfigError(f"lut3d: init must be 'identity' or 'fit' (least squares on the training pairs), got {init!r}.")
        self.init = init
        if not 2 <= lut_size <= 65:
            raise ConfigError(f"lut3d: lut_size must be in 2..65 (17 and 33 are the usual sizes), got {lut_size}.")
        if basis == 1 or basis < 0:
            raise ConfigError(f"lut3d: basis must be 0 (one LUT) or >= 2 (image-adaptive blend), got {basis}.")
        self.lut_size, self.basis, self.residual_width = int(lut_size), int(basis), int(residual_width)
        self.register_buffer("identity", identity_lut(lut_size), persistent=False)
        # (K * 3, S, S, S): 4-D, so that ``model.to(memory_format=torch.channels_last)`` (the trainer's
        # default on CUDA) accepts it; viewed as (K, 3, S, S, S) LUTs where they are used.
        self.offset = nn.Parameter(torch.zeros(3 * max(1, basis), lut_size, lut_size, lut_size))
        self.weights = _Thumbnail(basis) if basis else None
        self.local = _LocalResidual(residual_width, int(residual_stride)) if residual_width else None
        self.size_multiple = 4 * int(residual_stride) if residual_width else 1

    def lr_factors(self) -> dict[str, float]:
        """The trainer's learning-rate factor for the LUT nodes (``lut_lr``; the rest train at 1)."""
        return {"offset": self.lut_lr}

    @property
    def is_pure_lut(self) -> bool:
        """One fixed colour map, nothing image-dependent: exportable as a ``.cube`` file."""
        return self.weights is None and self.local is None

    def table(self) -> torch.Tensor:
        """The (3, S, S, S) LUT of a pure-LUT model, in the model range [-1, 1]."""
        return self.identity + self.offset[:3]

    def graded(self, x: torch.Tensor) -> torch.Tensor:
        if self.weights is None:
            return apply_lut(self.table(), x)
        w = self.weights(x)  # (N, K)
        basis = self.offset.reshape(self.basis, 3, *self.offset.shape[1:]).clone()
        basis[0] = basis[0] + self.identity
        return apply_lut(torch.einsum("nk,kcdhw->ncdhw", w, basis), x)

    def init_from_pairs(self, inputs: np.ndarray, targets: np.ndarray) -> None:
        """Start the (first) LUT at the least-squares LUT of training colour pairs ((N, 3) in [0, 1]):
        the global grade is a linear problem, solved exactly in a second instead of learnt by SGD
        (fitted at 17³, the floor's size, and resampled to this LUT's size)."""
        if self.init != "fit":
            return
        s = FIT_SIZE
        fitted = torch.as_tensor(least_squares_nodes(inputs, targets, s, FIT_SMOOTHNESS) * 2 - 1, dtype=torch.float32)
        with torch.no_grad():
            coords = self.identity.reshape(1, 3, -1, 1)  # this LUT's node coordinates in [-1, 1]
            table = apply_lut(fitted.reshape(3, s, s, s), coords).reshape(3, *self.identity.shape[1:])
            self.offset[:3] = table - self.identity

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.graded(x)
        if self.local is None:
            return y
        h, w = x.shape[-2:]
        xp, yp = pad_to_multiple(x, self.size_multiple), pad_to_multiple(y, self.size_multiple)
        return y + self.local(xp, yp)[:, :, :h, :w]


def cube_text(model: LUT3D, title: str = "platform lut3d") -> str:
    """The model's LUT as an Adobe/Resolve ``.cube`` file (domain [0, 1], red varying fastest).

    Node values are written unclamped (a grade may push colours past [0, 1]); hosts clamp on
    display, as the platform's predictions do.
    """
    if not isinstance(model, LUT3D) or not model.is_pure_lut:
        kind = type(model).__name__ if not isinstance(model, LUT3D) else "an image-adaptive or local-residual lut3d"
        raise ConfigError(f"only a pure lut3d model (size 'lut') is one fixed colour map that a .cube file can hold; "
                          f"this model is {kind}. Export it as ONNX instead (--format onnx).")
    with torch.no_grad():
        nodes = ((model.table().float().cpu() + 1.0) / 2.0).permute(1, 2, 3, 0).reshape(-1, 3).numpy()
    s = model.lut_size
    lines = [f'TITLE "{title}"', f"LUT_3D_SIZE {s}", "DOMAIN_MIN 0.0 0.0 0.0", "DOMAIN_MAX 1.0 1.0 1.0"]
    lines += [f"{r:.7f} {g:.7f} {b:.7f}" for r, g, b in np.asarray(nodes, dtype=np.float64)]
    return "\n".join(lines) + "\n"


@register_model(
    "lut3d", kind="img2img", sizes=tuple(LUT3D_SIZES), default_size="local",
    paper="Learning Image-adaptive 3D Lookup Tables (Zeng et al., TPAMI 2020)",
    nominal_params={"lut": 108e3, "adaptive": 384e3, "local_tiny": 116e3, "local_small": 138e3, "local": 226e3,
                    "local_large": 576e3, "local_fast": 230e3, "local_fast_small": 140e3},
)
def lut3d(size: str = "local", in_channels: int = 3, out_channels: int = 3, pretrained: bool = False,
          lut_size: int = 33, basis: int | None = None, residual_width: int | None = None,
          init: str = "fit", lut_lr: float | None = None, residual_stride: int | None = None) -> LUT3D:
    """A learnable LUT; ``basis``, ``residual_width`` and ``residual_stride`` override the size's values. ``init: fit``
    (default) starts the LUT at the least-squares LUT of the training pairs (the trainer calls
    :meth:`LUT3D.init_from_pairs`), ``identity`` at the identity.

    ``lut_lr`` multiplies the learning rate of the LUT nodes (default 0.1 with ``init: fit``, 1 with
    ``identity``; 0 freezes the LUT). A fitted LUT is already the best global grade: at the full
    rate, Adam's per-node steps (as large for a node that two pixels visit as for a busy one) shake
    it while the residual learns; on the bundled ``vfx_grade`` set 0.1 gives +0.3 to +0.5 dB on
    unseen frames after 1000-2000 steps, 0 (frozen) less (docs/quality.md)."""
    check_channels("lut3d", in_channels=in_channels, out_channels=out_channels)
    no_pretrained("lut3d", pretrained)
    if in_channels != 3 or out_channels != 3:
        raise ConfigError(f"lut3d maps RGB to RGB; got in_channels={in_channels}, out_channels={out_channels}. "
                          "Use another architecture for other channel counts (task.alpha: drop for RGBA data).")
    cfg = dict(LUT3D_SIZES[size])
    if basis is not None:
        cfg["basis"] = int(basis)
    if residual_width is not None:
        cfg["residual_width"] = int(residual_width)
    if residual_stride is not None:
        cfg["residual_stride"] = int(residual_stride)
    if lut_lr is None:
        lut_lr = 0.1 if init == "fit" else 1.0
    return LUT3D(int(lut_size), init=init, lut_lr=float(lut_lr), **cfg)
