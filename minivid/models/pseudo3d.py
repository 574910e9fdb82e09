"""Make-A-Video's spatiotemporal network: a frozen text-to-image U-Net grown into a video model.

Singer et al. 2022, arXiv:2209.14792, Sec. 3.2: every spatial 2-D conv is followed by a new 1-D conv
across frames initialised to the identity (the *pseudo-3-D conv*, eq. 2), and every spatial attention
by a new attention across frames whose output projection starts at zero (the *pseudo-3-D attention*,
eq. 3). At initialisation the video model is the image model applied frame by frame, exactly; training
on unlabelled video then moves only the new temporal parameters, so what the image model knows about
appearance (and about text) is kept.

Sec. 3.3, the frame interpolation network: the same network, given known frames and a mask as extra
input channels (zero-initialised, so it starts as the video model), fine-tuned to fill in masked
frames - interpolation (raise the frame rate) and extrapolation (extend a clip).

    unet = pretrained("ch02.t2i", "full")[0]           # the frozen image model
    video = inflate(unet, Pseudo3DConfig())            # in place; only the new layers require grad
    clip_out = video(x_t, t, **text)                   # x_t: (B, 3, T, H, W)
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torch import nn

from minivid.models.blocks import AttentionBlock, ResBlock, TextCrossAttention, zero_module
from minivid.models.temporal import Pseudo3DConv, ShiftedPseudo3DConv, TemporalAttention
from minivid.models.unet2d import ExtraChannels, ExtraEmbedding, UNet2D


@dataclass
class Pseudo3DConfig:
    temporal_conv: bool = True          # a temporal conv after each spatial conv (in every ResBlock)
    temporal_attn: bool = True          # a temporal attention after each spatial attention block
    kernel: int = 3                     # temporal conv taps
    head_dim: int = 32
    rel_pos_buckets: int = 16
    rel_pos_max_distance: int = 32
    text_in_time: bool = True           # temporal attention also reads the block embedding (time + pooled text)
    attn_levels: tuple[int, ...] = ()   # beyond the paper: temporal attention after every ResBlock at these
                                        # resolution levels too (0 = full size); the image model's spatial
                                        # attention is only at the coarsest level, too coarse for a small object
    text_cross_attn: bool = False       # beyond the paper: each temporal attention followed by a cross-attention
                                        # to the text tokens (zero-init), as chapter 06's temporal layers
    global_context: bool = False        # beyond the paper: temporal attention also reads each frame's mean over its
                                        # pixels (`TemporalAttention`), one clip-wide path past the frozen layers
    aligned_attn: bool = False          # beyond the paper: given the clip's motion (forward's `motion`), temporal
                                        # attention attends along its straight path, not at one pixel (`along_path`)
    shift_levels: tuple[int, ...] = ()  # beyond the paper: at these resolution levels each temporal conv is followed
                                        # by a zero-init depthwise space-time conv (`ShiftedPseudo3DConv`): a
                                        # trainable way to move a feature to the next pixel in the next frame (at
                                        # full size it triples the step on a CPU, so the coarse levels are cheaper)

    def __post_init__(self):
        if self.kernel < 1 or self.kernel % 2 == 0:
            raise ValueError(f"kernel must be odd and >= 1, got {self.kernel}")
        for name in ("attn_levels", "shift_levels"):
            if any(lv < 0 for lv in getattr(self, name)):
                raise ValueError(f"{name} must be resolution levels >= 0, got {getattr(self, name)}")
        if not (self.temporal_conv or self.temporal_attn):
            raise ValueError("Pseudo3DConfig needs temporal_conv or temporal_attn (or there is nothing to train)")


def inflate(unet: UNet2D, cfg: Pseudo3DConfig | None = None) -> UNet2D:
    """Grow a 2-D U-Net into a pseudo-3-D video model, in place, and return it.

    Every existing parameter is frozen (requires_grad=False); only the inserted temporal layers train
    (`temporal_parameters`).
    """
    cfg = cfg or Pseudo3DConfig()
    for blk in list(unet.blocks()):
        if cfg.temporal_conv and isinstance(blk, ResBlock):
            conv = ShiftedPseudo3DConv if block_level(blk.name, unet) in cfg.shift_levels else Pseudo3DConv
            blk.conv1 = conv(blk.conv1, cfg.kernel)
            blk.conv2 = conv(blk.conv2, cfg.kernel)
    if cfg.text_cross_attn and unet.cfg.context_dim is None:
        raise ValueError("text_cross_attn needs an image model with text tokens (context_dim), got None")
    if cfg.temporal_attn:
        emb_dim = 4 * unet.cfg.channels if cfg.text_in_time else None
        where = [b.name for b in unet.blocks() if isinstance(b, AttentionBlock)
                 or (isinstance(b, ResBlock) and block_level(b.name, unet) in cfg.attn_levels)]

        def layer(name, ch):
            attn = TemporalAttention(f"{name}_t", ch, cfg.head_dim, cfg.rel_pos_buckets, cfg.rel_pos_max_distance,
                                     emb_dim=emb_dim, global_context=cfg.global_context, aligned=cfg.aligned_attn)
            if not cfg.text_cross_attn:                          # the paper's layer, under its earlier name
                return attn
            return TemporalThenText(attn, TextCrossAttention(f"{name}_x", ch, cfg.head_dim, unet.cfg.context_dim))
        unet.add_temporal_layers(layer, where)
    temporal_parameters(unet)
    return unet


def block_level(name: str, unet: UNet2D) -> int:
    """The resolution level of a block from its name: "down1_0_res" -> 1, "mid0_attn" -> the deepest level."""
    m = re.match(r"(?:down|up)(\d+)_", name)
    return int(m.group(1)) if m else len(unet.cfg.channel_mult) - 1


def add_text_cross_attn(unet: UNet2D, head_dim: int = 32) -> UNet2D:
    """Follow each temporal attention of an inflated U-Net with a cross-attention to the text tokens, in place.

    The output projections start at zero (`TextCrossAttention`), so the model computes exactly what it did; the
    new layers are trainable and everything else frozen (`temporal_parameters`). This is `Pseudo3DConfig.
    text_cross_attn` added to a model already trained without it - chapter 04's video-text fine-tune: the temporal
    layers were trained hearing no word about motion, and now have a path from the caption's tokens of their own.
    """
    if unet.cfg.context_dim is None:
        raise ValueError("text_cross_attn needs an image model with text tokens (context_dim), got None")
    channels = unet.insertion_points()
    for name, layer in list(unet.temporal.items()):
        if isinstance(layer, TemporalAttention):
            unet.temporal[name] = TemporalThenText(layer, TextCrossAttention(f"{name}_x", channels[name], head_dim,
                                                                             unet.cfg.context_dim))
    temporal_parameters(unet)
    return unet


class TemporalThenText(nn.Module):
    """A temporal attention, then a cross-attention from every pixel of every frame to the text tokens."""

    def __init__(self, attn: TemporalAttention, cross: TextCrossAttention):
        super().__init__()
        self.attn, self.cross = attn, cross

    def forward(self, x, **kw):                                # x: (B*T, C, H, W) -> the same shape
        return self.cross(self.attn(x, **kw), **kw)


def temporal_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Freeze everything but the layers Make-A-Video adds, and return those: the temporal convs of the
    pseudo-3-D convs, the temporal attentions, (frame interpolation) the extra input conv, and (motion channels,
    `UNet2D.add_extra_channels`) the flow's input and output layers, (text_cross_attn) the temporal layers'
    cross-attention to the text, and (`UNet2D.add_extra_embedding`) the extra embedding."""
    model.requires_grad_(False)
    new = []
    for m in model.modules():
        part = nn.ModuleList([m.temporal, m.shift]) if isinstance(m, ShiftedPseudo3DConv) else \
            m.temporal if isinstance(m, Pseudo3DConv) else m.extra if isinstance(m, ConditionedStem) else \
            m if isinstance(m, (TemporalAttention, TextCrossAttention, ExtraChannels, ExtraEmbedding)) else None
        if part is not None:
            new += [p for p in part.parameters() if all(p is not q for q in new)]
    for p in new:
        p.requires_grad_(True)
    return new


