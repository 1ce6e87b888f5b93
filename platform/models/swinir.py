"""SwinIR, "Image Restoration Using Swin Transformer" (Liang et al., ICCVW 2021), pure PyTorch.

Denoising/restoration configuration (``upscale=1``, ``upsampler=''``): shallow 3x3 conv,
residual Swin transformer blocks (RSTB) of shifted-window attention with relative position
bias, a conv after the body and a global residual ``x + conv_last(...)``. Module names follow
the official ``JingyunLiang/SwinIR`` ``models/network_swinir.py`` (``conv_first``,
``patch_embed``, ``layers.i.residual_group.blocks.j.attn.qkv``, ``conv_after_body``,
``conv_last``). Rewritten (rather than vendored) to work on any input size: the image is
reflect-padded to a multiple of the window (``size_multiple = window_size``), the shifted
window masks are computed for the actual size and cached, attention runs through
``scaled_dot_product_attention``. The official RGB mean shift is dropped because the
platform already feeds zero-centred [-1, 1] inputs; ``relative_position_index`` is a
non-persistent buffer and masks are not stored, so only learnable tensors are in the state dict.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from timm.layers import DropPath, trunc_normal_
from torch import nn

from platform.errors import ConfigError
from platform.models._registry import register_model
from platform.models._utils import check_channels, identity_start, no_pretrained, pad_to_multiple


class Mlp(nn.Module):
    def __init__(self, in_features: int, hidden_features: int, drop: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_features, in_features)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


def window_partition(x: torch.Tensor, ws: int) -> torch.Tensor:
    """(B, H, W, C) -> (B * nW, ws * ws, C)."""
    b, h, w, c = x.shape
    x = x.view(b, h // ws, ws, w // ws, ws, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, ws * ws, c)


def window_reverse(windows: torch.Tensor, ws: int, h: int, w: int) -> torch.Tensor:
    """(B * nW, ws * ws, C) -> (B, H, W, C)."""
    c = windows.shape[-1]
    x = windows.view(-1, h // ws, w // ws, ws, ws, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, h, w, c)


def shifted_window_mask(h: int, w: int, ws: int, shift: int, device: torch.device) -> torch.Tensor:
    """Additive (nW, N, N) mask that stops attention across the wrapped borders of a cyclic shift."""
    img_mask = torch.zeros((1, h, w, 1), device=device)
    cnt = 0
    for hs in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
        for wsl in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
            img_mask[:, hs, wsl, :] = cnt
            cnt += 1
    mw = window_partition(img_mask, ws).squeeze(-1)  # nW, N
    diff = mw.unsqueeze(1) - mw.unsqueeze(2)
    return torch.zeros_like(diff).masked_fill(diff != 0, -100.0)


class WindowAttention(nn.Module):
    """Window multi-head self attention with a learned relative position bias table."""

    def __init__(self, dim: int, window_size: int, num_heads: int, qkv_bias: bool = True, attn_drop: float = 0.0, proj_drop: float = 0.0):
        super().__init__()
        if dim % num_heads:
            raise ConfigError(f"swinir: embed_dim {dim} must be divisible by num_heads {num_heads}.")
        self.dim, self.window_size, self.num_heads = dim, window_size, num_heads
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window_size - 1) ** 2, num_heads))
        coords = torch.stack(torch.meshgrid(torch.arange(window_size), torch.arange(window_size), indexing="ij")).flatten(1)
        rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window_size - 1)
        self.register_buffer("relative_position_index", rel[..., 0] * (2 * window_size - 1) + rel[..., 1], persistent=False)
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        trunc_normal_(self.relative_position_bias_table, std=0.02)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        b_, n, c = x.shape
        qkv = self.qkv(x).reshape(b_, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        bias = bias.view(n, n, -1).permute(2, 0, 1)  # nH, N, N
        if mask is not None:
            nw = mask.shape[0]
            bias = (bias.unsqueeze(0) + mask.unsqueeze(1)).unsqueeze(0)  # 1, nW, nH, N, N
            q, k, v = (t.view(b_ // nw, nw, self.num_heads, n, -1) for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype),
                                             dropout_p=self.attn_drop if self.training else 0.0)
        out = out.reshape(b_, self.num_heads, n, -1).transpose(1, 2).reshape(b_, n, c)
        return self.proj_drop(self.proj(out))


class SwinTransformerBlock(nn.Module):
    def __init__(self, dim: int, num_heads: int, window_size: int, shift_size: int, mlp_ratio: float,
                 drop: float = 0.0, attn_drop: float = 0.0, drop_path: float = 0.0):
        super().__init__()
        self.window_size, self.shift_size = window_size, shift_size
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, window_size, num_heads, attn_drop=attn_drop, proj_drop=drop)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=drop)
        self._mask_cache: dict[tuple, torch.Tensor] = {}

    def _mask(self, h: int, w: int, device: torch.device) -> torch.Tensor | None:
        if self.shift_size == 0:
            return None
        key = (h, w, str(device))
        if key not in self._mask_cache:
            if len(self._mask_cache) > 8:
                self._mask_cache.clear()
            self._mask_cache[key] = shifted_window_mask(h, w, self.window_size, self.shift_size, device)
        return self._mask_cache[key]

    def forward(self, x: torch.Tensor, x_size: tuple[int, int]) -> torch.Tensor:
        h, w = x_size
        b, _, c = x.shape
        shortcut = x
        x = self.norm1(x).view(b, h, w, c)
        if self.shift_size > 0:
            x = torch.roll(x, shifts=(-self.shift_size, -self.shift_size), dims=(1, 2))
        windows = self.attn(window_partition(x, self.window_size), mask=self._mask(h, w, x.device))
        x = window_reverse(windows, self.window_size, h, w)
        if self.shift_size > 0:
            x = torch.roll(x, shifts=(self.shift_size, self.shift_size), dims=(1, 2))
        x = shortcut + self.drop_path(x.reshape(b, h * w, c))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class BasicLayer(nn.Module):
    def __init__(self, dim: int, depth: int, num_heads: int, window_size: int, mlp_ratio: float, drop_path: Sequence[float]):
        super().__init__()
        self.blocks = nn.ModuleList(
            SwinTransformerBlock(dim, num_heads, window_size, 0 if i % 2 == 0 else window_size // 2, mlp_ratio,
                                 drop_path=drop_path[i])
            for i in range(depth)
        )

    def forward(self, x: torch.Tensor, x_size: tuple[int, int]) -> torch.Tensor:
        for blk in self.blocks:
            x = blk(x, x_size)
        return x


class PatchEmbed(nn.Module):
    """(B, C, H, W) -> (B, HW, C), optional LayerNorm (patch size 1, as in SwinIR)."""

    def __init__(self, embed_dim: int, norm: bool):
        super().__init__()
        self.norm = nn.LayerNorm(embed_dim) if norm else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(2).transpose(1, 2)
        return self.norm(x) if self.norm is not None else x


class PatchUnEmbed(nn.Module):
    def forward(self, x: torch.Tensor, x_size: tuple[int, int]) -> torch.Tensor:
        b, _, c = x.shape
        return x.transpose(1, 2).reshape(b, c, x_size[0], x_size[1])


class RSTB(nn.Module):
    """Residual Swin Transformer Block: Swin layers -> 3x3 conv -> residual."""

    def __init__(self, dim: int, depth: int, num_heads: int, window_size: int, mlp_ratio: float, drop_path: Sequence[float]):
        super().__init__()
        self.residual_group = BasicLayer(dim, depth, num_heads, window_size, mlp_ratio, drop_path)
        self.conv = nn.Conv2d(dim, dim, 3, 1, 1)
        self.patch_embed = PatchEmbed(dim, norm=False)
        self.patch_unembed = PatchUnEmbed()

    def forward(self, x: torch.Tensor, x_size: tuple[int, int]) -> torch.Tensor:
        return self.patch_embed(self.conv(self.patch_unembed(self.residual_group(x, x_size), x_size))) + x


class SwinIR(nn.Module):
    def __init__(self, in_chans: int = 3, out_chans: int = 3, embed_dim: int = 180, depths: Sequence[int] = (6,) * 6,
                 num_heads: Sequence[int] = (6,) * 6, window_size: int = 8, mlp_ratio: float = 2.0,
                 drop_path_rate: float = 0.1, resi_connection: str = "1conv", identity_init: bool = True):
        super().__init__()
        if len(depths) != len(num_heads):
            raise ConfigError(f"swinir: depths {list(depths)} and num_heads {list(num_heads)} must have the same length.")
        if window_size < 2:
            raise ConfigError(f"swinir: window_size must be >= 2, got {window_size}.")
        self.window_size = window_size
        self.size_multiple = window_size
        self.conv_first = nn.Conv2d(in_chans, embed_dim, 3, 1, 1)
        self.patch_embed = PatchEmbed(embed_dim, norm=True)
        self.patch_unembed = PatchUnEmbed()
        total = sum(depths)  # python maths (not torch.linspace) so the model can be built on "meta"
        dpr = [drop_path_rate * i / max(1, total - 1) for i in range(total)]
        self.layers = nn.ModuleList()
        for i, (depth, heads) in enumerate(zip(depths, num_heads)):
            start = sum(depths[:i])
            self.layers.append(RSTB(embed_dim, depth, heads, window_size, mlp_ratio, dpr[start:start + depth]))
        self.norm = nn.LayerNorm(embed_dim)
        if resi_connection == "1conv":
            self.conv_after_body = nn.Conv2d(embed_dim, embed_dim, 3, 1, 1)
        elif resi_connection == "3conv":
            self.conv_after_body = nn.Sequential(
                nn.Conv2d(embed_dim, embed_dim // 4, 3, 1, 1), nn.LeakyReLU(0.2, inplace=True),
                nn.Conv2d(embed_dim // 4, embed_dim // 4, 1, 1, 0), nn.LeakyReLU(0.2, inplace=True),
                nn.Conv2d(embed_dim // 4, embed_dim, 3, 1, 1))
        else:
            raise ConfigError(f"swinir: resi_connection must be '1conv' or '3conv', got {resi_connection!r}.")
        self.conv_last = nn.Conv2d(embed_dim, out_chans, 3, 1, 1)
        self.residual = in_chans == out_chans
        self.apply(self._init_weights)
        if identity_init and self.residual:
            identity_start(self.conv_last)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.constant_(m.bias, 0)
        elif isinstance(m, nn.LayerNorm):
            nn.init.constant_(m.bias, 0)
            nn.init.constant_(m.weight, 1.0)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x_size = (x.shape[2], x.shape[3])
        x = self.patch_embed(x)
        for layer in self.layers:
            x = layer(x, x_size)
        return self.patch_unembed(self.norm(x), x_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        x = pad_to_multiple(x, self.window_size, mode="reflect")
        x_first = self.conv_first(x)
        res = self.conv_after_body(self.forward_features(x_first)) + x_first
        out = self.conv_last(res)
        if self.residual:
            out = x + out
        return out[:, :, :h, :w]


SWINIR_SIZES = {
    # small: the official lightweight body (embed 60, 4 RSTB x 6); base: the official
    # colour/real denoising body (embed 180, 6 RSTB x 6, window 8).
    "small": dict(embed_dim=60, depths=(6, 6, 6, 6), num_heads=(6, 6, 6, 6)),
    "base": dict(embed_dim=180, depths=(6,) * 6, num_heads=(6,) * 6),
}


@register_model(
    "swinir", kind="img2img", sizes=tuple(SWINIR_SIZES), default_size="small",
    paper="SwinIR: Image Restoration Using Swin Transformer (ICCVW 2021)", nominal_params={"small": 0.9e6, "base": 11.5e6},
)
def swinir(
    size: str = "small", in_channels: int = 3, out_channels: int = 3, pretrained: bool = False,
    window_size: int = 8, mlp_ratio: float = 2.0, drop_path_rate: float = 0.1, resi_connection: str = "1conv",
    embed_dim: int | None = None, depths: Sequence[int] | None = None, num_heads: Sequence[int] | None = None,
    identity_init: bool = True,
) -> SwinIR:
    check_channels("swinir", in_channels=in_channels, out_channels=out_channels)
    no_pretrained("swinir", pretrained)
    cfg = dict(SWINIR_SIZES[size])
    if embed_dim is not None:
        cfg["embed_dim"] = int(embed_dim)
    if depths is not None:
        cfg["depths"] = tuple(depths)
    if num_heads is not None:
        cfg["num_heads"] = tuple(num_heads)
    return SwinIR(in_channels, out_channels, window_size=window_size, mlp_ratio=mlp_ratio,
                  drop_path_rate=drop_path_rate, resi_connection=resi_connection, identity_init=identity_init, **cfg)
