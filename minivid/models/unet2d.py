"""The 2-D U-Net denoiser that the whole course builds on.

Architecture after Ho et al. 2020 (DDPM, arXiv:2006.11239) with the refinements of Dhariwal &
Nichol 2021 (ADM, arXiv:2105.05233): residual blocks whose GroupNorm is modulated by the
timestep embedding (scale-shift, "AdaGN"), self-attention at low resolution, zero-initialised
output convolutions so every residual branch starts as the identity. Text conditioning follows
Rombach et al. 2022 (Latent/Stable Diffusion, arXiv:2112.10752): cross-attention to a token
sequence `context` (B, L, Dc) inside the attention blocks, plus an optional pooled vector added to
the timestep embedding (as in Imagen, arXiv:2205.11487).

The blocks and the skeleton (levels, skips, embeddings, temporal hooks) live in
`minivid.models.blocks` and are shared with the 3-D U-Net of chapter 03. Ready for video:
* `forward` accepts video (B, C, T, H, W): frames are folded into the batch, (B*T, C, H, W), every
  spatial block runs per frame, and every block sees `num_frames=T` (and `image`).
* Every block has a unique `name` ("down1_0_res", "mid0_attn", ...); `insertion_points()` lists them,
  `add_temporal_layers(factory)` runs `factory(name, channels)` right after a block. Make-A-Video (ch04)
  grows a frozen image model this way (`minivid.models.temporal`); Video LDM (ch06) too.
* `add_extra_channels(n)` gives a trained model n more input and output channels (`ExtraChannels`) without
  changing what it computes on its own: Video LDM (ch06) denoises latent optical flow this way, VideoJAM-style.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
from torch import nn

from minivid.models.blocks import AttentionBlock, Downsample, ResBlock, UNetSkeleton, Upsample, zero_module


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


class ExtraInput(nn.Module):
    """h + conv(extra): n more input channels read by a zero-initialised conv, added to the stem's output.
    (Chapter 06 wraps it in an alpha-merged `AlignmentLayer`, so alpha = 1 and image items ignore it.)"""

    def __init__(self, n: int, channels: int):
        super().__init__()
        self.conv = zero_module(nn.Conv2d(n, channels, 3, padding=1))

    def forward(self, h: torch.Tensor, num_frames: int = 1, extra: torch.Tensor | None = None, **_) -> torch.Tensor:
        """h: (N, C, H, W) the stem's output; extra: (N, n, H, W) -> (N, C, H, W)."""
        return h + self.conv(extra)


class ExtraChannels(nn.Module):
    """n more input and output channels for a U-Net that is already trained (VideoJAM's motion channels on a frozen
    image model, chapter 06): `inp` (an `ExtraInput`: a zero-initialised conv of the new channels, added to the
    stem's output) and `out`, a head of their own on the last features (GroupNorm-SiLU-conv, zero-initialised
    like the U-Net's). At initialisation the U-Net's output on its own channels is exactly what it was."""

    def __init__(self, n: int, channels: int, groups: int, out_channels: int):
        super().__init__()
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"extra channels must be an int >= 1, got {n!r}")
        self.n = n
        self.inp = ExtraInput(n, channels)
        self.out = nn.Sequential(nn.GroupNorm(groups, out_channels), nn.SiLU(),
                                 zero_module(nn.Conv2d(out_channels, n, 3, padding=1)))


class ExtraEmbedding(nn.Module):
    """A vector of n numbers per item added to the block embedding of a U-Net that is already trained (a clip's
    velocity read off its pixels, chapter 04), as the timestep and the pooled text are: a small MLP whose last layer
    starts at zero, so at initialisation the U-Net computes exactly what it did. (B, n) -> (B, E)."""

    def __init__(self, n: int, emb_dim: int):
        super().__init__()
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"an extra embedding needs an int n >= 1 numbers, got {n!r}")
        self.n = n
        self.mlp = nn.Sequential(nn.Linear(n, emb_dim), nn.SiLU(), zero_module(nn.Linear(emb_dim, emb_dim)))

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        return self.mlp(v)


