"""Segmentation models from segmentation_models_pytorch (smp) with timm encoders.

Registered names (``size`` picks the encoder):

* ``seg_unet`` / ``seg_upernet``: ``smp.Unet`` / ``smp.UPerNet`` on a ``tu-`` (timm universal)
  encoder -- a fair encoder benchmark: same decoder and loss, only the encoder changes;
* ``hierarchical_upernet``: multi-task model, one shared encoder + smp's UPerNet
  decoder + three heads, returns ``{"binary": (B,2,H,W), "coarse": (B,4,H,W), "fine": (B,16,H,W)}``;
* ``resnet50_unet``: ``smp.Unet`` on timm's ResNet-50, binary (1 logit channel by default);
* ``seg_fpn_lite``: a small, fast student for distillation: ``smp.FPN`` (Kirillov et al. 2019) on a
  light timm encoder (``mobilenetv3_small``: MobileNetV3-Small 1.0, ~1.1 M parameters; ``resnet18``:
  ~11 M) with narrow decoder channels (pyramid 64, segmentation 32). The FPN decodes at 1/4 scale
  and upsamples its logits bilinearly, so no convolution runs at full resolution: a 1080p frame
  costs a fraction of a full-resolution U-Net decoder's.

All return logits at the input size. Input sizes the encoders accept (checked with timm 1.0):

=============  ==============================  =========================================
size           timm encoder                    accepted input H, W
=============  ==============================  =========================================
convnext_tiny  convnext_tiny                   any multiple of 32 (smp's stride check)
swin_tiny      swin_tiny_patch4_window7_224    any multiple of 32 (``dynamic_img_size``)
coatnet_0      coatnet_0_rw_224                exactly ``img_size`` (default 256): the
                                               full-attention stages have fixed position tables
maxvit_tiny    maxvit_tiny_tf_224              multiples of ``img_size`` (default 256; window =
                                               grid = img_size / 32 at every stage)
resnet50       resnet50                        any multiple of 32
=============  ==============================  =========================================

Inputs are reflect-padded up to the next accepted size and the logits cropped back, so any
H, W up to the fixed size works; a CoAtNet input larger than ``img_size`` raises a
:class:`ConfigError` (create the model with ``img_size`` = your crop size).
``size_multiple`` is 32, or ``img_size`` for CoAtNet/MaxViT.

``pretrained=True`` loads ``timm/<timm_name>.pth`` (a plain timm state dict) from the
platform weight store via :func:`platform.pretrained.resolve`; ``pretrained=False`` never
touches the network.
"""

from __future__ import annotations

from typing import Any

import segmentation_models_pytorch as smp
import torch
from segmentation_models_pytorch.base.heads import SegmentationHead
from segmentation_models_pytorch.decoders.upernet.decoder import UPerNetDecoder
from segmentation_models_pytorch.encoders import get_encoder
from torch import nn

from platform.errors import ConfigError
from platform.models._registry import register_model
from platform.models._utils import check_channels, pad_to_multiple, timm_pretrained_kwargs

ENCODERS: dict[str, dict[str, Any]] = {
    "convnext_tiny": dict(timm="convnext_tiny", rule="multiple32"),
    "swin_tiny": dict(timm="swin_tiny_patch4_window7_224", rule="multiple32", kwargs={"dynamic_img_size": True}),
    "coatnet_0": dict(timm="coatnet_0_rw_224", rule="exact"),
    "maxvit_tiny": dict(timm="maxvit_tiny_tf_224", rule="multiple_img_size"),
}
RESNET50 = dict(timm="resnet50", rule="multiple32")
DEFAULT_IMG_SIZE = 256


def _encoder_kwargs(spec: dict[str, Any], pretrained: bool, img_size: int | None, model: str) -> tuple[dict[str, Any], int, int | None]:
    """smp ``encoder_weights`` + timm kwargs, the size multiple and the fixed size (if any)."""
    kwargs: dict[str, Any] = dict(spec.get("kwargs", {}))
    fixed = None
    multiple = 32
    if spec["rule"] in ("exact", "multiple_img_size"):
        img_size = DEFAULT_IMG_SIZE if img_size is None else img_size
        if not isinstance(img_size, int) or img_size < 32 or img_size % 32:
            raise ConfigError(
                f"model {model!r}: img_size must be a positive multiple of 32 for {spec['timm']}, got {img_size!r}."
            )
        kwargs["img_size"] = img_size
        multiple = img_size
        fixed = img_size if spec["rule"] == "exact" else None
    elif img_size is not None:
        raise ConfigError(
            f"model {model!r}: img_size only applies to the coatnet_0 and maxvit_tiny encoders "
            f"({spec['timm']} accepts any multiple of 32)."
        )
    if pretrained:
        kwargs.update(timm_pretrained_kwargs(spec["timm"]))
        kwargs.pop("pretrained")
        weights: Any = True
    else:
        weights = None
    return {"encoder_weights": weights, **kwargs}, multiple, fixed


