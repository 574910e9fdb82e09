"""Chapter 04, second half: Make-A-Video's frame-interpolation network (Singer et al. 2022, arXiv:2209.14792,
Sec. 3.3) - the trained video model given known frames and a mask, fine-tuned to fill in the others.

One network learns both tasks from unlabelled clips: *interpolation* (every other frame known: raise an
8-frame clip to 15 frames) and *extrapolation* (the first frames known: extend a clip). Its baseline is
linear blending of the neighbouring frames (`linear_blend`).
"""
from __future__ import annotations

import copy

import torch

from minivid.data import WorldConfig, from_uint8, materialize_split
from minivid.diffusion import Schedule, diffusion_loss, mixed_noise
from minivid.models.pseudo3d import FrameInterpolator, interpolation_mask, temporal_parameters
from minivid.pipelines.ch04 import (
    Ch04Preset,
    VideoRecipe,
    channels,
    checkpoint_path,
    get_preset,
    image_model,
    load_video_model,
    train_command,
    with_flow,
)
from minivid.pipelines.common import guided_ddim, load_or_train
from minivid.text import TextConditioner


def interp_pools(preset) -> dict:
    """Unlabelled training clips for the interpolation network (train split, cached).

    "interp": clips of `interp_frames` frames at half the world's speeds, so their even frames are an
    ordinary clip and the odd ones the in-betweens; "extrap": clips of `extrap_frames` frames at the
    world's speeds (the first ones known, the rest to continue).
    """
    p = get_preset(preset)
    r, i = p.video, p.interp
    w = WorldConfig()
    half = WorldConfig(size=r.size, frames=i.interp_frames, speed_slow=w.speed_slow / 2, speed_fast=w.speed_fast / 2)
    full = WorldConfig(size=r.size, frames=i.extrap_frames)
    return {k: materialize_split("video", "train", i.pool, seed=0, world=world, cache=True, verbose=False)["x"]
            for k, world in (("interp", half), ("extrap", full))}


def interp_batch_fn(preset, pools: dict):
    """batch_fn(step, g) -> {"x": clip (B, 3, T, S, S), "known": the same clip, "mask": (B, T)}.

    Even steps interpolate (every other frame known), odd steps extrapolate (the first frames known), so
    one network learns both; the clip is played backwards with probability 1/2.
    """
    p = get_preset(preset)
    i, T0 = p.interp, p.video.frames

    def batch_fn(step, g):
        kind = "interp" if step % 2 == 0 else "extrap"
        data = pools[kind]
        idx = torch.randint(0, len(data), (i.batch_size,), generator=g)
        x = from_uint8(data[idx])
        back = torch.rand(i.batch_size, generator=g) < 0.5
        x = torch.where(back[:, None, None, None, None], x.flip(2), x)
        T = x.shape[2]
        known = range(0, T, 2) if kind == "interp" else range(T0)
        mask = interpolation_mask(T, list(known)).expand(i.batch_size, T)
        return {"x": with_flow(x) if p.video.motion_channels else x, "known": x, "mask": mask}
    return batch_fn


def interp_loss_fn(schedule: Schedule, objective: str, null: dict, noise_alpha: float = 0.0):
    """Diffusion loss on every frame, the network told the known frames and the mask (null caption: no text);
    the noise shared across frames as the video model was trained (`mixed_noise`)."""
    def loss_fn(net, batch, g):
        B = batch["x"].shape[0]
        cond = {k: v.expand(B, *v.shape) for k, v in null.items()}
        return diffusion_loss(net, batch["x"], schedule, objective, generator=g, noise=mixed_noise(
                              batch["x"].shape, noise_alpha, g, device=batch["x"].device),
                              cond={**cond, "known": batch["known"], "mask": batch["mask"]})
    return loss_fn


def train_interpolator(preset: str | Ch04Preset = "full", seed: int = 0, progress: bool = True):
    """Train (or load) the frame-interpolation network, starting from the trained video model.

    Returns (FrameInterpolator in eval mode, schedule, cond).
    """
    p = get_preset(preset)
    video, schedule, cond = load_video_model(p, seed, progress)
    net = FrameInterpolator(copy.deepcopy(video))
    state = load_or_train(net, interp_loss_fn(schedule, image_model(p.video, False).objective, cond.null_features(),
                                         p.video.noise_alpha),
                          interp_batch_fn(p, interp_pools(p)), p.interp, checkpoint_path("interp", p, seed), seed=seed,
                          progress=progress, params=temporal_parameters(net), desc="ch04 frame interpolation",
                          command=train_command(p))
    return state.sampling_model.eval(), schedule, cond


@torch.no_grad()
def fill_frames(interp: FrameInterpolator, schedule: Schedule, cond: TextConditioner, known: torch.Tensor,
                mask: torch.Tensor, *, objective: str = "v", steps: int = 20, seed: int = 0,
                progress: bool = False, noise_alpha: float | None = None) -> torch.Tensor:
    """Sample the masked frames of `known` (B, 3, T, S, S) given `mask` (T,); known frames are kept as given.
    noise_alpha: the starting noise's share across frames (by default the video recipe's, as trained)."""
    B, T = known.shape[0], known.shape[2]
    m = mask.to(known).expand(B, T)
    shape = (channels(interp), *known.shape[2:])                    # with motion channels: the flow too
    out = guided_ddim(interp, schedule, cond, [""] * B, shape, guidance=1.0, objective=objective,
                      steps=steps, seed=seed, progress=progress, extra={"known": known, "mask": m},
                      noise_alpha=VideoRecipe.noise_alpha if noise_alpha is None else noise_alpha)
    keep = m[:, None, :, None, None].bool()
    return torch.where(keep, known, out[:, :known.shape[1]])


def interpolate(interp, schedule, cond, clips: torch.Tensor, **kw) -> torch.Tensor:
    """(B, 3, T, S, S) -> (B, 3, 2T - 1, S, S): one new frame between each pair."""
    B, C, T, H, W = clips.shape
    known = clips.new_zeros(B, C, 2 * T - 1, H, W)
    known[:, :, ::2] = clips
    return fill_frames(interp, schedule, cond, known, interpolation_mask(2 * T - 1, list(range(0, 2 * T - 1, 2))), **kw)


def extrapolate(interp, schedule, cond, clips: torch.Tensor, extra: int = 4, **kw) -> torch.Tensor:
    """(B, 3, T, S, S) -> (B, 3, T + extra, S, S): the clip continued."""
    B, C, T, H, W = clips.shape
    known = torch.cat([clips, clips.new_zeros(B, C, extra, H, W)], 2)
    return fill_frames(interp, schedule, cond, known, interpolation_mask(T + extra, list(range(T))), **kw)


def linear_blend(clips: torch.Tensor) -> torch.Tensor:
    """The baseline: (B, C, T, ...) -> (B, C, 2T - 1, ...) with each new frame the mean of its neighbours."""
    mids = (clips[:, :, 1:] + clips[:, :, :-1]) / 2
    out = torch.stack([clips[:, :, :-1], mids], 3).flatten(2, 3)
    return torch.cat([out, clips[:, :, -1:]], 2)


__all__ = ["interp_pools", "interp_batch_fn", "interp_loss_fn", "train_interpolator", "fill_frames", "interpolate",
           "extrapolate", "linear_blend"]
