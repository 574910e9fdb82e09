"""Chapter 05, the parts of the cascade: the super-resolution stages' inputs, noise-conditioning augmentation,
the stage network, its training batches and loss.

Imagen Video (Ho et al. 2022, arXiv:2210.02303) generates small and short, then upsamples with diffusion models
that are each conditioned on the stage below:

* **TSR**, temporal super-resolution (`tsr_input`): the noisy 2T-frame clip concatenated on the channels with the
  T-frame conditioning clip placed on its even frames; the frames in between either repeat the frame before
  (`fill="repeat"`) or stay blank with one more channel saying which frames are known (`fill="blank"`, the mask of
  Make-A-Video's interpolation network). 2T, not 2T - 1: frame 2i is base frame i, so the last frame is one step
  past the base clip's end (extrapolated) and 8 frames become the 16 the chapter promises, at twice the frame rate.
* **SSR**, spatial super-resolution (`ssr_input`): the noisy 2H x 2W clip concatenated with the low-res clip
  upsampled bilinearly, frame by frame; the network keeps its temporal layers, so all frames are upsampled jointly.
* **Noise-conditioning augmentation** (Ho et al. 2021, "Cascaded Diffusion Models", arXiv:2106.15282):
  in training the conditioning clip is noised by the forward process to a random level k ~ U{0..aug_max}
  (`augment`) and the network is told k (`UNet3DConfig.aug_embedding`); at sampling one fixed k, chosen by a sweep.
  A stage trained on real low-res clips then tolerates the base model's imperfect ones.

The stages train on real clips of the world played at half speed (`stage_world`), so frames 0, 2, 4, ... of a
16-frame clip are exactly an ordinary 8-frame clip - what the base model makes.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from minivid.data import WorldConfig, from_uint8, materialize_split, time_reversed
from minivid.diffusion import Schedule, diffusion_loss
from minivid.diffusion.schedules import gather
from minivid.models.blocks import fold_frames, unfold_frames
from minivid.models.unet3d import UNet3D, UNet3DConfig, unet3d_config
from minivid.pipelines.ch03 import encode_captions
from minivid.pipelines.presets import added_field
from minivid.text import caption_dropout

RGB = 3
STAGE_KINDS = ("tsr", "ssr")
FILLS = ("repeat", "blank")


def input_channels(kind: str, fill: str = "repeat", channels: int = RGB) -> int:
    """Channels the stage's U-Net reads: x_t, the laid-out conditioning clip, (TSR "blank": the mask)."""
    if kind not in STAGE_KINDS:
        raise ValueError(f"kind must be one of {STAGE_KINDS}, got {kind!r}")
    if fill not in FILLS:
        raise ValueError(f"fill must be one of {FILLS}, got {fill!r}")
    return 2 * channels + (1 if kind == "tsr" and fill == "blank" else 0)


def check_pair(x_t: torch.Tensor, low: torch.Tensor, kind: str) -> None:
    """A clear ValueError unless x_t is what stage `kind` makes from `low` (both (B, C, T, H, W))."""
    if x_t.dim() != 5 or low.dim() != 5:
        raise ValueError(f"x_t and low must be clips (B, C, T, H, W), got {tuple(x_t.shape)} and {tuple(low.shape)}")
    B, C, T, H, W = low.shape
    want = (B, C, 2 * T, H, W) if kind == "tsr" else (B, C, T, 2 * H, 2 * W)
    if tuple(x_t.shape) != want:
        what = "twice the frames" if kind == "tsr" else "twice the height and width"
        raise ValueError(f"low {tuple(low.shape)} does not fit x_t {tuple(x_t.shape)}: the {kind.upper()} output has "
                         f"{what} of its conditioning clip, x_t must be {want}")


