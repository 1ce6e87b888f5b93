"""Plain U-Net (Ronneberger et al. 2015) and Attention U-Net (Oktay et al. 2018).

Both: four 2x poolings (``size_multiple`` 16, inputs are reflect-padded and cropped back
internally), BatchNorm after every 3x3 conv, no dropout. By default (``residual=True``, same
channels in and out) the output is ``x + head(features)`` with the head zeroed, so the untrained
network returns its input; ``residual=False`` gives the classic ``tanh`` output that keeps the
[-1, 1] image range (``final_activation="none"`` gives raw outputs). Sizes:
``base`` = 64 base filters (64...1024, the classic ~31M U-Net),
``small`` = 32 base filters.

Attention gates follow Oktay et al. "Attention U-Net: Learning Where to Look for the
Pancreas" in the additive form used by the widely used PyTorch port: the decoder signal
``g`` (already upsampled to the skip's resolution) and the skip ``x`` go through 1x1
conv+BN to ``F_int`` channels, ``alpha = sigmoid(BN(conv1x1(relu(W_g g + W_x x))))`` and the
skip is replaced by ``x * alpha`` before concatenation. Written here because neither timm
nor smp ship these two classic image-to-image U-Nets with BatchNorm/tanh.
"""

from __future__ import annotations

import torch
from torch import nn

from platform.errors import ConfigError
from platform.models._registry import register_model
from platform.models._utils import check_channels, identity_start, no_pretrained, pad_to_multiple

UNET_SIZES = {"small": 32, "base": 64}


def _activation(name: str) -> nn.Module:
    if name == "tanh":
        return nn.Tanh()
    if name in ("none", "identity", None):
        return nn.Identity()
    raise ConfigError(f"unet: final_activation must be 'tanh' or 'none', got {name!r}.")


class ConvBlock(nn.Sequential):
    """(3x3 conv -> BatchNorm -> ReLU) x 2."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__(
            nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False), nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True),
            nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False), nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True),
        )


class UNet(nn.Module):
    """Classic U-Net: max-pool down, transposed-conv up, concatenated skips."""

    def __init__(self, in_channels: int = 3, out_channels: int = 3, base_filters: int = 64, final_activation: str = "tanh",
                 residual: bool = True):
        super().__init__()
        f = [base_filters * 2**i for i in range(5)]
        self.inc = ConvBlock(in_channels, f[0])
        self.downs = nn.ModuleList(ConvBlock(f[i], f[i + 1]) for i in range(4))
        self.pool = nn.MaxPool2d(2)
        self.ups = nn.ModuleList(nn.ConvTranspose2d(f[i + 1], f[i], 2, stride=2) for i in reversed(range(4)))
        self.up_convs = nn.ModuleList(ConvBlock(2 * f[i], f[i]) for i in reversed(range(4)))
        self.outc = nn.Conv2d(f[0], out_channels, 1)
        self.final = _activation(final_activation)
        self.residual = residual and in_channels == out_channels
        if self.residual:  # x + head(features), the head zeroed: the untrained network is the identity
            self.final = nn.Identity()
            identity_start(self.outc)
        self.size_multiple = 16

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        y = self.inc(pad_to_multiple(x, self.size_multiple))
        skips = [y]
        for down in self.downs:
            y = down(self.pool(y))
            skips.append(y)
        skips.pop()
        for up, conv in zip(self.ups, self.up_convs):
            y = conv(torch.cat([skips.pop(), up(y)], dim=1))
        y = self.final(self.outc(y))[:, :, :h, :w]
        return x + y if self.residual else y


class AttentionGate(nn.Module):
    """Additive attention gate (Oktay et al. 2018): returns ``x * sigmoid(psi(relu(W_g g + W_x x)))``."""

    def __init__(self, f_g: int, f_l: int, f_int: int):
        super().__init__()
        self.W_g = nn.Sequential(nn.Conv2d(f_g, f_int, 1, bias=True), nn.BatchNorm2d(f_int))
        self.W_x = nn.Sequential(nn.Conv2d(f_l, f_int, 1, bias=True), nn.BatchNorm2d(f_int))
        self.psi = nn.Sequential(nn.Conv2d(f_int, 1, 1, bias=True), nn.BatchNorm2d(1), nn.Sigmoid())
        self.relu = nn.ReLU(inplace=True)

    def forward(self, g: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        alpha = self.psi(self.relu(self.W_g(g) + self.W_x(x)))
        return x * alpha


class UpConv(nn.Sequential):
    """Nearest x2 upsampling then 3x3 conv -> BatchNorm -> ReLU."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__(
            nn.Upsample(scale_factor=2, mode="nearest"),
            nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False), nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True),
        )