class UNet2D(UNetSkeleton):
    """model(x_t, t, context=None, context_mask=None, pooled=None) -> prediction of x_t's shape."""

    def __init__(self, cfg: UNet2DConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or UNet2DConfig()

        def unit(name, lv, cin, cout, part):
            blocks = [ResBlock(f"{name}_res", cin, cout, 4 * cfg.channels, cfg.groups, cfg.dropout)]
            if (cfg.mid_attention if part == "mid0" else part != "mid1" and lv in cfg.attn_levels):
                blocks.append(AttentionBlock(f"{name}_attn", cout, cfg.head_dim, cfg.groups, cfg.context_dim))
            return blocks

        ch = self._build(cfg, unit)
        self.out = nn.Sequential(nn.GroupNorm(cfg.groups, ch), nn.SiLU(),
                                 zero_module(nn.Conv2d(ch, cfg.out_channels, 3, padding=1)))
        self.extra_io: ExtraChannels | None = None       # `add_extra_channels`
        self.extra_emb: ExtraEmbedding | None = None     # `add_extra_embedding`

    def add_extra_channels(self, n: int) -> ExtraChannels:
        """Read and write n more channels after the model's own (x: (B, in + n, ...) -> (B, out + n, ...)); the
        outputs on its own channels are unchanged at initialisation. Returns the new module (its parameters)."""
        if self.extra_io is not None:
            raise ValueError(f"the model already has {self.extra_io.n} extra channels")
        self.extra_io = ExtraChannels(n, self.stem.out_channels, self.cfg.groups, self.out[-1].in_channels)
        return self.extra_io

    def add_extra_embedding(self, n: int) -> ExtraEmbedding:
        """Read n more numbers per item (forward's `extra_emb`: (B, n)) into the block embedding; the output is
        unchanged at initialisation. Returns the new module (its parameters)."""
        if self.extra_emb is not None:
            raise ValueError(f"the model already reads an extra embedding of {self.extra_emb.n}")
        self.extra_emb = ExtraEmbedding(n, self.time_mlp[-1].out_features)
        return self.extra_emb

    def forward(self, x, t, context=None, context_mask=None, pooled=None, image=None, extra_emb=None, motion=None):
        """x: (B, C, H, W) or video (B, C, T, H, W); t: (B,) long (or (B, T) per frame for video);
        context: (B, L, Dc); context_mask: (B, L) bool; pooled: (B, Dp); image: (B,) bool (video only: items
        that are T independent images, for temporal layers); extra_emb: (B, n) with `add_extra_embedding`
        (None: zeros); motion: (B, 2) the clip's displacement per frame, for motion-aligned temporal layers
        (`temporal.along_path`). Returns x's shape.
        """
        video = x.dim() == 5
        n_extra = 0 if self.extra_io is None else self.extra_io.n
        C = self.cfg.in_channels + n_extra
        if x.dim() not in (4, 5) or x.shape[1] != C:
            raise ValueError(f"x must be (B, {C}, H, W) or (B, {C}, T, H, W), got {tuple(x.shape)}")
        B, Tf = x.shape[0], (x.shape[2] if video else 1)
        H, W = x.shape[-2:]
        if H % self.downsample_factor or W % self.downsample_factor:
            raise ValueError(f"H, W must be divisible by {self.downsample_factor}, got {H}x{W}")
        t = torch.as_tensor(t, device=x.device)
        if t.shape not in ((B,), (B, Tf)):
            raise ValueError(f"t must be (B,) = ({B},){' or (B, T)' if video else ''}, got {tuple(t.shape)}")
        if image is not None:
            image = torch.as_tensor(image, device=x.device).bool()
            if image.shape != (B,):
                raise ValueError(f"image must be (B,) = ({B},) bool, got {tuple(image.shape)}")
        if (extra_emb is not None) and (self.extra_emb is None or extra_emb.shape != (B, self.extra_emb.n)):
            want = "absent (add_extra_embedding first)" if self.extra_emb is None else f"({B}, {self.extra_emb.n})"
            raise ValueError(f"extra_emb must be {want}, got {tuple(extra_emb.shape)}")
        if self.extra_emb is not None and extra_emb is None:
            extra_emb = x.new_zeros(B, self.extra_emb.n)
        if video:
            x = x.transpose(1, 2).reshape(B * Tf, x.shape[1], H, W)       # (B*T, C, H, W)
            t = t.reshape(B, -1).expand(B, Tf).reshape(-1)                 # (B*T,)
            rep = lambda z: None if z is None else z.repeat_interleave(Tf, 0)  # noqa: E731
            context, context_mask, pooled, extra_emb = rep(context), rep(context_mask), rep(pooled), rep(extra_emb)
        if context is not None and self.cfg.context_dim is None:
            raise ValueError("context given but the config has context_dim=None (no cross-attention)")
        emb = self._embed(t, pooled, x.dtype)                               # (N, E)
        if extra_emb is not None:
            emb = emb + self.extra_emb(extra_emb.to(x.dtype))
        if n_extra:
            x, extra = x.split([self.cfg.in_channels, n_extra], 1)
            h = self.extra_io.inp(self.stem(x), num_frames=Tf, image=image, extra=extra)
        else:
            h = self.stem(x)
        h = self._trunk(h, emb=emb, context=context, context_mask=context_mask, num_frames=Tf, image=image,
                        motion=motion)
        out = self.out(h)                                                   # (N, C_out, H, W)
        if n_extra:
            out = torch.cat([out, self.extra_io.out(h)], 1)                 # (N, C_out + n, H, W)
        if video:
            out = out.reshape(B, Tf, -1, H, W).transpose(1, 2)              # (B, C_out, T, H, W)
        return out


__all__ = ["UNet2DConfig", "UNET2D_PRESETS", "unet2d_config", "UNet2D", "ExtraInput", "ExtraChannels", "ExtraEmbedding",
           "AttentionBlock", "ResBlock", "Downsample", "Upsample", "zero_module"]   # blocks, re-exported