@dataclass(frozen=True)
class StageRecipe:
    """One super-resolution stage, trained on real clips of the half-speed world (`ch05_sr.stage_world`)."""
    kind: str = "tsr"                  # "tsr": T -> 2T frames | "ssr": H x W -> 2H x 2W
    unet: str = "unet3d-tiny"
    unet_overrides: dict = field(default_factory=lambda: {"temporal_attn_levels": (0, 1), "frame_embedding": True})
    fill: str = "repeat"               # TSR in-between frames: "repeat" the frame before | "blank" + a mask channel
    aug: bool = True                   # noise-conditioning augmentation, the model told the level
    aug_max: int = 400                 # training levels k ~ U{0..aug_max} (steps of the forward process)
    crop: int | None = None            # SSR: train on random crop x crop windows (None: whole frames), as Imagen's
                                       # super-resolution models train on crops (arXiv:2205.11487)
    text_preset: str = "full"          # the frozen chapter-02 text encoder
    p_uncond: float = 0.1              # caption dropout (classifier-free guidance)
    T: int = 1000
    schedule: str = "cosine"
    objective: str = "v"
    steps: int = 1600
    batch_size: int = 8
    lr: float = 1e-3
    warmup_steps: int = 100
    ema_decay: float = 0.995
    pool: int = 2000                   # captioned training clips (the scarce video-text pairs)
    time_reversal: float = 0.5         # chance a clip plays backwards, its caption's direction flipped
    # denoise the target minus its conditioning clip's fill (`stage_fill`: blending in time for the TSR, bilinear
    # upsampling for the SSR) and add the fill back after sampling: only what the fill gets wrong is left to learn,
    # as chapter 04's interpolation network does. Added: False keeps the keys of the stages trained before it
    residual: bool = added_field(False)
    # a residual stage denoises its residual times this: the residuals are faint (std ~0.09 for the SSR's sparse
    # edges, ~0.015 for the TSR's, against the clips' ~0.35, which the schedule was tuned on), so at every noise
    # level they are drowned sooner; scaled up, as latent diffusion scales its latents to unit spread
    # (arXiv:2112.10752), and the sample divided back, the network's leftover error is divided by it in the clip
    residual_scale: float = added_field(1.0)

    def __post_init__(self):
        input_channels(self.kind, self.fill)                          # checks kind and fill
        if not 0 <= self.aug_max <= self.T:
            raise ValueError(f"aug_max must lie in 0..T={self.T}, got {self.aug_max}")
        if self.crop is not None and (self.kind != "ssr" or self.crop < 8 or self.crop % 4):
            raise ValueError(f"crop must be None, or for kind='ssr' a multiple of 4 >= 8, got {self.crop} "
                             f"(kind={self.kind!r})")
        if not self.residual_scale > 0 or (self.residual_scale != 1 and not self.residual):
            raise ValueError(f"residual_scale must be > 0, and 1 unless residual=True, got {self.residual_scale} "
                             f"(residual={self.residual})")
        for name in ("p_uncond", "time_reversal"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must lie in [0, 1], got {getattr(self, name)}")


# ----------------------------------------------------------------------------- the stages' inputs

def tsr_input(x_t: torch.Tensor, low: torch.Tensor, fill: str = "repeat") -> torch.Tensor:
    """The TSR network's input. x_t (B, C, 2T, H, W), low (B, C, T, H, W) -> (B, 2C, 2T, H, W) for fill="repeat",
    (B, 2C + 1, 2T, H, W) for fill="blank".

    Channels 0..C-1 are x_t. Channels C..2C-1 hold the conditioning clip on the even frames (frame 2i shows low's
    frame i); each odd frame 2i + 1 shows low's frame i again ("repeat") or zeros ("blank"). With "blank", channel
    2C is the mask: 1 on the frames that carry a frame of low, 0 on the frames to invent.
    """
    if fill not in FILLS:
        raise ValueError(f"fill must be one of {FILLS}, got {fill!r}")
    check_pair(x_t, low, "tsr")
    B, C, T, H, W = low.shape
    ### BEGIN SOLUTION  # exercise 5.1: the TSR input (the low clip on the even frames; repeat, or blank + mask)
    if fill == "repeat":
        cond = low.repeat_interleave(2, dim=2)                             # frame j shows low's frame j // 2
    else:
        cond = low.new_zeros(B, C, 2 * T, H, W)
        cond[:, :, ::2] = low
        known = low.new_zeros(B, 1, 2 * T, H, W)
        known[:, :, ::2] = 1
        cond = torch.cat([cond, known], 1)                                 # (B, C + 1, 2T, H, W)
    return torch.cat([x_t, cond], 1)
    ### END SOLUTION


def ssr_input(x_t: torch.Tensor, low: torch.Tensor) -> torch.Tensor:
    """The SSR network's input. x_t (B, C, T, 2H, 2W), low (B, C, T, H, W) -> (B, 2C, T, 2H, 2W).

    Channels 0..C-1 are x_t; channels C..2C-1 are every frame of low upsampled bilinearly to 2H x 2W
    (align_corners=False, the half-pixel convention of image resizing), each frame on its own.
    """
    check_pair(x_t, low, "ssr")
    B, C, T, H, W = low.shape
    ### BEGIN SOLUTION  # exercise 5.3: upsample every frame bilinearly and concatenate
    up = F.interpolate(fold_frames(low), size=(2 * H, 2 * W), mode="bilinear", align_corners=False)  # (B*T, C, 2H, 2W)
    return torch.cat([x_t, unfold_frames(up, T)], 1)
    ### END SOLUTION


def stage_fill(low: torch.Tensor, kind: str) -> torch.Tensor:
    """A stage's answer without a network, what a residual stage (`StageRecipe.residual`) adds to.

    TSR: (B, C, T, H, W) -> (B, C, 2T, H, W), low on the even frames, each odd frame the blend of the frames either
    side of it (the last one holds the last frame). SSR: (B, C, T, H, W) -> (B, C, T, 2H, 2W), each frame upsampled
    bilinearly, as `ssr_input` lays it out.
    """
    if kind not in STAGE_KINDS:
        raise ValueError(f"kind must be one of {STAGE_KINDS}, got {kind!r}")
    if low.dim() != 5:
        raise ValueError(f"low must be a clip (B, C, T, H, W), got {tuple(low.shape)}")
    if kind == "tsr":
        after = torch.cat([low[:, :, 1:], low[:, :, -1:]], 2)                 # frame i + 1 (the last: itself)
        return torch.stack([low, (low + after) / 2], 3).flatten(2, 3)        # (B, C, T, 2, H, W) -> 2T frames
    up = F.interpolate(fold_frames(low), scale_factor=2, mode="bilinear", align_corners=False)
    return unfold_frames(up, low.shape[2])


def augment(low: torch.Tensor, level: torch.Tensor, noise: torch.Tensor, schedule: Schedule) -> torch.Tensor:
    """Noise-conditioning augmentation: the conditioning clip after `level` steps of the forward process.

    low, noise: (B, ...) of one shape; level: (B,) long in 0..T. Level k is q(x_k | x_0) with k steps taken:
    sqrt(a) low + sqrt(1 - a) noise, a = alpha_1 ... alpha_k - the schedule's alpha_bars[k - 1] (q_sample at the
    0-based timestep k - 1) - and a = 1 at level 0, which returns `low` exactly. Returns (B, ...).
    """
    if noise.shape != low.shape:
        raise ValueError(f"noise must have the shape of low {tuple(low.shape)}, got {tuple(noise.shape)}")
    level = torch.as_tensor(level)
    if level.shape != (low.shape[0],) or level.dtype.is_floating_point:
        raise ValueError(f"level must be (B,) = ({low.shape[0]},) integers, got {tuple(level.shape)} {level.dtype}")
    if level.numel() and not 0 <= int(level.min()) <= int(level.max()) <= schedule.T:
        raise ValueError(f"level must lie in 0..{schedule.T} (steps of the forward process), got "
                         f"{int(level.min())}..{int(level.max())}")
    ### BEGIN SOLUTION  # exercise 5.2: noise-conditioning augmentation (level 0 = the clean clip)
    table = torch.cat([torch.ones(1, dtype=schedule.alpha_bars.dtype), schedule.alpha_bars])   # level k: k steps
    a = gather(table, level, low)
    return a.sqrt() * low + (1 - a).sqrt() * noise
    ### END SOLUTION


# ----------------------------------------------------------------------------- the stage network

class StageNet(nn.Module):
    """A super-resolution stage: a UNet3D reading [x_t, the laid-out conditioning clip] on its channels.

    net(x_t, t, low, aug_level=None, context=None, context_mask=None, pooled=None) -> (B, 3, ...) like x_t.
    kind "tsr": x_t (B, 3, 2T, H, W), low (B, 3, T, H, W); "ssr": x_t (B, 3, T, 2H, 2W), low (B, 3, T, H, W).
    aug_level (B,) long: the augmentation level `low` was noised to - given exactly when the U-Net was built
    with aug_embedding.
    """

    def __init__(self, kind: str, unet: UNet3DConfig, fill: str = "repeat"):
        super().__init__()
        want = input_channels(kind, fill)
        if unet.in_channels != want or unet.out_channels != RGB:
            raise ValueError(f"unet must read {want} channels and write {RGB} for kind={kind!r}, fill={fill!r}, "
                             f"got in_channels={unet.in_channels}, out_channels={unet.out_channels}")
        self.kind, self.fill = kind, fill
        self.unet = UNet3D(unet)
        self.cfg = unet

    def forward(self, x, t, low, aug_level=None, context=None, context_mask=None, pooled=None):
        """x: (B, 3, T', H', W') noisy; t: (B,) long; low: (B, 3, T, H, W) -> (B, 3, T', H', W')."""
        inp = tsr_input(x, low, self.fill) if self.kind == "tsr" else ssr_input(x, low)
        return self.unet(inp, t, context=context, context_mask=context_mask, pooled=pooled, aug_t=aug_level)


class Stage(NamedTuple):
    """A trained super-resolution stage and what sampling it needs."""
    net: StageNet
    schedule: Schedule
    recipe: StageRecipe


def build_stage(recipe: StageRecipe, text_dim: int) -> StageNet:
    cfg = unet3d_config(recipe.unet, context_dim=text_dim, pooled_dim=text_dim, out_channels=RGB,
                        in_channels=input_channels(recipe.kind, recipe.fill), aug_embedding=recipe.aug,
                        **recipe.unet_overrides)
    return StageNet(recipe.kind, cfg, recipe.fill)


# ----------------------------------------------------------------------------- data, batches, loss

def stage_data(recipe: StageRecipe, frames: int, size: int, cond) -> dict:
    """The training clips of a stage whose *input* is `frames` frames of size x size, with frozen text features."""
    out_frames = 2 * frames if recipe.kind == "tsr" else frames
    target = clip_pool(size if recipe.kind == "tsr" else 2 * size, out_frames, recipe.pool)
    data = {"x": target["x"], "text": encode_captions(cond, target["captions"]),
            "text_reversed": encode_captions(cond, time_reversed(target)["captions"])}
    if recipe.kind == "ssr":
        data["low"] = clip_pool(size, out_frames, recipe.pool)["x"]        # the same clips at half the size
    return data


def stage_world(size: int, frames: int) -> WorldConfig:
    """The world of the upsampled clips: `frames` frames at half the world's speeds, so frames 0, 2, 4, ... of a
    clip are an ordinary clip of frames // 2 frames at the world's speeds (what the base model makes)."""
    w = WorldConfig()
    return WorldConfig(size=size, frames=frames, speed_slow=w.speed_slow / 2, speed_fast=w.speed_fast / 2)


def clip_pool(size: int, frames: int, n: int) -> dict:
    """n captioned training clips of `stage_world(size, frames)` (train split, cached). The same seed and indices at
    every size: the pools at 16x16 and 32x32 hold the very same clips, rendered twice."""
    return materialize_split("video_text", "train", n, seed=0, world=stage_world(size, frames), cache=True,
                             verbose=False)


def stage_batch_fn(recipe, data: dict):
    """batch_fn(step, g) -> {"x": target (B, 3, T', H', W'), "low": its conditioning clip, text features}.

    data: {"x": uint8 targets, "low": uint8 low-res clips (SSR only), "text", "text_reversed"}. TSR: low is the
    target's even frames. With `time_reversal` p a clip plays backwards (its caption's direction flipped); SSR with
    `crop` c trains on a random c x c window of the target (c/2 x c/2 of low), one per item.
    """
    B, kind, c = recipe.batch_size, recipe.kind, recipe.crop

    def batch_fn(step, g):
        idx = torch.randint(0, len(data["x"]), (B,), generator=g)
        x = from_uint8(data["x"][idx])
        low = from_uint8(data["low"][idx]) if kind == "ssr" else None
        back = torch.rand(B, generator=g) < recipe.time_reversal
        flip = back[:, None, None, None, None]
        x = torch.where(flip, x.flip(2), x)
        text = {k: torch.where(back.view(B, *[1] * (v.dim() - 1)), data["text_reversed"][k][idx], v[idx])
                for k, v in data["text"].items()}
        if kind == "tsr":
            low = x[:, :, ::2]                                              # (B, 3, T, S, S)
        else:
            low = torch.where(flip, low.flip(2), low)
            if c is not None:
                S = low.shape[-1]
                oy, ox = (torch.randint(0, S - c // 2 + 1, (2, B), generator=g)).tolist()
                x = torch.stack([x[i, :, :, 2 * oy[i]:2 * oy[i] + c, 2 * ox[i]:2 * ox[i] + c] for i in range(B)])
                low = torch.stack([low[i, :, :, oy[i]:oy[i] + c // 2, ox[i]:ox[i] + c // 2] for i in range(B)])
        return {"x": x, "low": low, **text}
    return batch_fn


def stage_loss_fn(recipe, schedule: Schedule, null: dict):
    """Caption dropout, noise-conditioning augmentation (level ~ U{0..aug_max}, the model told it), diffusion loss."""
    def loss_fn(net, batch, g):
        text, _ = caption_dropout({k: batch[k] for k in null}, null, recipe.p_uncond, generator=g)
        low, x = batch["low"], batch["x"]
        if recipe.residual:
            x = (x - stage_fill(low, recipe.kind)) * recipe.residual_scale  # the fill of the clean clip
        cond = {"low": low}
        if recipe.aug:
            level = torch.randint(0, recipe.aug_max + 1, (low.shape[0],), generator=g)
            noise = torch.randn(low.shape, generator=g)
            cond = {"low": augment(low, level, noise, schedule), "aug_level": level}
        return diffusion_loss(net, x, schedule, recipe.objective, generator=g, cond={**text, **cond})
    return loss_fn


__all__ = ["RGB", "STAGE_KINDS", "FILLS", "StageRecipe", "input_channels", "check_pair", "tsr_input", "ssr_input",
           "stage_fill", "augment", "StageNet", "Stage", "build_stage", "stage_data", "stage_world", "clip_pool",
           "stage_batch_fn",
           "stage_loss_fn"]