class AttentionUNet(nn.Module):
    """U-Net with attention gates on every skip connection; BatchNorm, no dropout, tanh output."""

    def __init__(self, in_channels: int = 3, out_channels: int = 3, base_filters: int = 64, final_activation: str = "tanh",
                 residual: bool = True):
        super().__init__()
        f = [base_filters * 2**i for i in range(5)]
        self.inc = ConvBlock(in_channels, f[0])
        self.downs = nn.ModuleList(ConvBlock(f[i], f[i + 1]) for i in range(4))
        self.pool = nn.MaxPool2d(2)
        self.ups = nn.ModuleList(UpConv(f[i + 1], f[i]) for i in reversed(range(4)))
        self.gates = nn.ModuleList(AttentionGate(f[i], f[i], max(1, f[i] // 2)) for i in reversed(range(4)))
        self.up_convs = nn.ModuleList(ConvBlock(2 * f[i], f[i]) for i in reversed(range(4)))
        self.outc = nn.Conv2d(f[0], out_channels, 1)
        self.final = _activation(final_activation)
        self.residual = residual and in_channels == out_channels
        if self.residual:  # x + head(features), the head zeroed: the untrained network is the identity
            self.final = nn.Identity()
            identity_start(self.outc)
        self.size_multiple = 16

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        y = self.inc(pad_to_multiple(x, self.size_multiple))
        skips = [y]
        for down in self.downs:
            y = down(self.pool(y))
            skips.append(y)
        skips.pop()
        for up, gate, conv in zip(self.ups, self.gates, self.up_convs):
            g = up(y)
            skip = gate(g, skips.pop())
            y = conv(torch.cat([skip, g], dim=1))
        y = self.final(self.outc(y))[:, :, :h, :w]
        return x + y if self.residual else y


@register_model(
    "unet", kind="img2img", sizes=tuple(UNET_SIZES), default_size="base",
    paper="U-Net (Ronneberger et al., MICCAI 2015), BatchNorm variant", nominal_params={"small": 7.8e6, "base": 31e6},
)
def unet(
    size: str = "base", in_channels: int = 3, out_channels: int = 3, pretrained: bool = False,
    base_filters: int | None = None, final_activation: str = "tanh", residual: bool = True,
) -> UNet:
    check_channels("unet", in_channels=in_channels, out_channels=out_channels)
    no_pretrained("unet", pretrained)
    return UNet(in_channels, out_channels, base_filters or UNET_SIZES[size], final_activation, residual)


@register_model(
    "attention_unet", kind="img2img", sizes=tuple(UNET_SIZES), default_size="base",
    paper="Attention U-Net (Oktay et al., MIDL 2018)", nominal_params={"small": 8.7e6, "base": 35e6},
)
def attention_unet(
    size: str = "base", in_channels: int = 3, out_channels: int = 3, pretrained: bool = False,
    base_filters: int | None = None, final_activation: str = "tanh", residual: bool = True,
) -> AttentionUNet:
    check_channels("attention_unet", in_channels=in_channels, out_channels=out_channels)
    no_pretrained("attention_unet", pretrained)
    return AttentionUNet(in_channels, out_channels, base_filters or UNET_SIZES[size], final_activation, residual)
