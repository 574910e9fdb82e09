"""The factorised space-time 3-D U-Net of Video Diffusion Models (Ho et al. 2022, arXiv:2204.03458).

The chapter-01/02 U-Net (minivid.models.unet2d) becomes a video model in three moves:

* every 3x3 convolution becomes a *factorised* space-time convolution: a per-frame (1,3,3)
  spatial conv followed by a (3,1,1) temporal conv (`minivid.ops.FactorizedConv3d`, temporal
  part initialised to the identity). `conv="full"` swaps in a dense 3x3x3 Conv3d (the costly
  baseline the chapter measures); `conv="spatial"` keeps only the per-frame conv.
* after each spatial self-attention (+ text cross-attention, per frame, reused from unet2d)
  comes a *temporal* self-attention: every pixel position attends across the T frames, with a
  learned relative-position bias (T5 buckets, `minivid.ops.RelativePositionBias`).
* **joint image-video training**: an item flagged `image=True` is T independent images, not a
  clip. Its temporal attention gets the identity mask (a frame sees only itself) and its
  temporal convolution is skipped, so nothing flows between its frames (GroupNorm and
  LayerNorm act per frame too). Image-text pairs, plentiful, can then train the same weights
  as the scarce video-text pairs.

Inside the network activations are kept with frames folded into the batch, (B*T, C, H, W);
the temporal layers unfold them. Conditioning: `t` (B,) or (B, T); `context` (B, L, Dc) for one
caption per item or (B, T, L, Dc) for one caption per frame (image items); `context_mask`
(B, L) / (B, T, L) bool, True = real token (all False = no text, for classifier-free guidance).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import nn

from minivid.models.unet2d import AttentionBlock, Downsample, Upsample, zero_module
from minivid.ops import FactorizedConv3d, RelativePositionBias, attention, timestep_embedding

CONV_KINDS = ("factorized", "full", "spatial")


@dataclass
class UNet3DConfig:
    in_channels: int = 3
    out_channels: int = 3
    channels: int = 32                              # width at full resolution
    channel_mult: tuple[int, ...] = (1, 2)          # one entry per resolution level (each halves H, W)
    num_res_blocks: int = 1                         # per level on the way down (up: one more)
    attn_levels: tuple[int, ...] = (1,)             # levels with spatial (+ cross) attention
    temporal_attn_levels: tuple[int, ...] = (0, 1)  # levels with temporal attention
    mid_attention: bool = True
    head_dim: int = 32                              # attention heads = channels // head_dim
    groups: int = 8
    dropout: float = 0.0
    conv: str = "factorized"                        # "factorized" (1,3,3)+(3,1,1) | "full" 3x3x3 | "spatial"
    rel_pos_buckets: int = 16
    rel_pos_max_distance: int = 32
    context_dim: int | None = None                  # text token width -> cross-attention
    pooled_dim: int | None = None                   # pooled text vector -> added to the time embedding
    frame_embedding: bool = False                   # add each clip frame's index to its time embedding (zero init)
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.conv not in CONV_KINDS:
            raise ValueError(f"conv must be one of {CONV_KINDS}, got {self.conv!r}")
        for c in self.channel_mult:
            if (self.channels * c) % self.groups:
                raise ValueError(f"channels*mult ({self.channels}*{c}) must divide into groups={self.groups}")
        for name in ("attn_levels", "temporal_attn_levels"):
            if any(not 0 <= lv < len(self.channel_mult) for lv in getattr(self, name)):
                raise ValueError(f"{name} {getattr(self, name)} must index channel_mult")


UNET3D_PRESETS = {
    "unet3d-tiny": UNet3DConfig(channels=16, channel_mult=(1, 2), attn_levels=(1,), temporal_attn_levels=(1,),
                                head_dim=16),
    "unet3d-small": UNet3DConfig(channels=32, channel_mult=(1, 2), attn_levels=(1,), temporal_attn_levels=(0, 1)),
    "unet3d-base": UNet3DConfig(channels=48, channel_mult=(1, 2, 2), attn_levels=(1, 2), head_dim=24,
                                temporal_attn_levels=(0, 1, 2)),
}


def unet3d_config(name: str, **overrides) -> UNet3DConfig:
    """A named preset with field overrides: unet3d_config("unet3d-small", context_dim=64, conv="full")."""
    if name not in UNET3D_PRESETS:
        raise ValueError(f"unknown 3-D U-Net preset {name!r}; choose one of {sorted(UNET3D_PRESETS)}")
    return replace(UNET3D_PRESETS[name], extra={"preset": name}, **overrides)


def unfold_frames(h: torch.Tensor, T: int) -> torch.Tensor:
    """(B*T, C, H, W) -> (B, C, T, H, W)."""
    N, C, H, W = h.shape
    return h.reshape(N // T, T, C, H, W).transpose(1, 2)


def fold_frames(x: torch.Tensor) -> torch.Tensor:
    """(B, C, T, H, W) -> (B*T, C, H, W)."""
    B, C, T, H, W = x.shape
    return x.transpose(1, 2).reshape(B * T, C, H, W)


def temporal_attention_mask(image: torch.Tensor | None, T: int) -> torch.Tensor | None:
    """Which frame may attend to which: (B, T, T) bool, True = may attend; None = all (no images).

    image: (B,) bool, True where the item is T independent images. A clip's frames all see each
    other; an image item gets the identity, so frame i sees only frame i.
    """
    if image is None:
        return None
    ### BEGIN SOLUTION  # exercise 3.3: the image-batch mask for temporal attention
    eye = torch.eye(T, dtype=torch.bool, device=image.device)
    return eye | ~image.bool()[:, None, None]                             # (B, T, T)
    ### END SOLUTION


class SpaceTimeConv(nn.Module):
    """A 3x3 conv for video, per `kind`: "factorized" (1,3,3) then (3,1,1) | "full" 3x3x3 | "spatial" (1,3,3).

    For image items the temporal part is left out ("full": only the kernel's centre time slice),
    so independent images never mix.
    """

    def __init__(self, cin: int, cout: int, kind: str = "factorized"):
        super().__init__()
        self.kind = kind
        if kind == "full":
            self.conv = nn.Conv3d(cin, cout, 3, padding=1)
        elif kind == "spatial":
            self.conv = nn.Conv3d(cin, cout, (1, 3, 3), padding=(0, 1, 1))
        else:  # the temporal conv starts as the identity: the block begins as a per-frame 2-D conv
            self.conv = FactorizedConv3d(cin, cout, 3, identity_init=True)

    def forward(self, x: torch.Tensor, image: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B, Cin, T, H, W); image: (B,) bool or None -> (B, Cout, T, H, W)."""
        if self.kind == "full":
            w = self.conv.weight
            y = self.conv(x)
            if image is not None and image.any():
                y2d = F.conv3d(x, w[:, :, 1:2], self.conv.bias, padding=(0, 1, 1))   # centre slice only
                y = torch.where(image[:, None, None, None, None], y2d, y)
            return y
        if self.kind == "spatial":
            return self.conv(x)
        ### BEGIN SOLUTION  # exercise 3.1: the factorized space-time conv (no temporal mixing for images)
        y = self.conv.spatial(x)                                          # per frame: (B, Cout, T, H, W)
        if image is None or not image.all():
            yt = self.conv.temporal(y)                                    # across frames, per pixel
            y = yt if image is None else torch.where(image[:, None, None, None, None], y, yt)
        return y
        ### END SOLUTION


class VideoResBlock(nn.Module):
    """ResBlock of unet2d with space-time convs: GN-SiLU-conv, AdaGN(emb), SiLU, zero-init conv; plus skip.

    GroupNorm runs per frame (on (B*T, C, H, W)), so statistics never mix frames.
    """

    def __init__(self, name: str, cin: int, cout: int, emb_dim: int, groups: int, dropout: float, conv: str):
        super().__init__()
        self.name, self.channels = name, cout
        self.norm1, self.conv1 = nn.GroupNorm(groups, cin), SpaceTimeConv(cin, cout, conv)
        self.emb = nn.Linear(emb_dim, 2 * cout)
        self.norm2, self.drop = nn.GroupNorm(groups, cout), nn.Dropout(dropout)
        self.conv2 = SpaceTimeConv(cout, cout, conv)
        zero_module(self.conv2.conv.spatial if conv == "factorized" else self.conv2.conv)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x, emb, num_frames: int, image=None, **_):
        """x: (B*T, Cin, H, W), emb: (B*T, E) -> (B*T, Cout, H, W)."""
        T = num_frames
        h = fold_frames(self.conv1(unfold_frames(F.silu(self.norm1(x)), T), image))
        scale, shift = self.emb(F.silu(emb))[:, :, None, None].chunk(2, dim=1)
        h = F.silu(self.norm2(h) * (1 + scale) + shift)
        h = fold_frames(self.conv2(unfold_frames(self.drop(h), T), image))
        return self.skip(x) + h


