"""Perceptual losses: LPIPS and VGG feature distances, with trunks from the pretrained store.

Trunk weights are torchvision's ImageNet checkpoints, looked up in the project's store
(``platform.pretrained.resolve``) under these keys, never downloaded:

=========  ====================================  ==========================
trunk      store key                             used by
=========  ====================================  ==========================
AlexNet    torchvision/alexnet-owt-7be5be79.pth  ``lpips`` (net="alex")
VGG16      torchvision/vgg16-397923af.pth        ``lpips`` (net="vgg"), ``vgg``
VGG19      torchvision/vgg19-dcbb9e9d.pth        ``vgg`` (net="vgg19")
=========  ====================================  ==========================

A missing or unreadable file raises :class:`platform.pretrained.WeightsUnavailableError`
naming the file and where to put it (``create(..., allow_unavailable=True)`` drops the
component instead). Only the ``features.*`` tensors are read, so a checkpoint stripped
of its classifier also works.

LPIPS (Zhang et al. 2018) uses the ``lpips`` package: the model is built with
``pnet_rand=True`` (no download), the trunk state dict is loaded from the store, and
the v0.1 linear calibration layers shipped inside the package
(``lpips/weights/v0.1/{alex,vgg}.pth``) are loaded and checked. A random trunk is never
used as if it were LPIPS.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from platform.errors import ConfigError
from platform.losses.base import check_same_shape, register_loss
from platform.pretrained import WeightsUnavailableError, resolve

log = logging.getLogger(__name__)

TORCHVISION_FILES = {
    "alexnet": "alexnet-owt-7be5be79.pth",
    "vgg16": "vgg16-397923af.pth",
    "vgg19": "vgg19-dcbb9e9d.pth",
}
_LPIPS_TRUNKS = {"alex": "alexnet", "vgg": "vgg16"}


def trunk_key(arch: str) -> str:
    """Store key of a torchvision trunk, e.g. ``torchvision/alexnet-owt-7be5be79.pth``."""
    return f"torchvision/{TORCHVISION_FILES[arch]}"


def load_trunk_features(arch: str) -> tuple[dict[str, torch.Tensor], Path]:
    """``features.*`` tensors of a torchvision checkpoint from the store (prefix stripped)."""
    filename = TORCHVISION_FILES[arch]
    path = resolve(trunk_key(arch))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt/truncated file, pickle with code, ...
        raise WeightsUnavailableError(
            f"{path} could not be read as a PyTorch state dict ({exc}); replace it with torchvision's "
            f"{filename} (https://download.pytorch.org/models/{filename})."
        ) from exc
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    features = {}
    if isinstance(state, dict):
        features = {k[len("features."):]: v for k, v in state.items()
                    if isinstance(k, str) and k.startswith("features.") and isinstance(v, torch.Tensor)}
    if not features:
        raise WeightsUnavailableError(
            f"{path} has no 'features.*' tensors, so it is not torchvision's {arch} checkpoint; replace it "
            f"with {filename} (https://download.pytorch.org/models/{filename})."
        )
    return features, path


def _load_checked(module: nn.Module, state: dict[str, torch.Tensor], path: Path, arch: str) -> None:
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise WeightsUnavailableError(
            f"{path} does not fit torchvision's {arch} ({str(exc).splitlines()[0]}...); replace it with "
            f"{TORCHVISION_FILES[arch]} (https://download.pytorch.org/models/{TORCHVISION_FILES[arch]})."
        ) from exc


def lpips_linear_weights_path(net: str) -> Path:
    """The v0.1 linear-layer file shipped inside the ``lpips`` package."""
    import lpips as lpips_pkg

    return Path(lpips_pkg.__file__).resolve().parent / "weights" / "v0.1" / f"{net}.pth"


def build_lpips(net: str = "alex") -> nn.Module:
    """An ``lpips.LPIPS`` model with the store's trunk and the package's v0.1 linear layers.

    Frozen and in eval mode. The trunk file is checked first, so a missing file fails
    before anything is built. ``model.trunk_path`` records the file that was loaded.
    """
    if net not in _LPIPS_TRUNKS:
        raise ConfigError(f"lpips net must be one of {sorted(_LPIPS_TRUNKS)}, got {net!r}")
    arch = _LPIPS_TRUNKS[net]
    features, path = load_trunk_features(arch)

    import lpips as lpips_pkg

    with warnings.catch_warnings(), torch.device("meta"):
        # lpips builds its trunk with torchvision's deprecated ``pretrained=False``. On the
        # meta device nothing is allocated or randomly initialised (the full VGG16 with its
        # classifier takes seconds to initialise); every tensor is loaded below and
        # checked, so no uninitialised value can survive.
        warnings.filterwarnings("ignore", category=UserWarning, module=r"torchvision\..*")
        model = lpips_pkg.LPIPS(net=net, pretrained=False, pnet_rand=True, verbose=False)
    model = model.to_empty(device="cpu")
    model.scaling_layer = lpips_pkg.lpips.ScalingLayer()  # its constant shift/scale buffers

    lin_path = lpips_linear_weights_path(net)
    lin_state = torch.load(lin_path, map_location="cpu", weights_only=True)
    result = model.load_state_dict(lin_state, strict=False)
    not_loaded = [k for k in lin_state if k in result.missing_keys]
    if result.unexpected_keys or not_loaded or not lin_state:
        raise RuntimeError(f"the lpips package's linear layers {lin_path} do not fit lpips.LPIPS(net={net!r}): "
                           f"unexpected {result.unexpected_keys}, not loaded {not_loaded}")

    # lpips slices torchvision's ``features`` into ``sliceK`` blocks keeping the layer
    # indices as module names, so ``sliceK.I.weight`` is ``features.I.weight``.
    trunk_state = {}
    for name in model.net.state_dict():
        _, index, param = name.split(".", 2)
        source = f"{index}.{param}"
        if source not in features:
            raise WeightsUnavailableError(
                f"{path} lacks features.{source}, so it is not torchvision's {arch} checkpoint; replace it "
                f"with {TORCHVISION_FILES[arch]}."
            )
        trunk_state[name] = features[source]
    _load_checked(model.net, trunk_state, path, arch)

    # Every tensor must come from a file (or the scaling constants): ``lins.K`` are
    # aliases of ``linK``, the trunk was loaded strictly above.
    unloaded = [k for k in model.state_dict()
                if not k.startswith(("net.", "scaling_layer.", "lins.")) and k not in lin_state]
    if unloaded:
        raise RuntimeError(f"LPIPS({net}) tensors not loaded from any file: {unloaded}")

    model.requires_grad_(False)
    model.eval()
    model.trunk_path = path
    log.debug("LPIPS(%s): trunk %s, linear layers %s", net, path, lin_path)
    return model


def _to_rgb(x: torch.Tensor, name: str) -> torch.Tensor:
    if x.shape[1] == 1:
        return x.expand(-1, 3, -1, -1)
    if x.shape[1] != 3:
        raise ValueError(f"loss {name!r} needs 1- or 3-channel images, got {x.shape[1]} channels")
    return x


class _FrozenNet(nn.Module):
    """Keeps its pretrained sub-network in eval mode whatever ``.train()`` says."""

    def train(self, mode: bool = True) -> _FrozenNet:
        super().train(mode)
        for module in self.children():
            module.eval()
        return self


@register_loss("lpips", kind="image", pretrained=True)
class LPIPSLoss(_FrozenNet):
    """LPIPS distance (``net="alex"`` default, or ``"vgg"``), batch mean.

    Inputs in [-1, 1], LPIPS's own convention, so nothing is rescaled; one-channel
    images are repeated to RGB. The network stays frozen and in eval mode (its
    dropout would otherwise be active in training mode).
    """

    def __init__(self, net: str = "alex"):
        super().__init__()
        self.net_name = net
        self.model = build_lpips(net)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        check_same_shape(pred, target, "lpips")
        return self.model(_to_rgb(pred, "lpips"), _to_rgb(target, "lpips")).float().mean()


# torchvision's VGG ``features`` layouts (configurations "D" and "E", no batch norm).
_VGG_CFGS = {
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
              512, 512, 512, 512, "M"],
}
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def vgg_layer_names(net: str) -> list[str]:
    """Names of the ``features`` modules in order: conv1_1, relu1_1, ..., pool5."""
    names, block, conv = [], 1, 0
    for item in _VGG_CFGS[net]:
        if item == "M":
            names.append(f"pool{block}")
            block, conv = block + 1, 0
        else:
            conv += 1
            names += [f"conv{block}_{conv}", f"relu{block}_{conv}"]
    return names


def _vgg_features(net: str, depth: int) -> nn.Sequential:
    """The first ``depth`` modules of torchvision's VGG ``features`` (same indices)."""
    layers: list[nn.Module] = []
    channels = 3
    for item in _VGG_CFGS[net]:
        if item == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            # inplace=False: a requested conv output must not be overwritten by its ReLU.
            layers += [nn.Conv2d(channels, item, kernel_size=3, padding=1), nn.ReLU(inplace=False)]
            channels = item
    return nn.Sequential(*layers[:depth])


