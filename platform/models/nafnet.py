"""NAFNet, "Simple Baselines for Image Restoration" (Chen et al., ECCV 2022).

Module and parameter names are identical to the official
``megvii-research/NAFNet`` ``basicsr/models/archs/NAFNet_arch.py`` so that released
checkpoints (``{"params": state_dict}``) load strictly with
:func:`load_official_checkpoint`. Rewritten here (instead of vendoring BasicSR) because
the official package pulls in the whole BasicSR training stack; the only deviations are

* ``LayerNorm2d`` uses plain autograd ops instead of the official hand-written
  ``autograd.Function`` (same forward maths, same parameters ``weight``/``bias``);
* ``NAFNet`` takes ``out_channels`` (the global residual ``x + inp`` is only added when
  ``out_channels == img_channel``, exactly as the official net when they are equal) and a
  ``drop_out_rate`` forwarded to every ``NAFBlock`` (parameter-free).

TLC (test-time local converter, Chu et al. 2022 "Revisiting Global Statistics Aggregation
for Improving Image Restoration", the official ``Local_Base``/``AvgPool2d``): the
SCA global average pool is replaced by a local box average whose kernel is 1.5x the
feature size seen at the training crop. :func:`to_tlc` converts a model in place (no new
parameters, the state dict is unchanged); it is a test-time conversion, use the plain
model for training.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from platform.errors import ConfigError
from platform.models._registry import register_model
from platform.models._utils import check_channels, identity_start, load_state_file

log = logging.getLogger(__name__)


class LayerNorm2d(nn.Module):
    """Channel LayerNorm for NCHW tensors (official NAFNet ``LayerNorm2d``, eps 1e-6)."""

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.register_parameter("weight", nn.Parameter(torch.ones(channels)))
        self.register_parameter("bias", nn.Parameter(torch.zeros(channels)))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mu = x.mean(1, keepdim=True)
        var = (x - mu).pow(2).mean(1, keepdim=True)
        y = (x - mu) / (var + self.eps).sqrt()
        return self.weight.view(1, -1, 1, 1) * y + self.bias.view(1, -1, 1, 1)


class SimpleGate(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = x.chunk(2, dim=1)
        return x1 * x2


class NAFBlock(nn.Module):
    def __init__(self, c: int, DW_Expand: int = 2, FFN_Expand: int = 2, drop_out_rate: float = 0.0):
        super().__init__()
        dw_channel = c * DW_Expand
        self.conv1 = nn.Conv2d(c, dw_channel, kernel_size=1, padding=0, stride=1, groups=1, bias=True)
        self.conv2 = nn.Conv2d(dw_channel, dw_channel, kernel_size=3, padding=1, stride=1, groups=dw_channel, bias=True)
        self.conv3 = nn.Conv2d(dw_channel // 2, c, kernel_size=1, padding=0, stride=1, groups=1, bias=True)
        # Simplified Channel Attention
        self.sca = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(dw_channel // 2, dw_channel // 2, kernel_size=1, padding=0, stride=1, groups=1, bias=True),
        )
        self.sg = SimpleGate()
        ffn_channel = FFN_Expand * c
        self.conv4 = nn.Conv2d(c, ffn_channel, kernel_size=1, padding=0, stride=1, groups=1, bias=True)
        self.conv5 = nn.Conv2d(ffn_channel // 2, c, kernel_size=1, padding=0, stride=1, groups=1, bias=True)
        self.norm1 = LayerNorm2d(c)
        self.norm2 = LayerNorm2d(c)
        self.dropout1 = nn.Dropout(drop_out_rate) if drop_out_rate > 0.0 else nn.Identity()
        self.dropout2 = nn.Dropout(drop_out_rate) if drop_out_rate > 0.0 else nn.Identity()
        self.beta = nn.Parameter(torch.zeros((1, c, 1, 1)), requires_grad=True)
        self.gamma = nn.Parameter(torch.zeros((1, c, 1, 1)), requires_grad=True)

    def forward(self, inp: torch.Tensor) -> torch.Tensor:
        x = self.norm1(inp)
        x = self.conv1(x)
        x = self.conv2(x)
        x = self.sg(x)
        x = x * self.sca(x)
        x = self.conv3(x)
        x = self.dropout1(x)
        y = inp + x * self.beta
        x = self.conv4(self.norm2(y))
        x = self.sg(x)
        x = self.conv5(x)
        x = self.dropout2(x)
        return y + x * self.gamma


class NAFNet(nn.Module):
    """The official NAFNet U-shaped network (global residual, zero padding to 2**levels)."""

    def __init__(
        self,
        img_channel: int = 3,
        width: int = 16,
        middle_blk_num: int = 1,
        enc_blk_nums: Sequence[int] = (),
        dec_blk_nums: Sequence[int] = (),
        out_channels: int | None = None,
        drop_out_rate: float = 0.0,
    ):
        super().__init__()
        out_channels = img_channel if out_channels is None else out_channels
        self.residual = out_channels == img_channel
        self.intro = nn.Conv2d(img_channel, width, kernel_size=3, padding=1, stride=1, groups=1, bias=True)
        self.ending = nn.Conv2d(width, out_channels, kernel_size=3, padding=1, stride=1, groups=1, bias=True)

        self.encoders = nn.ModuleList()
        self.decoders = nn.ModuleList()
        self.middle_blks = nn.ModuleList()
        self.ups = nn.ModuleList()
        self.downs = nn.ModuleList()

        chan = width
        for num in enc_blk_nums:
            self.encoders.append(nn.Sequential(*[NAFBlock(chan, drop_out_rate=drop_out_rate) for _ in range(num)]))
            self.downs.append(nn.Conv2d(chan, 2 * chan, 2, 2))
            chan = chan * 2

        self.middle_blks = nn.Sequential(*[NAFBlock(chan, drop_out_rate=drop_out_rate) for _ in range(middle_blk_num)])

        for num in dec_blk_nums:
            self.ups.append(nn.Sequential(nn.Conv2d(chan, chan * 2, 1, bias=False), nn.PixelShuffle(2)))
            chan = chan // 2
            self.decoders.append(nn.Sequential(*[NAFBlock(chan, drop_out_rate=drop_out_rate) for _ in range(num)]))

        self.padder_size = 2 ** len(self.encoders)
        self.size_multiple = self.padder_size

    def forward(self, inp: torch.Tensor) -> torch.Tensor:
        _, _, h, w = inp.shape
        inp = self.check_image_size(inp)
        x = self.intro(inp)
        encs = []
        for encoder, down in zip(self.encoders, self.downs):
            x = encoder(x)
            encs.append(x)
            x = down(x)
        x = self.middle_blks(x)
        for decoder, up, enc_skip in zip(self.decoders, self.ups, encs[::-1]):
            x = up(x)
            x = x + enc_skip
            x = decoder(x)
        x = self.ending(x)
        if self.residual:
            x = x + inp
        return x[:, :, :h, :w]

    def check_image_size(self, x: torch.Tensor) -> torch.Tensor:
        _, _, h, w = x.size()
        mod_pad_h = (self.padder_size - h % self.padder_size) % self.padder_size
        mod_pad_w = (self.padder_size - w % self.padder_size) % self.padder_size
        return F.pad(x, (0, mod_pad_w, 0, mod_pad_h))


# --------------------------------------------------------------------------- TLC


class LocalAvgPool2d(nn.Module):
    """TLC replacement of ``AdaptiveAvgPool2d(1)`` (official ``local_arch.AvgPool2d``, exact mode).

    The kernel is ``feature_size_at_train * base_size / train_size`` and is fixed at the
    first forward, which :func:`to_tlc` runs on a training-size input (as the official
    ``Local_Base.convert``). When the kernel covers the whole feature map the output is the
    global average; otherwise it is the box average of every kernel-sized window
    (integral-image implementation), replicate-padded back to the input size.
    """

    def __init__(self, base_size: tuple[int, int], train_size: tuple[int, int]):
        super().__init__()
        self.base_size = tuple(base_size)
        self.train_size = tuple(train_size)
        self.kernel_size: list[int] | None = None

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, base_size={self.base_size}, train_size={self.train_size}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kernel_size is None:
            self.kernel_size = [
                x.shape[2] * self.base_size[0] // self.train_size[0],
                x.shape[3] * self.base_size[1] // self.train_size[1],
            ]
        k1, k2 = self.kernel_size
        if k1 >= x.size(-2) and k2 >= x.size(-1):
            return F.adaptive_avg_pool2d(x, 1)
        _, _, h, w = x.shape
        # integral image in float32: cumulative sums over a large map lose all precision in fp16/bf16
        s = x.float().cumsum(dim=-1).cumsum(dim=-2)
        s = F.pad(s, (1, 0, 1, 0))
        k1, k2 = min(h, k1), min(w, k2)
        s1, s2, s3, s4 = s[:, :, :-k1, :-k2], s[:, :, :-k1, k2:], s[:, :, k1:, :-k2], s[:, :, k1:, k2:]
        out = (s4 + s1 - s2 - s3) / (k1 * k2)
        _h, _w = out.shape[2:]
        pad2d = ((w - _w) // 2, (w - _w + 1) // 2, (h - _h) // 2, (h - _h + 1) // 2)
        return F.pad(out, pad2d, mode="replicate").to(x.dtype)


def _replace_pools(module: nn.Module, base_size: tuple[int, int], train_size: tuple[int, int]) -> int:
    count = 0
    for name, child in module.named_children():
        if isinstance(child, nn.AdaptiveAvgPool2d):
            if child.output_size not in (1, (1, 1)):
                raise ValueError(f"TLC only replaces global pools, found output_size={child.output_size}")
            setattr(module, name, LocalAvgPool2d(base_size=base_size, train_size=train_size))
            count += 1
        else:
            count += _replace_pools(child, base_size, train_size)
    return count


def to_tlc(model: NAFNet, train_size: tuple[int, int] = (256, 256), base_scale: float = 1.5) -> NAFNet:
    """Convert ``model`` in place to the official TLC test-time variant (``NAFNetLocal``).

    Args:
        model: a :class:`NAFNet`.
        train_size: (height, width) of the training crops (256x256 for every official preset).
        base_scale: ``base_size = int(train_size * base_scale)``; the official value is 1.5.

    Every SCA ``AdaptiveAvgPool2d(1)`` becomes a :class:`LocalAvgPool2d` whose kernel is
    fixed by one no-grad forward pass on a ``(1, C, *train_size)`` input (as the official
    ``Local_Base.convert``). No parameter is added: checkpoints load into the converted
    model unchanged. Inputs up to ``base_size`` give exactly the global-pool output. The model
    is left in eval mode. Returns ``model``.
    """
    if not isinstance(model, NAFNet):
        raise ConfigError(f"to_tlc expects a NAFNet model, got {type(model).__name__}.")
    th, tw = (int(train_size[0]), int(train_size[1]))
    if th < 1 or tw < 1:
        raise ConfigError(f"to_tlc: train_size must be two positive integers, got {train_size!r}.")
    base_size = (int(th * base_scale), int(tw * base_scale))
    n = _replace_pools(model, base_size=base_size, train_size=(th, tw))
    param = next(model.parameters())
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, model.intro.in_channels, th, tw, device=param.device, dtype=param.dtype))
    model.tlc = {"train_size": (th, tw), "base_size": base_size}
    log.debug("TLC: replaced %d pools, base_size=%s", n, base_size)
    return model


# ------------------------------------------------------------------ checkpoints


def load_official_checkpoint(
    model: nn.Module, path_or_state: str | Path | Mapping[str, Any], key: str | None = None
) -> nn.Module:
    """Strictly load an official NAFNet checkpoint into ``model``.

    ``path_or_state`` is a ``.pth`` path or an already-loaded dict. The official release
    stores the weights under ``"params"`` (BasicSR; ``"params_ema"`` when EMA was used); a
    plain state dict is accepted too. ``key`` forces one entry. Loading is strict: missing or
    unexpected tensors raise a :class:`ConfigError` naming them.
    """
    ckpt = load_state_file(path_or_state)
    if key is not None:
        if key not in ckpt:
            raise ConfigError(f"checkpoint has no entry {key!r}; entries: {', '.join(map(str, ckpt))}.")
        state = ckpt[key]
    elif "params" in ckpt and isinstance(ckpt["params"], Mapping):
        state = ckpt["params"]
    elif "params_ema" in ckpt and isinstance(ckpt["params_ema"], Mapping):
        state = ckpt["params_ema"]
    else:
        state = ckpt
    state = {k.removeprefix("module."): v for k, v in state.items()}
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    bad_shape = sorted(k for k in set(expected) & set(state) if tuple(expected[k].shape) != tuple(state[k].shape))
    if missing or unexpected or bad_shape:
        def head(items: list[str]) -> str:
            return ", ".join(items[:5]) + (f" (+{len(items) - 5} more)" if len(items) > 5 else "")

        parts = []
        if missing:
            parts.append(f"{len(missing)} missing ({head(missing)})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected ({head(unexpected)})")
        if bad_shape:
            parts.append(f"{len(bad_shape)} with other shapes ({head(bad_shape)})")
        raise ConfigError(
            "NAFNet checkpoint does not match the model: " + "; ".join(parts)
            + ". Create the preset the checkpoint was trained with (e.g. nafnet-sidd-width64)."
        )
    model.load_state_dict(state, strict=True)
    return model


# --------------------------------------------------------------------- registry

# Named sizes for the platform's few-shot searches (parameters measured, see docs/models.md);
# drop_out_rate: the smaller the model, the more dropout (small 0.10, base 0.05, large 0.0).
NAFNET_SIZES: dict[str, dict[str, Any]] = {
    "small": dict(width=32, enc_blk_nums=[1, 1, 1, 24], middle_blk_num=1, dec_blk_nums=[1, 1, 1, 1], drop_out_rate=0.10),
    "base": dict(width=32, enc_blk_nums=[2, 2, 4, 8], middle_blk_num=12, dec_blk_nums=[2, 2, 2, 2], drop_out_rate=0.05),
    "large": dict(width=48, enc_blk_nums=[2, 2, 4, 12], middle_blk_num=6, dec_blk_nums=[2, 2, 2, 2], drop_out_rate=0.0),
}

# Exactly the official options/test/*/NAFNet-*.yml network_g configs. ``tlc`` marks the
# presets the official test options run as NAFNetLocal (train crops 256x256).
NAFNET_PRESETS: dict[str, dict[str, Any]] = {
    "nafnet-sidd-width32": dict(cfg=dict(width=32, enc_blk_nums=[2, 2, 4, 8], middle_blk_num=12, dec_blk_nums=[2, 2, 2, 2]),
                                file="NAFNet-SIDD-width32.pth", tlc=False, params=29.16e6, task="real denoising (SIDD)"),
    "nafnet-sidd-width64": dict(cfg=dict(width=64, enc_blk_nums=[2, 2, 4, 8], middle_blk_num=12, dec_blk_nums=[2, 2, 2, 2]),
                                file="NAFNet-SIDD-width64.pth", tlc=False, params=115.98e6, task="real denoising (SIDD)"),
    "nafnet-gopro-width32": dict(cfg=dict(width=32, enc_blk_nums=[1, 1, 1, 28], middle_blk_num=1, dec_blk_nums=[1, 1, 1, 1]),
                                 file="NAFNet-GoPro-width32.pth", tlc=True, params=17.11e6, task="motion deblurring (GoPro)"),
    "nafnet-gopro-width64": dict(cfg=dict(width=64, enc_blk_nums=[1, 1, 1, 28], middle_blk_num=1, dec_blk_nums=[1, 1, 1, 1]),
                                 file="NAFNet-GoPro-width64.pth", tlc=True, params=67.89e6, task="motion deblurring (GoPro)"),
    "nafnet-reds-width64": dict(cfg=dict(width=64, enc_blk_nums=[1, 1, 1, 28], middle_blk_num=1, dec_blk_nums=[1, 1, 1, 1]),
                                file="NAFNet-REDS-width64.pth", tlc=True, params=67.89e6, task="deblurring with JPEG artifacts (REDS)"),
}
OFFICIAL_TRAIN_SIZE = (256, 256)


def pretrained_key(preset: str) -> str:
    """Store key of an official checkpoint in the pretrained store (``layer_2/nafnet/``,
    where ``python -m platform.pretrained upload FILE --group layer_2 --arch nafnet`` puts it),
    e.g. ``layer_2/nafnet/NAFNet-SIDD-width64.pth``."""
    return f"layer_2/nafnet/{NAFNET_PRESETS[preset]['file']}"


def _build(cfg: dict[str, Any], in_channels: int, out_channels: int, drop_out_rate: float | None,
           identity_init: bool = True) -> NAFNet:
    cfg = dict(cfg)
    if drop_out_rate is not None:
        cfg["drop_out_rate"] = float(drop_out_rate)
    model = NAFNet(img_channel=in_channels, out_channels=out_channels, **cfg)
    if identity_init and model.residual:
        identity_start(model.ending)
    return model


@register_model(
    "nafnet", kind="img2img", sizes=("small", "base", "large"), default_size="base",
    paper="Simple Baselines for Image Restoration (ECCV 2022)", nominal_params={"small": 15e6, "base": 28e6, "large": 45e6},
)
def nafnet(
    size: str = "base",
    in_channels: int = 3,
    out_channels: int = 3,
    pretrained: bool = False,
    width: int | None = None,
    enc_blk_nums: Sequence[int] | None = None,
    middle_blk_num: int | None = None,
    dec_blk_nums: Sequence[int] | None = None,
    drop_out_rate: float | None = None,
    identity_init: bool = True,
) -> NAFNet:
    """NAFNet at a named size; any of the structural arguments overrides the size's value.

    ``identity_init`` zeroes the last convolution, so the untrained network returns its input."""
    check_channels("nafnet", in_channels=in_channels, out_channels=out_channels)
    if pretrained:
        raise ConfigError(
            "model 'nafnet' sizes have no released weights; use a preset such as "
            "'nafnet-sidd-width64' with pretrained: true."
        )
    cfg = dict(NAFNET_SIZES[size])
    for key, value in dict(width=width, enc_blk_nums=enc_blk_nums, middle_blk_num=middle_blk_num,
                           dec_blk_nums=dec_blk_nums).items():
        if value is not None:
            cfg[key] = list(value) if isinstance(value, (list, tuple)) else value
    if len(cfg["enc_blk_nums"]) != len(cfg["dec_blk_nums"]):
        raise ConfigError(
            f"model 'nafnet': enc_blk_nums {cfg['enc_blk_nums']} and dec_blk_nums {cfg['dec_blk_nums']} "
            "must have the same length."
        )
    return _build(cfg, in_channels, out_channels, drop_out_rate, identity_init)


def _register_preset(preset: str) -> None:
    spec = NAFNET_PRESETS[preset]

    def factory(
        size: None = None,
        in_channels: int = 3,
        out_channels: int = 3,
        pretrained: bool = False,
        drop_out_rate: float | None = None,
        tlc: bool | None = None,
        train_size: tuple[int, int] = OFFICIAL_TRAIN_SIZE,
    ) -> NAFNet:
        check_channels(preset, in_channels=in_channels, out_channels=out_channels)
        model = _build(spec["cfg"], in_channels, out_channels, drop_out_rate)
        if pretrained:
            if in_channels != 3 or out_channels != 3:
                raise ConfigError(f"model {preset!r}: the official weights need in_channels=out_channels=3.")
            from platform.pretrained import resolve

            load_official_checkpoint(model, resolve(pretrained_key(preset)))
        if tlc is None:
            tlc = bool(pretrained and spec["tlc"])
        if tlc:
            to_tlc(model, train_size=train_size)
        return model

    factory.__name__ = factory.__qualname__ = preset.replace("-", "_")
    factory.__doc__ = (
        f"Official {preset} ({spec['task']}): {spec['cfg']}.\n\n"
        f"``pretrained=True`` strictly loads ``{pretrained_key(preset)}`` from the weight store. ``tlc`` "
        "converts to the TLC test-time model (:func:`to_tlc`, ``train_size`` 256x256); by default it is "
        f"{'on' if spec['tlc'] else 'off'} together with ``pretrained`` "
        f"({'the official test options run this preset as NAFNetLocal' if spec['tlc'] else 'as in the official test options'})."
    )
    register_model(
        preset, kind="img2img", paper="Simple Baselines for Image Restoration (ECCV 2022)",
        official=spec["cfg"], pretrained_key=pretrained_key(preset), tlc_default=spec["tlc"], task=spec["task"],
        nominal_params={None: spec["params"]}, train_size=OFFICIAL_TRAIN_SIZE,
    )(factory)


for _preset in NAFNET_PRESETS:
    _register_preset(_preset)