class PaddedSegmentation(nn.Module):
    """Pad the input to an accepted size, run ``net`` and crop its logits (tensor or dict)."""

    def __init__(self, net: nn.Module, size_multiple: int, fixed_size: int | None, name: str):
        super().__init__()
        self.net = net
        self.size_multiple = int(size_multiple)
        self.fixed_size = fixed_size
        self._name = name

    def forward(self, x: torch.Tensor) -> torch.Tensor | dict[str, torch.Tensor]:
        h, w = x.shape[-2:]
        if self.fixed_size is not None and (h > self.fixed_size or w > self.fixed_size):
            raise ConfigError(
                f"model {self._name!r}: this encoder accepts exactly {self.fixed_size}x{self.fixed_size} inputs "
                f"(smaller ones are padded), got {h}x{w}. Create it with img_size={max(h, w) + (-max(h, w)) % 32} "
                "or use smaller crops."
            )
        xp = pad_to_multiple(x, self.size_multiple, mode="reflect")
        out = self.net(xp)
        if isinstance(out, dict):
            return {k: v[:, :, :h, :w] for k, v in out.items()}
        return out[:, :, :h, :w]


class HierarchicalUPerNet(nn.Module):
    """Shared encoder + UPerNet decoder (PSP + FPN) + binary/coarse/fine heads."""

    def __init__(self, encoder_name: str, in_channels: int, head_classes: dict[str, int],
                 decoder_channels: int = 256, **encoder_kwargs: Any):
        super().__init__()
        weights = encoder_kwargs.pop("encoder_weights", None)
        self.encoder = get_encoder(encoder_name, in_channels=in_channels, depth=5, weights=weights, **encoder_kwargs)
        self.decoder = UPerNetDecoder(encoder_channels=self.encoder.out_channels, encoder_depth=5,
                                      decoder_channels=decoder_channels)
        self.heads = nn.ModuleDict({
            name: SegmentationHead(decoder_channels, n, kernel_size=1, upsampling=4) for name, n in head_classes.items()
        })

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.decoder(self.encoder(x))
        return {name: head(features) for name, head in self.heads.items()}


def _check_seg(model: str, in_channels: int, classes: int) -> None:
    check_channels(model, in_channels=in_channels, classes=classes)


SEG_SIZES = tuple(ENCODERS)


@register_model(
    "seg_unet", kind="segmentation", sizes=SEG_SIZES, default_size="convnext_tiny",
    paper="U-Net decoder (smp) on timm encoders", encoders={k: v["timm"] for k, v in ENCODERS.items()},
    # Expected parameter counts (tests allow +-15%): the counts this set-up was designed with for ConvNeXt, Swin and
    # CoAtNet; MaxViT's measured here.
    nominal_params={"convnext_tiny": 33.1e6, "swin_tiny": 32.8e6, "coatnet_0": 30.8e6, "maxvit_tiny": 33.3e6},
)
def seg_unet(size: str = "convnext_tiny", in_channels: int = 3, classes: int = 16, pretrained: bool = False,
             img_size: int | None = None) -> PaddedSegmentation:
    _check_seg("seg_unet", in_channels, classes)
    spec = ENCODERS[size]
    kwargs, multiple, fixed = _encoder_kwargs(spec, pretrained, img_size, "seg_unet")
    net = smp.Unet(f"tu-{spec['timm']}", in_channels=in_channels, classes=classes, **kwargs)
    return PaddedSegmentation(net, multiple, fixed, "seg_unet")


@register_model(
    "seg_upernet", kind="segmentation", sizes=SEG_SIZES, default_size="convnext_tiny",
    paper="UPerNet (Xiao et al., ECCV 2018) via smp on timm encoders", encoders={k: v["timm"] for k, v in ENCODERS.items()},
    nominal_params={"convnext_tiny": 37.0e6, "swin_tiny": 36.7e6, "coatnet_0": 35.9e6, "maxvit_tiny": 38.5e6},
)
def seg_upernet(size: str = "convnext_tiny", in_channels: int = 3, classes: int = 16, pretrained: bool = False,
                img_size: int | None = None) -> PaddedSegmentation:
    _check_seg("seg_upernet", in_channels, classes)
    spec = ENCODERS[size]
    kwargs, multiple, fixed = _encoder_kwargs(spec, pretrained, img_size, "seg_upernet")
    net = smp.UPerNet(f"tu-{spec['timm']}", in_channels=in_channels, classes=classes, **kwargs)
    return PaddedSegmentation(net, multiple, fixed, "seg_upernet")


