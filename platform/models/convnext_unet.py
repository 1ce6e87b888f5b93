"""ConvNeXt U-Net: a timm ConvNeXt encoder with a light U-Net decoder, full-resolution output.

Encoder: ``timm.create_model("convnext_<size>", features_only=True)`` (stages at 1/4 ... 1/32;
``drop_path_rate`` is timm's stochastic depth, more for larger encoders:
nano 0.05, tiny 0.10, small 0.15, base 0.20). ConvNeXt's patchify stem starts at 1/4, so
two shallow convolutional stems (full and half resolution) provide the fine skips that
image-to-image work needs. Decoder stage = bilinear x2 upsampling, concatenation with the
skip, a 1x1 fusion conv and one timm ``ConvNeXtBlock`` (decoder written here because no
library ships a full-resolution ConvNeXt U-Net; smp's ``Unet`` stops at the encoder's first
stride). A global residual (``out = x + head(...)``) is used when in and out channels agree.
"""

from __future__ import annotations

from collections.abc import Sequence

import timm
import torch
import torch.nn.functional as F
from timm.layers import LayerNorm2d
from timm.models.convnext import ConvNeXtBlock
from torch import nn

from platform.errors import ConfigError
from platform.models._registry import register_model
from platform.models._utils import check_channels, identity_start, pad_to_multiple, timm_pretrained_kwargs

CONVNEXT_SIZES = {
    # size: (timm encoder name, default drop_path_rate)
    "nano": ("convnext_nano", 0.05),
    "tiny": ("convnext_tiny", 0.10),
    "small": ("convnext_small", 0.15),
    "base": ("convnext_base", 0.20),
}


class DecoderStage(nn.Module):
    """Upsample to the skip's size, concatenate, fuse with a 1x1 conv, refine with a ConvNeXt block."""

    def __init__(self, in_ch: int, skip_ch: int, out_ch: int):
        super().__init__()
        self.fuse = nn.Conv2d(in_ch + skip_ch, out_ch, kernel_size=1)
        self.block = ConvNeXtBlock(out_ch, kernel_size=7, mlp_ratio=4, ls_init_value=1e-6)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.block(self.fuse(torch.cat([x, skip], dim=1)))


class ConvNeXtUNet(nn.Module):
    """ConvNeXt encoder + U-Net decoder; any input size (reflect-padded to 32 and cropped back)."""

    def __init__(
        self,
        encoder_name: str = "convnext_tiny",
        in_channels: int = 3,
        out_channels: int = 3,
        drop_path_rate: float = 0.1,
        pretrained: bool = False,
        decoder_channels: Sequence[int] | None = None,
        residual: bool = True,
        identity_init: bool = True,
    ):
        super().__init__()
        extra = timm_pretrained_kwargs(encoder_name) if pretrained else {"pretrained": False}
        self.encoder = timm.create_model(
            encoder_name, features_only=True, out_indices=(0, 1, 2, 3), in_chans=in_channels,
            drop_path_rate=drop_path_rate, **extra,
        )
        c1, c2, c3, c4 = self.encoder.feature_info.channels()
        s1 = c1 // 2  # half-resolution stem
        s0 = max(16, c1 // 4)  # full-resolution stem
        self.stem_full = nn.Sequential(nn.Conv2d(in_channels, s0, 3, padding=1), nn.GELU())
        self.stem_half = nn.Sequential(nn.Conv2d(s0, s1, 3, stride=2, padding=1), LayerNorm2d(s1), nn.GELU())
        if decoder_channels is None:
            decoder_channels = (c3 // 2, c2 // 2, c1 // 2, s1, s0)
        decoder_channels = tuple(int(c) for c in decoder_channels)
        if len(decoder_channels) != 5 or min(decoder_channels) < 1:
            raise ConfigError(
                f"convnext_unet: decoder_channels must be 5 positive integers (1/16 ... full resolution), "
                f"got {decoder_channels!r}."
            )
        skips = (c3, c2, c1, s1, s0)
        stages, prev = [], c4
        for skip_ch, out_ch in zip(skips, decoder_channels):
            stages.append(DecoderStage(prev, skip_ch, out_ch))
            prev = out_ch
        self.decoder = nn.ModuleList(stages)
        self.head = nn.Conv2d(prev, out_channels, 3, padding=1)
        self.residual = residual and in_channels == out_channels
        if identity_init and self.residual:
            identity_start(self.head)
        self.size_multiple = 32

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        xp = pad_to_multiple(x, self.size_multiple, mode="reflect")
        f1, f2, f3, f4 = self.encoder(xp)
        full = self.stem_full(xp)
        half = self.stem_half(full)
        y = f4
        for stage, skip in zip(self.decoder, (f3, f2, f1, half, full)):
            y = stage(y, skip)
        y = self.head(y)
        if self.residual:
            y = y + xp
        return y[:, :, :h, :w]


@register_model(
    "convnext_unet", kind="img2img", sizes=tuple(CONVNEXT_SIZES), default_size="tiny",
    paper="A ConvNet for the 2020s (CVPR 2022) encoder + U-Net decoder",
    nominal_params={"nano": 15e6, "tiny": 28e6, "small": 50e6, "base": 89e6},
    drop_path_defaults={k: v[1] for k, v in CONVNEXT_SIZES.items()},
)
def convnext_unet(
    size: str = "tiny",
    in_channels: int = 3,
    out_channels: int = 3,
    pretrained: bool = False,
    drop_path_rate: float | None = None,
    decoder_channels: Sequence[int] | None = None,
    residual: bool = True,
    identity_init: bool = True,
) -> ConvNeXtUNet:
    """ConvNeXt U-Net; ``pretrained`` loads ``timm/convnext_<size>.pth`` into the encoder."""
    check_channels("convnext_unet", in_channels=in_channels, out_channels=out_channels)
    encoder_name, default_dpr = CONVNEXT_SIZES[size]
    dpr = default_dpr if drop_path_rate is None else float(drop_path_rate)
    if not 0.0 <= dpr < 1.0:
        raise ConfigError(f"convnext_unet: drop_path_rate must be in [0, 1), got {drop_path_rate!r}.")
    return ConvNeXtUNet(encoder_name, in_channels, out_channels, dpr, pretrained, decoder_channels, residual,
                        identity_init)