# ----------------------------------------------------------------------------- masked frame interpolation

def interpolation_mask(frames: int, known: list[int] | torch.Tensor) -> torch.Tensor:
    """(frames,) float: 1 at the known frame indices, 0 at the frames to fill in."""
    known = torch.as_tensor(known, dtype=torch.long)
    if known.numel() and (known.min() < 0 or known.max() >= frames):
        raise ValueError(f"known frame indices must be in 0..{frames - 1}, got {known.tolist()}")
    m = torch.zeros(frames)
    m[known] = 1.0
    return m


def interpolation_input(known: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The conditioning channels of the frame-interpolation network.

    known: (B, C, T, H, W) clip (whatever sits in the masked frames is ignored); mask: (T,) or (B, T), 1 = known.
    Returns (B, C + 1, T, H, W): the known frames with the unknown ones zeroed, then the mask as a channel.
    """
    B, C, T, H, W = known.shape
    mask = mask.to(known)
    if mask.shape not in ((T,), (B, T)):
        raise ValueError(f"mask must be (T,) = ({T},) or (B, T) = ({B}, {T}), got {tuple(mask.shape)}")
    ### BEGIN SOLUTION  # exercise 4.3: the interpolation network's input (masked frames and the mask channel)
    m = mask.expand(B, T)[:, None, :, None, None]                          # (B, 1, T, 1, 1)
    return torch.cat([known * m, m.expand(B, 1, T, H, W)], dim=1)
    ### END SOLUTION


class ConditionedStem(nn.Module):
    """stem(x) + extra(conditioning): the first conv of a U-Net taking extra input channels.

    The extra conv is zero-initialised, so the network starts exactly as it was without them.
    Input (N, C + extra, H, W) with frames folded in, like the stem it wraps.
    """

    def __init__(self, stem: nn.Conv2d, extra_channels: int):
        super().__init__()
        self.stem, self.in_channels = stem, stem.in_channels
        self.extra = zero_module(nn.Conv2d(extra_channels, stem.out_channels, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stem(x[:, :self.in_channels]) + self.extra(x[:, self.in_channels:])


class FrameInterpolator(nn.Module):
    """The masked frame-interpolation network: model(x_t, t, known=..., mask=..., **text) -> (B, 3, T, H, W).

    Wraps an inflated video U-Net whose stem gains the known frames and the mask (`ConditionedStem`). A video
    model with motion channels (`UNet2D.add_extra_channels`) keeps them: x_t and the output carry its n flow
    channels after the C pixel ones, (B, C + n, T, H, W); the known frames are pixels only.
    """

    def __init__(self, video: UNet2D, residual: bool = False, base: str = "blend"):
        super().__init__()
        self.residual = residual     # what it denoises: the clip, or (True) the clip minus a fill of the unknown frames
        self.base = base             # from the known ones, which the sampler adds back: "blend", their linear blend in
                                     # time (`ch04.linear_fill`), or "path", moved along their path (`ch04.path_fill`)
        c = video.cfg.in_channels
        video.stem = ConditionedStem(video.stem, c + 1)
        video.cfg.in_channels = 2 * c + 1
        self.video, self.channels = video, c
        self.extra = 0 if video.extra_io is None else video.extra_io.n

    def forward(self, x, t, known=None, mask=None, **kw):
        """x: (B, C [+ n], T, H, W) noisy clip; known: (B, C, T, H, W); mask: (T,) or (B, T) (1 = known frame)."""
        if known is None or mask is None:
            raise ValueError("FrameInterpolator needs known= (B, C, T, H, W) and mask= (T,) or (B, T)")
        x, flow = x.split([self.channels, self.extra], dim=1)         # the U-Net reads its extra channels last
        return self.video(torch.cat([x, interpolation_input(known, mask), flow], dim=1), t, **kw)


__all__ = ["Pseudo3DConfig", "inflate", "add_text_cross_attn", "TemporalThenText", "temporal_parameters", "interpolation_mask", "interpolation_input",
           "ConditionedStem", "FrameInterpolator"]
