"""The U-Net parts every denoiser of the course shares: residual and attention blocks, resampling, the skeleton.

After Ho et al. 2020 (DDPM, arXiv:2006.11239) and Dhariwal & Nichol 2021 (ADM, arXiv:2105.05233):
residual blocks whose GroupNorm is modulated by the timestep embedding (scale-shift, "AdaGN"),
self-attention at low resolution, zero-initialised output convolutions so every residual branch
starts as the identity. Text conditioning after Rombach et al. 2022 (arXiv:2112.10752):
cross-attention to a token sequence inside the attention blocks.

`UNetSkeleton` holds what the 2-D U-Net (`unet2d.py`) and the 3-D U-Net (`unet3d.py`) have in
common: the levels (down, mid, up with skip connections), the timestep (+ pooled text) embedding,
the forward walk over the blocks, and the *temporal hooks*: `add_temporal_layers(factory)` puts
`factory(name, channels)` after any named block; it then runs as `layer(h, **kw)` on h (B*T, C, H, W)
with kw holding `emb`, `num_frames`, `image`, the text. Make-A-Video (ch04) and Video LDM (ch06) grow
a frozen image model into a video model through these hooks (`minivid.models.temporal`).

Activations are always kept with frames folded into the batch, (B*T, C, H, W); a block that needs
time unfolds them (`unfold_frames`). Blocks take keyword arguments and ignore those they don't use.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from minivid.ops import attention, timestep_embedding


def zero_module(m: nn.Module) -> nn.Module:
    """Zero every parameter: a residual branch that starts as the identity (ADM)."""
    for p in m.parameters():
        nn.init.zeros_(p)
    return m


def unfold_frames(h: torch.Tensor, T: int) -> torch.Tensor:
    """(B*T, C, H, W) -> (B, C, T, H, W)."""
    N, C, H, W = h.shape
    return h.reshape(N // T, T, C, H, W).transpose(1, 2)


def fold_frames(x: torch.Tensor) -> torch.Tensor:
    """(B, C, T, H, W) -> (B*T, C, H, W)."""
    B, C, T, H, W = x.shape
    return x.transpose(1, 2).reshape(B * T, C, H, W)


class ResBlock(nn.Module):
    """GN-SiLU-conv, then GN modulated by the embedding (scale, shift), SiLU, dropout, zero-init conv; plus skip.

    conv: None for 2-D 3x3 convs; or a factory (cin, cout) -> a video conv taking (B, C, T, H, W) and
    `image` (minivid.models.temporal.SpaceTimeConv), whose `zero_init()` zeroes its spatial part. GroupNorm
    always runs per frame, on (B*T, C, H, W), so statistics never mix frames.
    """

    def __init__(self, name: str, cin: int, cout: int, emb_dim: int, groups: int, dropout: float,
                 conv: Callable[[int, int], nn.Module] | None = None):
        super().__init__()
        self.name, self.channels = name, cout
        make = conv or (lambda a, b: nn.Conv2d(a, b, 3, padding=1))
        self.norm1, self.conv1 = nn.GroupNorm(groups, cin), make(cin, cout)
        self.emb = nn.Linear(emb_dim, 2 * cout)
        self.norm2, self.drop = nn.GroupNorm(groups, cout), nn.Dropout(dropout)
        self.conv2 = make(cout, cout)
        zero_module(self.conv2) if conv is None else self.conv2.zero_init()
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    @staticmethod
    def _conv(conv: nn.Module, h: torch.Tensor, num_frames: int, image) -> torch.Tensor:
        if isinstance(conv, nn.Conv2d):                               # per frame (any wrapper of a 2-D conv too)
            return conv(h)
        return fold_frames(conv(unfold_frames(h, num_frames), image))

    def forward(self, x, emb, num_frames: int = 1, image=None, **_):
        """x: (N, Cin, H, W), emb: (N, E) -> (N, Cout, H, W); N = B*T for video."""
        h = self._conv(self.conv1, F.silu(self.norm1(x)), num_frames, image)     # (N, Cout, H, W)
        scale, shift = self.emb(F.silu(emb))[:, :, None, None].chunk(2, dim=1)
        h = F.silu(self.norm2(h) * (1 + scale) + shift)
        h = self._conv(self.conv2, self.drop(h), num_frames, image)
        return self.skip(x) + h


class AttentionBlock(nn.Module):
    """Self-attention over the H*W positions of each frame, then (if context_dim) cross-attention to text tokens."""

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

    def forward(self, x, emb=None, context=None, context_mask=None, **_):
        """x: (N, C, H, W); context: (N, L, Dc) or None; context_mask: (N, L) bool (True = real token)."""
        N, C, H, W = x.shape
        tok = self.norm(x).flatten(2).transpose(1, 2)              # (N, HW, C)
        q, k, v = (split_heads(z, self.heads) for z in self.qkv(tok).chunk(3, dim=-1))
        a = attention(q, k, v).transpose(1, 2).reshape(N, H * W, C)
        h = x.flatten(2).transpose(1, 2) + self.proj(a)            # (N, HW, C)
        if self.context_dim is not None and context is not None:
            h = h + cross_attend(self, h, context, context_mask)
        return h.transpose(1, 2).reshape(N, C, H, W)


def split_heads(z: torch.Tensor, heads: int) -> torch.Tensor:
    """(N, L, C) -> (N, heads, L, C / heads)."""
    N, L, C = z.shape
    return z.reshape(N, L, heads, C // heads).transpose(1, 2)


def cross_attend(m: nn.Module, h: torch.Tensor, context: torch.Tensor, context_mask: torch.Tensor | None):
    """The cross-attention of `AttentionBlock` and `TextCrossAttention` (m holds heads, context_dim, norm_x, q, kv,
    proj_x): h (N, L, C) tokens, context (N, Lc, Dc), context_mask (N, Lc) bool (True = real token) or None ->
    the residual (N, L, C), proj_x(softmax(q k^T / sqrt(d)) v) with queries from h and keys/values from the text."""
    N, L, C = h.shape
    if context.dim() != 3 or context.shape[0] != N or context.shape[2] != m.context_dim:
        raise ValueError(f"context must be (N={N}, L, {m.context_dim}), got {tuple(context.shape)}")
    q = split_heads(m.q(m.norm_x(h)), m.heads)
    k, v = (split_heads(z, m.heads) for z in m.kv(context).chunk(2, dim=-1))
    mask = None if context_mask is None else context_mask.bool()[:, None, None, :]     # (N, 1, 1, Lc)
    return m.proj_x(attention(q, k, v, mask=mask).transpose(1, 2).reshape(N, L, C))


class TextCrossAttention(nn.Module):
    """Cross-attention from every pixel of every frame to its text tokens, zero-initialised output: the identity
    at initialisation. x: (N, C, H, W), context (N, Lc, Dc) -> x + attention; no context: x unchanged.

    The second half of a video transformer block in Stability AI's generative-models (`VideoTransformerBlock`:
    temporal self-attention, then cross-attention to the text), which Video LDM's temporal layers follow: the
    new layers read the prompt's tokens themselves, not only what the frozen image model made of it.
    """

    def __init__(self, name: str, channels: int, head_dim: int, context_dim: int):
        super().__init__()
        self.name, self.channels, self.context_dim = name, channels, context_dim
        self.heads = max(1, channels // head_dim)
        self.norm_x = nn.LayerNorm(channels)
        self.q = nn.Linear(channels, channels)
        self.kv = nn.Linear(context_dim, 2 * channels)
        self.proj_x = zero_module(nn.Linear(channels, channels, bias=False))

    def forward(self, x, context=None, context_mask=None, **_):
        """x: (N, C, H, W); context: (N, Lc, Dc) or None; context_mask: (N, Lc) bool or None -> (N, C, H, W)."""
        if context is None:
            return x
        N, C, H, W = x.shape
        h = x.flatten(2).transpose(1, 2)                                    # (N, HW, C)
        return (h + cross_attend(self, h, context, context_mask)).transpose(1, 2).reshape(N, C, H, W)


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


# unit(name, level, cin, cout, part) -> the blocks of one step; part is "down", "mid0", "mid1" or "up"
UnitFactory = Callable[[str, int, int, int, str], list]


class UNetSkeleton(nn.Module):
    """The levels, embeddings, forward walk and temporal hooks shared by `UNet2D` and `UNet3D`.

    A subclass calls `_build(cfg, unit)` in its __init__ (cfg needs channels, channel_mult,
    num_res_blocks, pooled_dim) and implements its own `forward`, which calls `_embed` and `_trunk`.
    """

    def _build(self, cfg, unit: UnitFactory, frame_embedding: bool = False) -> int:
        """Create time/pooled (/frame) embeddings, stem, down/mid/up; returns the channel count at the output.

        frame_embedding: also `self.frame_proj`, a zero-initialised projection of each frame's index
        (so a fresh model is as if it were absent).
        """
        ch0, E = cfg.channels, 4 * cfg.channels
        self.time_mlp = nn.Sequential(nn.Linear(ch0, E), nn.SiLU(), nn.Linear(E, E))
        self.pooled_proj = nn.Linear(cfg.pooled_dim, E) if cfg.pooled_dim else None
        self.frame_proj = zero_module(nn.Linear(ch0, E)) if frame_embedding else None
        self.stem = nn.Conv2d(cfg.in_channels, ch0, 3, padding=1)
        self.down, skips, ch = nn.ModuleList(), [ch0], ch0
        for lv, mult in enumerate(cfg.channel_mult):
            for j in range(cfg.num_res_blocks):
                self.down.append(nn.ModuleList(unit(f"down{lv}_{j}", lv, ch, ch0 * mult, "down")))
                ch = ch0 * mult
                skips.append(ch)
            if lv < len(cfg.channel_mult) - 1:
                self.down.append(Downsample(ch))
                skips.append(ch)
        top = len(cfg.channel_mult) - 1
        self.mid = nn.ModuleList(unit("mid0", top, ch, ch, "mid0") + unit("mid1", top, ch, ch, "mid1"))
        self.up = nn.ModuleList()
        for lv, mult in reversed(list(enumerate(cfg.channel_mult))):
            for j in range(cfg.num_res_blocks + 1):
                self.up.append(nn.ModuleList(unit(f"up{lv}_{j}", lv, ch + skips.pop(), ch0 * mult, "up")))
                ch = ch0 * mult
            if lv > 0:
                self.up.append(Upsample(ch))
        self.temporal = nn.ModuleDict()                  # block name -> temporal layer run after it
        self.downsample_factor = 2 ** top
        return ch

    # ------------------------------------------------------------------ temporal hooks
    def blocks(self):
        """Every residual/attention block in forward order."""
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

    # ------------------------------------------------------------------ forward parts
    def _embed(self, t: torch.Tensor, pooled: torch.Tensor | None, dtype) -> torch.Tensor:
        """t: (N,), pooled: (N, Dp) or None -> the block embedding (N, E)."""
        emb = self.time_mlp(timestep_embedding(t, self.cfg.channels).to(dtype))
        if pooled is not None:
            if self.pooled_proj is None:
                raise ValueError("pooled given but the config has pooled_dim=None")
            emb = emb + self.pooled_proj(pooled)
        return emb

    def _trunk(self, h: torch.Tensor, **kw) -> torch.Tensor:
        """Down, mid, up with skip connections: (N, ch0, H, W) -> (N, ch_out, H, W)."""
        def run(blk, h):
            h = blk(h, **kw)
            return self.temporal[blk.name](h, **kw) if blk.name in self.temporal else h

        hs = [h]
        for unit in self.down:
            if isinstance(unit, Downsample):
                h = unit(h)
            else:
                for blk in unit:
                    h = run(blk, h)
            hs.append(h)
        for blk in self.mid:                                                # (N, C, H/f, W/f)
            h = run(blk, h)
        for unit in self.up:
            if isinstance(unit, Upsample):
                h = unit(h)
            else:
                h = torch.cat([h, hs.pop()], dim=1)                         # skip connection
                for blk in unit:
                    h = run(blk, h)
        return h


__all__ = ["zero_module", "fold_frames", "unfold_frames", "ResBlock", "AttentionBlock", "Downsample", "Upsample",
           "UNetSkeleton"]
