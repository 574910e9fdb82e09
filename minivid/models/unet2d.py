"""The 2-D U-Net denoiser that the whole course builds on.

Architecture after Ho et al. 2020 (DDPM, arXiv:2006.11239) with the refinements of Dhariwal &
Nichol 2021 (ADM, arXiv:2105.05233): residual blocks whose GroupNorm is modulated by the
timestep embedding (scale-shift, "AdaGN"), self-attention at low resolution, zero-initialised
output convolutions so every residual branch starts as the identity. Text conditioning follows
Rombach et al. 2022 (Latent/Stable Diffusion, arXiv:2112.10752): cross-attention to a token
sequence `context` (B, L, Dc) inside the attention blocks, plus an optional pooled vector added to
the timestep embedding (as in Imagen, arXiv:2205.11487).

Plan for video (chapters 03-08), so the U-Net never has to be rewritten:
* `forward` accepts video (B, C, T, H, W): frames are folded into the batch, (B*T, C, H, W), every
  spatial block runs per frame, and the block sees `num_frames=T` so it can unfold when it needs to.
* Every ResBlock and AttentionBlock has a unique `name` ("down1_res0", "mid_attn", "up2_attn1"...).
  `insertion_points()` lists them with their channel count; `add_temporal_layers(factory)` puts
  `factory(name, channels)` into `self.temporal[name]`, which then runs right after that block as
  `layer(h, emb=emb, num_frames=T)` on h: (B*T, C, H, W). Make-A-Video (ch04) inserts
  identity-initialised temporal convs/attention there into a frozen image model; Video LDM (ch06)
  inserts alpha-mixed ones; VDM's factorised space-time U-Net (ch03) uses the same points.
* For plain images num_frames is 1 and temporal layers should act as the identity.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from minivid.ops import attention, timestep_embedding


@dataclass
class UNet2DConfig:
    in_channels: int = 3
    out_channels: int = 3
    channels: int = 32                               # width at full resolution
    channel_mult: tuple[int, ...] = (1, 2, 2)        # one entry per resolution level (each halves H, W)
    num_res_blocks: int = 1                          # per level on the way down (up: one more)
    attn_levels: tuple[int, ...] = (2,)              # levels with attention (0 = full resolution)
    mid_attention: bool = True
    head_dim: int = 32                               # attention heads = channels // head_dim
    groups: int = 8                                  # GroupNorm groups
    dropout: float = 0.0
    context_dim: int | None = None                   # text tokens width Dc -> cross-attention
    pooled_dim: int | None = None                    # pooled text vector width -> added to the time embedding
    extra: dict = field(default_factory=dict)        # free-form notes, e.g. the preset name

    def __post_init__(self):
        for c in self.channel_mult:
            if (self.channels * c) % self.groups:
                raise ValueError(f"channels*mult ({self.channels}*{c}) must divide into groups={self.groups}")
        if any(not 0 <= lv < len(self.channel_mult) for lv in self.attn_levels):
            raise ValueError(f"attn_levels {self.attn_levels} must index channel_mult (0..{len(self.channel_mult) - 1})")


UNET2D_PRESETS = {
    "unet2d-tiny": UNet2DConfig(channels=16, channel_mult=(1, 2), attn_levels=(1,), head_dim=16),
    "unet2d-small": UNet2DConfig(channels=32, channel_mult=(1, 2, 2), attn_levels=(2,)),
    "unet2d-base": UNet2DConfig(channels=64, channel_mult=(1, 2, 2), num_res_blocks=2, attn_levels=(1, 2)),
}


def unet2d_config(name: str, **overrides) -> UNet2DConfig:
    """A named preset, with field overrides: unet2d_config("unet2d-small", context_dim=64)."""
    if name not in UNET2D_PRESETS:
        raise ValueError(f"unknown U-Net preset {name!r}; choose one of {sorted(UNET2D_PRESETS)}")
    return replace(UNET2D_PRESETS[name], extra={"preset": name}, **overrides)


def zero_module(m: nn.Module) -> nn.Module:
    """Zero every parameter: a residual branch that starts as the identity (ADM)."""
    for p in m.parameters():
        nn.init.zeros_(p)
    return m


class ResBlock(nn.Module):
    """GN-SiLU-conv, then GN modulated by the embedding (scale, shift), SiLU, dropout, zero-init conv; plus skip."""

    def __init__(self, name: str, cin: int, cout: int, emb_dim: int, groups: int, dropout: float):
        super().__init__()
        self.name, self.channels = name, cout
        self.norm1, self.conv1 = nn.GroupNorm(groups, cin), nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * cout)
        self.norm2, self.drop = nn.GroupNorm(groups, cout), nn.Dropout(dropout)
        self.conv2 = zero_module(nn.Conv2d(cout, cout, 3, padding=1))
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x, emb, **_):
        """x: (N, Cin, H, W), emb: (N, E) -> (N, Cout, H, W); N = B*T for video."""
        h = self.conv1(F.silu(self.norm1(x)))                      # (N, Cout, H, W)
        scale, shift = self.emb(F.silu(emb))[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(self.drop(F.silu(h)))
        return self.skip(x) + h


class AttentionBlock(nn.Module):
    """Self-attention over the H*W positions, then (if context_dim) cross-attention to text tokens."""

    def __init__(self, name: str, channels: int, head_dim: int, groups: int, context_dim: int | None):
        super().__init__()
        self.name, self.channels = name, channels
        self.heads = max(1, channels // head_dim)
        self.norm = nn.GroupNorm(groups, channels)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj = zero_module(nn.Linear(channels, channels))
        self.context_dim = context_dim
        if context_dim is not None:
            self.norm_x = nn.LayerNorm(channels)
            self.q = nn.Linear(channels, channels)
            self.kv = nn.Linear(context_dim, 2 * channels)
            self.proj_x = zero_module(nn.Linear(channels, channels, bias=False))   # all-masked text == no text

    def _heads(self, z):                                            # (N, L, C) -> (N, heads, L, C/heads)
        N, L, C = z.shape
        return z.reshape(N, L, self.heads, C // self.heads).transpose(1, 2)

    def forward(self, x, emb=None, context=None, context_mask=None, **_):
        """x: (N, C, H, W); context: (N, L, Dc) or None; context_mask: (N, L) bool (True = real token)."""
        N, C, H, W = x.shape
        tok = self.norm(x).flatten(2).transpose(1, 2)              # (N, HW, C)
        q, k, v = (self._heads(z) for z in self.qkv(tok).chunk(3, dim=-1))
        a = attention(q, k, v).transpose(1, 2).reshape(N, H * W, C)
        h = x.flatten(2).transpose(1, 2) + self.proj(a)            # (N, HW, C)
        if self.context_dim is not None and context is not None:
            if context.dim() != 3 or context.shape[0] != N or context.shape[2] != self.context_dim:
                raise ValueError(f"context must be (N={N}, L, {self.context_dim}), got {tuple(context.shape)}")
            q = self._heads(self.q(self.norm_x(h)))
            k, v = (self._heads(z) for z in self.kv(context).chunk(2, dim=-1))
            mask = None if context_mask is None else context_mask.bool()[:, None, None, :]   # (N, 1, 1, L)
            a = attention(q, k, v, mask=mask).transpose(1, 2).reshape(N, H * W, C)
            h = h + self.proj_x(a)
        return h.transpose(1, 2).reshape(N, C, H, W)


class Downsample(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, stride=2, padding=1)

    def forward(self, x):                                           # (N, C, H, W) -> (N, C, H/2, W/2)
        return self.conv(x)


class Upsample(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x):                                           # (N, C, H, W) -> (N, C, 2H, 2W)
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class UNet2D(nn.Module):
    """model(x_t, t, context=None, context_mask=None, pooled=None) -> prediction of x_t's shape."""

    def __init__(self, cfg: UNet2DConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or UNet2DConfig()
        ch0, E = cfg.channels, 4 * cfg.channels
        self.time_mlp = nn.Sequential(nn.Linear(ch0, E), nn.SiLU(), nn.Linear(E, E))
        self.pooled_proj = nn.Linear(cfg.pooled_dim, E) if cfg.pooled_dim else None
        self.stem = nn.Conv2d(cfg.in_channels, ch0, 3, padding=1)
        res = lambda n, a, b: ResBlock(n, a, b, E, cfg.groups, cfg.dropout)  # noqa: E731
        attn = lambda n, c: AttentionBlock(n, c, cfg.head_dim, cfg.groups, cfg.context_dim)  # noqa: E731

        self.down, skips, ch = nn.ModuleList(), [ch0], ch0
        for lv, mult in enumerate(cfg.channel_mult):
            for j in range(cfg.num_res_blocks):
                unit = [res(f"down{lv}_res{j}", ch, ch0 * mult)]
                ch = ch0 * mult
                if lv in cfg.attn_levels:
                    unit.append(attn(f"down{lv}_attn{j}", ch))
                self.down.append(nn.ModuleList(unit))
                skips.append(ch)
            if lv < len(cfg.channel_mult) - 1:
                self.down.append(Downsample(ch))
                skips.append(ch)
        self.mid = nn.ModuleList([res("mid_res0", ch, ch)] + ([attn("mid_attn", ch)] if cfg.mid_attention else [])
                                 + [res("mid_res1", ch, ch)])
        self.up = nn.ModuleList()
        for lv, mult in reversed(list(enumerate(cfg.channel_mult))):
            for j in range(cfg.num_res_blocks + 1):
                unit = [res(f"up{lv}_res{j}", ch + skips.pop(), ch0 * mult)]
                ch = ch0 * mult
                if lv in cfg.attn_levels:
                    unit.append(attn(f"up{lv}_attn{j}", ch))
                self.up.append(nn.ModuleList(unit))
            if lv > 0:
                self.up.append(Upsample(ch))
        self.out = nn.Sequential(nn.GroupNorm(cfg.groups, ch), nn.SiLU(),
                                 zero_module(nn.Conv2d(ch, cfg.out_channels, 3, padding=1)))
        self.temporal = nn.ModuleDict()                  # name -> temporal layer (chapters 03-06)
        self.downsample_factor = 2 ** (len(cfg.channel_mult) - 1)

    # ------------------------------------------------------------------ temporal hooks
    def blocks(self):
        """Every ResBlock/AttentionBlock in forward order."""
        for unit in [*self.down, self.mid, *self.up]:
            if isinstance(unit, nn.ModuleList):
                yield from unit

    def insertion_points(self) -> dict[str, int]:
        """{block name: channels} of the places a temporal layer can follow."""
        return {b.name: b.channels for b in self.blocks()}

    def add_temporal_layers(self, factory: Callable[[str, int], nn.Module], where=None) -> list[str]:
        """Insert `factory(name, channels)` after each block in `where` (default: all); returns the names."""
        points = self.insertion_points()
        names = list(points) if where is None else list(where)
        for n in names:
            if n not in points:
                raise ValueError(f"unknown insertion point {n!r}; choose from {list(points)}")
            self.temporal[n] = factory(n, points[n])
        return names

    def _block(self, blk, h, emb, context, context_mask, num_frames):
        h = blk(h, emb=emb, context=context, context_mask=context_mask)
        if blk.name in self.temporal:
            h = self.temporal[blk.name](h, emb=emb, num_frames=num_frames)
        return h

    # ------------------------------------------------------------------ forward
    def forward(self, x, t, context=None, context_mask=None, pooled=None):
        """x: (B, C, H, W) or video (B, C, T, H, W); t: (B,) long (or (B, T) per frame for video);
        context: (B, L, Dc); context_mask: (B, L) bool; pooled: (B, Dp). Returns x's shape.
        """
        video = x.dim() == 5
        if x.dim() not in (4, 5) or x.shape[1] != self.cfg.in_channels:
            raise ValueError(f"x must be (B, {self.cfg.in_channels}, H, W) or (B, {self.cfg.in_channels}, T, H, W), "
                             f"got {tuple(x.shape)}")
        B, Tf = x.shape[0], (x.shape[2] if video else 1)
        H, W = x.shape[-2:]
        if H % self.downsample_factor or W % self.downsample_factor:
            raise ValueError(f"H, W must be divisible by {self.downsample_factor}, got {H}x{W}")
        t = torch.as_tensor(t, device=x.device)
        if t.shape not in ((B,), (B, Tf)):
            raise ValueError(f"t must be (B,) = ({B},){' or (B, T)' if video else ''}, got {tuple(t.shape)}")
        if video:
            x = x.transpose(1, 2).reshape(B * Tf, x.shape[1], H, W)       # (B*T, C, H, W)
            t = t.reshape(B, -1).expand(B, Tf).reshape(-1)                 # (B*T,)
            rep = lambda z: None if z is None else z.repeat_interleave(Tf, 0)  # noqa: E731
            context, context_mask, pooled = rep(context), rep(context_mask), rep(pooled)
        emb = self.time_mlp(timestep_embedding(t, self.cfg.channels).to(x.dtype))    # (N, E)
        if pooled is not None:
            if self.pooled_proj is None:
                raise ValueError("pooled given but the config has pooled_dim=None")
            emb = emb + self.pooled_proj(pooled)
        if context is not None and self.cfg.context_dim is None:
            raise ValueError("context given but the config has context_dim=None (no cross-attention)")
        args = (emb, context, context_mask, Tf)

        h = self.stem(x)                                                    # (N, ch0, H, W)
        hs = [h]
        for unit in self.down:
            if isinstance(unit, Downsample):
                h = unit(h)
            else:
                for blk in unit:
                    h = self._block(blk, h, *args)
            hs.append(h)
        for blk in self.mid:                                                # (N, C, H/f, W/f)
            h = self._block(blk, h, *args)
        for unit in self.up:
            if isinstance(unit, Upsample):
                h = unit(h)
            else:
                h = torch.cat([h, hs.pop()], dim=1)                         # skip connection
                for blk in unit:
                    h = self._block(blk, h, *args)
        out = self.out(h)                                                   # (N, C_out, H, W)
        if video:
            out = out.reshape(B, Tf, -1, H, W).transpose(1, 2)              # (B, C_out, T, H, W)
        return out