@register_loss("vgg", kind="image", pretrained=True)
class VGGPerceptualLoss(_FrozenNet):
    """Perceptual loss on ImageNet VGG features (Johnson et al. 2016).

    ``layers``: feature names such as ``relu1_2, relu2_2, relu3_3, relu4_3`` (default)
    or pre-activation ``conv5_4`` (vgg19, ESRGAN style); see :func:`vgg_layer_names`.
    ``criterion``: "l1" (default) or "mse" between feature maps, per layer; the value is
    the weighted mean over layers with ``layer_weights`` (default equal). ``net``:
    "vgg16" (default, the same file as LPIPS-VGG) or "vgg19".

    Inputs in [-1, 1] are rescaled to [0, 1] and normalised with the ImageNet mean/std
    (what the trunk was trained on); one-channel images are repeated to RGB. Only the
    layers up to the deepest requested one are built and run.
    """

    def __init__(
        self,
        layers: Sequence[str] = ("relu1_2", "relu2_2", "relu3_3", "relu4_3"),
        net: str = "vgg16",
        criterion: str = "l1",
        layer_weights: Sequence[float] | None = None,
    ):
        super().__init__()
        if net not in _VGG_CFGS:
            raise ConfigError(f"loss 'vgg': net must be one of {sorted(_VGG_CFGS)}, got {net!r}")
        if criterion not in ("l1", "mse"):
            raise ConfigError(f"loss 'vgg': criterion must be 'l1' or 'mse', got {criterion!r}")
        if isinstance(layers, str):
            layers = [layers]
        names = vgg_layer_names(net)
        unknown = [name for name in layers if name not in names]
        if not layers or unknown:
            raise ConfigError(f"loss 'vgg': unknown layer(s) {unknown or layers!r} for {net}; valid names: "
                              f"{', '.join(names)}")
        if layer_weights is None:
            layer_weights = [1.0] * len(layers)
        layer_weights = [float(w) for w in layer_weights]
        if len(layer_weights) != len(layers) or any(not math.isfinite(w) or w < 0 for w in layer_weights) \
                or sum(layer_weights) <= 0:
            raise ConfigError(f"loss 'vgg': layer_weights must give one non-negative number per layer "
                              f"({len(layers)}), not all zero; got {layer_weights!r}")
        self.layers = list(layers)
        self.layer_weights = layer_weights
        self.criterion = criterion
        self.net_name = net
        self._index = {name: names.index(name) for name in self.layers}
        depth = max(self._index.values()) + 1

        state, path = load_trunk_features(net)
        self.features = _vgg_features(net, depth)
        wanted = {k: v for k, v in state.items() if int(k.split(".", 1)[0]) < depth}
        _load_checked(self.features, wanted, path, net)
        self.features.requires_grad_(False)
        self.features.eval()
        self.trunk_path = path
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def _features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = ((x + 1) / 2 - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        wanted = {index: name for name, index in self._index.items()}
        out = {}
        for index, module in enumerate(self.features):
            x = module(x)
            if index in wanted:
                out[wanted[index]] = x
        return out

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        check_same_shape(pred, target, "vgg")
        both = self._features(torch.cat([_to_rgb(pred, "vgg"), _to_rgb(target, "vgg")], dim=0))
        dist = F.l1_loss if self.criterion == "l1" else F.mse_loss
        total = 0.0
        for name, weight in zip(self.layers, self.layer_weights):
            feat_p, feat_t = both[name].float().chunk(2, dim=0)
            total = total + weight * dist(feat_p, feat_t)
        return total / sum(self.layer_weights)
