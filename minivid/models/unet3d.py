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

**Cascades** (Imagen Video, arXiv:2210.02303; Ho et al. 2021, arXiv:2106.15282): a super-resolution stage
is told how much noise its conditioning clip was augmented with. `aug_embedding=True` adds a zero-initialised
projection of that level's timestep embedding to the block embedding (`forward(..., aug_t=levels)`), so a
fresh model is as if it were absent; with the flag off the model and its state dict are unchanged.

The temporal layers live in `minivid.models.temporal` (shared with chapters 04 and 06), the
blocks and the U-Net skeleton in `minivid.models.blocks` (shared with the 2-D U-Net).

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

from minivid.models.blocks import AttentionBlock, ResBlock, UNetSkeleton, fold_frames, unfold_frames, zero_module
from minivid.models.temporal import CONV_KINDS, SpaceTimeConv, TemporalAttention
from minivid.ops import timestep_embedding


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
    aug_embedding: bool = False                     # add the conditioning-augmentation level's embedding (zero init)
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


class UNet3D(UNetSkeleton):
    """model(x_t, t, context=None, context_mask=None, pooled=None, image=None) -> x_t's shape (B, C, T, H, W)."""

    def __init__(self, cfg: UNet3DConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or UNet3DConfig()
        E = 4 * cfg.channels
        conv = lambda a, b: SpaceTimeConv(a, b, cfg.conv)  # noqa: E731

        def unit(name, lv, cin, cout, part):
            blocks = [ResBlock(f"{name}_res", cin, cout, E, cfg.groups, cfg.dropout, conv=conv)]
            if part == "mid1" or (part == "mid0" and not cfg.mid_attention):
                return blocks
            if lv in cfg.attn_levels:
                blocks.append(AttentionBlock(f"{name}_attn", cout, cfg.head_dim, cfg.groups, cfg.context_dim))
            if lv in cfg.temporal_attn_levels:
                blocks.append(TemporalAttention(f"{name}_tattn", cout, cfg.head_dim, cfg.rel_pos_buckets,
                                                cfg.rel_pos_max_distance))
            return blocks

        ch = self._build(cfg, unit, frame_embedding=cfg.frame_embedding)    # frame index: clips only, zero init
        self.out_norm = nn.GroupNorm(cfg.groups, ch)
        self.out_conv = zero_module(nn.Conv2d(ch, cfg.out_channels, 3, padding=1))
        self.aug_proj = zero_module(nn.Linear(cfg.channels, E)) if cfg.aug_embedding else None   # zero init

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

    def forward(self, x, t, context=None, context_mask=None, pooled=None, image=None, aug_t=None):
        """x: (B, C, T, H, W); t: (B,) or (B, T) long; context: (B, L, Dc) or (B, T, L, Dc);
        context_mask: (B, L) or (B, T, L) bool; pooled: (B, Dp) or (B, T, Dp); image: (B,) bool
        (True = the T frames are independent images); aug_t: (B,) the conditioning-augmentation level
        (needed exactly when the config has aug_embedding). Returns (B, C_out, T, H, W).
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
        if (aug_t is not None) != cfg.aug_embedding:
            raise ValueError("aug_t (the conditioning-augmentation level, (B,)) must be given exactly when the "
                             f"config has aug_embedding=True (it has {cfg.aug_embedding})")
        if aug_t is not None:
            aug_t = torch.as_tensor(aug_t, device=x.device)
            if aug_t.shape != (B,):
                raise ValueError(f"aug_t must be (B,) = ({B},), got {tuple(aug_t.shape)}")
        if context is not None and cfg.context_dim is None:
            raise ValueError("context given but the config has context_dim=None (no cross-attention)")
        context = self._per_frame(context, "context", B, T, 3)
        context_mask = self._per_frame(context_mask, "context_mask", B, T, 2)
        pooled = self._per_frame(pooled, "pooled", B, T, 2)
        t = t.reshape(B, -1).expand(B, T).reshape(B * T)                     # (B*T,)
        emb = self._embed(t, pooled, x.dtype)                                 # (B*T, E)
        if self.frame_proj is not None:              # clips only: an image item's frames have no order
            idx = torch.arange(T, device=x.device).repeat(B)                   # (B*T,)
            fe = self.frame_proj(timestep_embedding(idx, cfg.channels).to(x.dtype))
            if image is not None:
                fe = fe * (~image).repeat_interleave(T).to(fe.dtype)[:, None]
            emb = emb + fe
        if self.aug_proj is not None:                # the level the conditioning clip was noised to
            emb = emb + self.aug_proj(timestep_embedding(aug_t.repeat_interleave(T), cfg.channels).to(x.dtype))
        h = self._trunk(self.stem(fold_frames(x)), emb=emb, context=context, context_mask=context_mask,
                        num_frames=T, image=image)                            # (B*T, ch, H, W)
        out = self.out_conv(F.silu(self.out_norm(h)))                         # (B*T, C_out, H, W)
        return unfold_frames(out, T)


def model_flops(model: UNet3D, B: int = 1, T: int = 8, size: int = 16, context_len: int = 8) -> int:
    """FLOPs of one forward pass on a (B, C, T, size, size) clip, counted by torch's FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode

    cfg = model.cfg
    x = torch.zeros(B, cfg.in_channels, T, size, size)
    kw = {}
    if cfg.context_dim:
        kw["context"] = torch.zeros(B, context_len, cfg.context_dim)
    if cfg.aug_embedding:
        kw["aug_t"] = torch.zeros(B, dtype=torch.long)
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        model(x, torch.zeros(B, dtype=torch.long), **kw)
    return int(fc.get_total_flops())


__all__ = ["CONV_KINDS", "UNet3DConfig", "UNET3D_PRESETS", "unet3d_config", "UNet3D", "model_flops"]