@register_model(
    "hierarchical_upernet", kind="segmentation", sizes=SEG_SIZES, default_size="convnext_tiny",
    paper="multi-task hierarchical UPerNet (binary 2 / coarse 4 / fine 16)",
    outputs={"binary": 2, "coarse": 4, "fine": 16}, loss_weights={"binary": 0.2, "coarse": 0.3, "fine": 0.5},
    # Expected parameter counts (tests allow +-15%): the counts this set-up was designed with for ConvNeXt, Swin and
    # MaxViT; CoAtNet's measured here.
    nominal_params={"convnext_tiny": 37.7e6, "swin_tiny": 36.8e6, "coatnet_0": 35.9e6, "maxvit_tiny": 35.2e6},
)
def hierarchical_upernet(size: str = "convnext_tiny", in_channels: int = 3, classes: int = 16, pretrained: bool = False,
                         coarse_classes: int = 4, binary_classes: int = 2, img_size: int | None = None,
                         decoder_channels: int = 256) -> PaddedSegmentation:
    """Returns ``{"binary", "coarse", "fine"}`` logits; ``classes`` is the fine head's class count."""
    check_channels("hierarchical_upernet", in_channels=in_channels, classes=classes,
                   coarse_classes=coarse_classes, binary_classes=binary_classes, decoder_channels=decoder_channels)
    spec = ENCODERS[size]
    kwargs, multiple, fixed = _encoder_kwargs(spec, pretrained, img_size, "hierarchical_upernet")
    net = HierarchicalUPerNet(f"tu-{spec['timm']}", in_channels,
                              {"binary": binary_classes, "coarse": coarse_classes, "fine": classes},
                              decoder_channels=decoder_channels, **kwargs)
    return PaddedSegmentation(net, multiple, fixed, "hierarchical_upernet")


@register_model(
    "resnet50_unet", kind="segmentation", paper="U-Net (smp) with a ResNet-50 encoder, binary segmentation",
    encoders={"resnet50": "resnet50"}, nominal_params={None: 32.5e6},
)
def resnet50_unet(size: None = None, in_channels: int = 3, classes: int = 1, pretrained: bool = False) -> PaddedSegmentation:
    """Binary by default (1 logit channel for BCE/Dice); ``classes=2`` gives two-class logits."""
    _check_seg("resnet50_unet", in_channels, classes)
    kwargs, multiple, fixed = _encoder_kwargs(RESNET50, pretrained, None, "resnet50_unet")
    net = smp.Unet("tu-resnet50", in_channels=in_channels, classes=classes, **kwargs)
    return PaddedSegmentation(net, multiple, fixed, "resnet50_unet")


LITE_ENCODERS = {"mobilenetv3_small": "mobilenetv3_small_100", "resnet18": "resnet18"}


@register_model(
    "seg_fpn_lite", kind="segmentation", sizes=tuple(LITE_ENCODERS), default_size="mobilenetv3_small",
    paper="FPN (Kirillov et al., CVPR 2019) via smp on a light timm encoder, a distillation student",
    encoders=dict(LITE_ENCODERS),
    # Measured here with classes=1 (smp 0.5, timm 1.0); tests allow +-15%.
    nominal_params={"mobilenetv3_small": 1.07e6, "resnet18": 11.34e6},
)
def seg_fpn_lite(size: str = "mobilenetv3_small", in_channels: int = 3, classes: int = 1, pretrained: bool = False,
                 pyramid_channels: int = 64, segmentation_channels: int = 32) -> PaddedSegmentation:
    """Binary by default (1 logit channel); ``pretrained=True`` loads the encoder from the weight store."""
    check_channels("seg_fpn_lite", in_channels=in_channels, classes=classes, pyramid_channels=pyramid_channels,
                   segmentation_channels=segmentation_channels)
    if segmentation_channels % 32:  # smp's FPN segmentation blocks use GroupNorm(32, channels)
        raise ConfigError(f"model 'seg_fpn_lite': segmentation_channels must be a multiple of 32 (smp's FPN "
                          f"normalises it in 32 groups), got {segmentation_channels}.")
    spec = dict(timm=LITE_ENCODERS[size], rule="multiple32")
    kwargs, multiple, fixed = _encoder_kwargs(spec, pretrained, None, "seg_fpn_lite")
    net = smp.FPN(f"tu-{spec['timm']}", in_channels=in_channels, classes=classes,
                  decoder_pyramid_channels=pyramid_channels, decoder_segmentation_channels=segmentation_channels,
                  **kwargs)
    return PaddedSegmentation(net, multiple, fixed, "seg_fpn_lite")