class TemporalAttention(nn.Module):
    """Self-attention across frames at every pixel, with a relative position bias; zero-init output."""

    def __init__(self, name: str, channels: int, head_dim: int, buckets: int, max_distance: int):
        super().__init__()
        self.name, self.channels = name, channels
        self.heads = max(1, channels // head_dim)
        self.norm = nn.LayerNorm(channels)                                 # per token = per frame and pixel
        self.qkv = nn.Linear(channels, 3 * channels)
        self.rel_pos = RelativePositionBias(self.heads, buckets, max_distance)
        self.proj = zero_module(nn.Linear(channels, channels))

    def forward(self, x, num_frames: int, image=None, **_):
        """x: (B*T, C, H, W); image: (B,) bool or None -> (B*T, C, H, W)."""
        N, C, H, W = x.shape
        T, B = num_frames, N // num_frames
        ### BEGIN SOLUTION  # exercise 3.2: the temporal attention reshape (every pixel, a sequence of T frames)
        tok = x.reshape(B, T, C, H, W).permute(0, 3, 4, 1, 2).reshape(B * H * W, T, C)
        ### END SOLUTION
        q, k, v = self.qkv(self.norm(tok)).reshape(B * H * W, T, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        mask = temporal_attention_mask(image, T)                           # (B, T, T) or None
        if mask is not None:
            mask = mask[:, None, None].expand(B, H * W, 1, T, T).reshape(B * H * W, 1, T, T)
        a = attention(q, k, v, bias=self.rel_pos(T, T)[None], mask=mask)   # (B*H*W, heads, T, C/heads)
        out = tok + self.proj(a.transpose(1, 2).reshape(B * H * W, T, C))
        return out.reshape(B, H, W, T, C).permute(0, 3, 4, 1, 2).reshape(N, C, H, W)


class UNet3D(nn.Module):
    """model(x_t, t, context=None, context_mask=None, pooled=None, image=None) -> x_t's shape (B, C, T, H, W)."""

    def __init__(self, cfg: UNet3DConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or UNet3DConfig()
        ch0, E = cfg.channels, 4 * cfg.channels
        self.time_mlp = nn.Sequential(nn.Linear(ch0, E), nn.SiLU(), nn.Linear(E, E))
        self.pooled_proj = nn.Linear(cfg.pooled_dim, E) if cfg.pooled_dim else None
        # absolute frame position: zero-init, so a fresh model is as if it were absent
        self.frame_proj = zero_module(nn.Linear(ch0, E)) if cfg.frame_embedding else None
        self.stem = nn.Conv2d(cfg.in_channels, ch0, 3, padding=1)

        def unit(name, lv, cin, cout, with_attn=True):
            blocks = [VideoResBlock(f"{name}_res", cin, cout, E, cfg.groups, cfg.dropout, cfg.conv)]
            if with_attn and lv in cfg.attn_levels:
                blocks.append(AttentionBlock(f"{name}_attn", cout, cfg.head_dim, cfg.groups, cfg.context_dim))
            if with_attn and lv in cfg.temporal_attn_levels:
                blocks.append(TemporalAttention(f"{name}_tattn", cout, cfg.head_dim, cfg.rel_pos_buckets,
                                                cfg.rel_pos_max_distance))
            return nn.ModuleList(blocks)

        self.down, skips, ch = nn.ModuleList(), [ch0], ch0
        for lv, mult in enumerate(cfg.channel_mult):
            for j in range(cfg.num_res_blocks):
                self.down.append(unit(f"down{lv}_{j}", lv, ch, ch0 * mult))
                ch = ch0 * mult
                skips.append(ch)
            if lv < len(cfg.channel_mult) - 1:
                self.down.append(Downsample(ch))
                skips.append(ch)
        top = len(cfg.channel_mult) - 1
        self.mid = unit("mid0", top if cfg.mid_attention else -1, ch, ch)
        self.mid.extend(unit("mid1", top, ch, ch, with_attn=False))
        self.up = nn.ModuleList()
        for lv, mult in reversed(list(enumerate(cfg.channel_mult))):
            for j in range(cfg.num_res_blocks + 1):
                self.up.append(unit(f"up{lv}_{j}", lv, ch + skips.pop(), ch0 * mult))
                ch = ch0 * mult
            if lv > 0:
                self.up.append(Upsample(ch))
        self.out_norm = nn.GroupNorm(cfg.groups, ch)
        self.out_conv = zero_module(nn.Conv2d(ch, cfg.out_channels, 3, padding=1))
        self.downsample_factor = 2 ** (len(cfg.channel_mult) - 1)

    def blocks(self):
        """Every residual/attention block in forward order."""
        for u in [*self.down, self.mid, *self.up]:
            if isinstance(u, nn.ModuleList):
                yield from u

    def _per_frame(self, z, name, B, T, rank):
        """Conditioning given per item (B, ...) or per frame (B, T, ...) -> per frame folded (B*T, ...)."""
        if z is None:
            return None
        if z.dim() == rank + 1 and z.shape[:2] == (B, T):
            return z.reshape(B * T, *z.shape[2:])
        if z.dim() == rank and z.shape[0] == B:
            return z.repeat_interleave(T, 0)
        raise ValueError(f"{name} must be per item (B={B}, ...) or per frame (B={B}, T={T}, ...) with "
                         f"{rank} or {rank + 1} dims, got {tuple(z.shape)}")

    def forward(self, x, t, context=None, context_mask=None, pooled=None, image=None):
        """x: (B, C, T, H, W); t: (B,) or (B, T) long; context: (B, L, Dc) or (B, T, L, Dc);
        context_mask: (B, L) or (B, T, L) bool; pooled: (B, Dp) or (B, T, Dp); image: (B,) bool
        (True = the T frames are independent images). Returns (B, C_out, T, H, W).
        """
        cfg = self.cfg
        if x.dim() != 5 or x.shape[1] != cfg.in_channels:
            raise ValueError(f"x must be video (B, {cfg.in_channels}, T, H, W), got {tuple(x.shape)}")
        B, _, T, H, W = x.shape
        if H % self.downsample_factor or W % self.downsample_factor:
            raise ValueError(f"H, W must be divisible by {self.downsample_factor}, got {H}x{W}")
        t = torch.as_tensor(t, device=x.device)
        if t.shape not in ((B,), (B, T)):
            raise ValueError(f"t must be (B,) = ({B},) or (B, T) = ({B}, {T}), got {tuple(t.shape)}")
        if image is not None:
            image = torch.as_tensor(image, device=x.device).bool()
            if image.shape != (B,):
                raise ValueError(f"image must be (B,) = ({B},) bool, got {tuple(image.shape)}")
        if context is not None and cfg.context_dim is None:
            raise ValueError("context given but the config has context_dim=None (no cross-attention)")
        context = self._per_frame(context, "context", B, T, 3)
        context_mask = self._per_frame(context_mask, "context_mask", B, T, 2)
        pooled = self._per_frame(pooled, "pooled", B, T, 2)
        t = t.reshape(B, -1).expand(B, T).reshape(B * T)                     # (B*T,)
        emb = self.time_mlp(timestep_embedding(t, cfg.channels).to(x.dtype))  # (B*T, E)
        if pooled is not None:
            if self.pooled_proj is None:
                raise ValueError("pooled given but the config has pooled_dim=None")
            emb = emb + self.pooled_proj(pooled)
        if self.frame_proj is not None:              # clips only: an image item's frames have no order
            idx = torch.arange(T, device=x.device).repeat(B)                   # (B*T,)
            fe = self.frame_proj(timestep_embedding(idx, cfg.channels).to(x.dtype))
            if image is not None:
                fe = fe * (~image).repeat_interleave(T).to(fe.dtype)[:, None]
            emb = emb + fe
        kw = dict(emb=emb, context=context, context_mask=context_mask, num_frames=T, image=image)

        h = self.stem(fold_frames(x))                                         # (B*T, ch0, H, W)
        hs = [h]
        for u in self.down:
            if isinstance(u, Downsample):
                h = u(h)
            else:
                for blk in u:
                    h = blk(h, **kw)
            hs.append(h)
        for blk in self.mid:
            h = blk(h, **kw)
        for u in self.up:
            if isinstance(u, Upsample):
                h = u(h)
            else:
                h = torch.cat([h, hs.pop()], dim=1)
                for blk in u:
                    h = blk(h, **kw)
        out = self.out_conv(F.silu(self.out_norm(h)))                         # (B*T, C_out, H, W)
        return unfold_frames(out, T)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def model_flops(model: UNet3D, B: int = 1, T: int = 8, size: int = 16, context_len: int = 8) -> int:
    """FLOPs of one forward pass on a (B, C, T, size, size) clip, counted by torch's FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode

    cfg = model.cfg
    x = torch.zeros(B, cfg.in_channels, T, size, size)
    kw = {}
    if cfg.context_dim:
        kw["context"] = torch.zeros(B, context_len, cfg.context_dim)
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        model(x, torch.zeros(B, dtype=torch.long), **kw)
    return int(fc.get_total_flops())


__all__ = ["CONV_KINDS", "UNet3DConfig", "UNET3D_PRESETS", "unet3d_config", "UNet3D", "SpaceTimeConv",
           "VideoResBlock", "TemporalAttention", "temporal_attention_mask", "fold_frames", "unfold_frames",
           "count_params", "model_flops"]
