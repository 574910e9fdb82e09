"""Chapter 04, second half: Make-A-Video's frame-interpolation network (Singer et al. 2022, arXiv:2209.14792,
Sec. 3.3) - the trained video model given known frames and a mask, fine-tuned to fill in the others.

One network learns three tasks from unlabelled clips: *interpolation* (every other frame known: raise an
8-frame clip to 15 frames), *extrapolation* (the first frames known: extend a clip) and *gap filling* (the
middle frames removed, those either side known). Its baseline is linear blending in time between the nearest
known frames (`linear_blend`, `linear_fill`).
"""
from __future__ import annotations

import copy

import torch

from minivid.data import WorldConfig, estimate_velocity, from_uint8, materialize_split
from minivid.diffusion import Schedule, diffusion_loss, mixed_noise
from minivid.models.pseudo3d import FrameInterpolator, interpolation_mask, temporal_parameters
from minivid.models.temporal import shifted
from minivid.pipelines.ch04 import (
    RGB,
    Ch04Preset,
    VideoRecipe,
    channels,
    checkpoint_path,
    cue_inputs,
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


def gap_mask(frames: int, gap: int) -> torch.Tensor:
    """(frames,) float: 0 at the middle `gap` frames, 1 elsewhere (the frames either side of the gap known)."""
    start = (frames - gap) // 2
    return interpolation_mask(frames, [t for t in range(frames) if not start <= t < start + gap])


def known_cue(known: torch.Tensor, mask: torch.Tensor) -> dict:
    """The motion cue (`ch04.cue_inputs`) of clips (B, 3, T, S, S) with frames missing, read off the known frames
    alone (mask (T,), 1 = known) at their places in the clip: the velocity per frame of the whole clip. A network
    with temporal attention along the path (`Pseudo3DConfig.aligned_attn`) then looks along it to fill the rest."""
    idx = mask.nonzero().flatten()
    v = estimate_velocity(known[:, :, idx], WorldConfig(size=known.shape[-1], frames=len(idx)), times=idx)
    return cue_inputs(v, len(idx))


def reads_cue(net) -> bool:
    """Whether a (video or interpolation) model reads the motion cue (`VideoRecipe.motion_cue`)."""
    return getattr(getattr(net, "video", net), "extra_emb", None) is not None


TASKS = ("interp", "extrap", "gap")     # step % 3 picks one: every other frame known / the first ones / both ends


def interp_batch_fn(preset, pools: dict):
    """batch_fn(step, g) -> {"x": clip (B, 3, T, S, S), "known": the same clip, "mask": (B, T),
    "blend": the clip's unknown frames filled from its known ones (`InterpRecipe.base`: `linear_fill` or `path_fill`;
    what a residual network adds to its output)}.

    Steps take the three tasks in turn (`TASKS`): interpolate (every other frame known), extrapolate (the first
    frames known), fill a gap (the middle `gap` frames unknown, on the extrapolation pool), so one network
    learns all three; the clip is played backwards with probability 1/2.
    """
    p = get_preset(preset)
    i, T0 = p.interp, p.video.frames

    def batch_fn(step, g):
        task = TASKS[step % len(TASKS)]
        kind = "interp" if task == "interp" else "extrap"
        data = pools[kind]
        idx = torch.randint(0, len(data), (i.batch_size,), generator=g)
        x = from_uint8(data[idx])
        back = torch.rand(i.batch_size, generator=g) < 0.5
        x = torch.where(back[:, None, None, None, None], x.flip(2), x)
        T = x.shape[2]
        mask = gap_mask(T, i.gap) if task == "gap" else interpolation_mask(
            T, list(range(0, T, 2) if task == "interp" else range(T0)))
        cue = known_cue(x, mask) if p.video.motion_cue else {}        # read off the known frames only
        return {"x": with_flow(x) if p.video.motion_channels else x, "known": x,
                "mask": mask.expand(i.batch_size, T), "blend": FILLS[i.base](x, mask), **cue}
    return batch_fn


def interp_loss_fn(schedule: Schedule, objective: str, null: dict, noise_alpha: float = 0.0):
    """Diffusion loss on every frame, the network told the known frames and the mask (null caption: no text);
    the noise shared across frames as the video model was trained (`mixed_noise`). A residual network
    (`FrameInterpolator.residual`) denoises the clip minus the batch's "blend" (its pixels; flow is kept). A batch's
    motion cue (`known_cue`) is passed on."""
    def loss_fn(net, batch, g):
        B = batch["x"].shape[0]
        cond = {k: v.expand(B, *v.shape) for k, v in null.items()}
        x = batch["x"]
        if getattr(net, "residual", False):
            x = torch.cat([x[:, :RGB] - batch["blend"], x[:, RGB:]], 1)
        cue = {k: batch[k] for k in ("extra_emb", "motion") if k in batch}     # the known frames' motion
        return diffusion_loss(net, x, schedule, objective, generator=g, noise=mixed_noise(
                              x.shape, noise_alpha, g, device=x.device),
                              cond={**cond, **cue, "known": batch["known"], "mask": batch["mask"]})
    return loss_fn


def train_interpolator(preset: str | Ch04Preset = "full", seed: int = 0, progress: bool = True):
    """Train (or load) the frame-interpolation network, starting from the trained video model.

    Returns (FrameInterpolator in eval mode, schedule, cond).
    """
    p = get_preset(preset)
    video, schedule, cond = load_video_model(p, seed, progress)
    net = FrameInterpolator(copy.deepcopy(video), residual=p.interp.residual, base=p.interp.base)
    state = load_or_train(net, interp_loss_fn(schedule, image_model(p.video, False).objective, cond.null_features(),
                                         p.video.noise_alpha),
                          interp_batch_fn(p, interp_pools(p)), p.interp, checkpoint_path("interp", p, seed), seed=seed,
                          progress=progress, params=_trainable(net, p.interp.train_all), desc="ch04 frame interpolation",
                          command=train_command(p))
    return state.sampling_model.eval(), schedule, cond


def _trainable(net: FrameInterpolator, train_all: bool) -> list[torch.nn.Parameter]:
    """The parameters the interpolation fine-tune moves: every one, or the temporal layers and the new input conv."""
    if not train_all:
        return temporal_parameters(net)
    net.requires_grad_(True)
    return list(net.parameters())


@torch.no_grad()
def fill_frames(interp: FrameInterpolator, schedule: Schedule, cond: TextConditioner, known: torch.Tensor,
                mask: torch.Tensor, *, objective: str = "v", steps: int = 20, seed: int = 0,
                progress: bool = False, noise_alpha: float | None = None) -> torch.Tensor:
    """Sample the masked frames of `known` (B, 3, T, S, S) given `mask` (T,); known frames are kept as given.
    noise_alpha: the starting noise's share across frames (by default the video recipe's, as trained). A residual
    network's sample is added to its fill of the unknown frames (`linear_fill` or `path_fill`). A network that reads the
    motion cue is given the known frames' (`known_cue`)."""
    B, T = known.shape[0], known.shape[2]
    m = mask.to(known).expand(B, T)
    shape = (channels(interp), *known.shape[2:])                    # with motion channels: the flow too
    residual = getattr(interp, "residual", False)
    cue = known_cue(known, mask) if reads_cue(interp) else {}
    out = guided_ddim(interp, schedule, cond, [""] * B, shape, guidance=1.0, objective=objective,
                      steps=steps, seed=seed, progress=progress, extra={"known": known, "mask": m, **cue},
                      clip=2.0 if residual else 1.0,                 # a residual of clips in [-1, 1] is in [-2, 2]
                      noise_alpha=VideoRecipe.noise_alpha if noise_alpha is None else noise_alpha)
    out = out[:, :known.shape[1]]
    if residual:
        out = (out + FILLS[getattr(interp, "base", "blend")](known, mask)).clamp(-1, 1)
    keep = m[:, None, :, None, None].bool()
    return torch.where(keep, known, out)


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


def fill_gap(interp, schedule, cond, clips: torch.Tensor, gap: int, **kw) -> torch.Tensor:
    """(B, 3, T, S, S) -> the same clips with their middle `gap` frames filled in by the network."""
    return fill_frames(interp, schedule, cond, clips, gap_mask(clips.shape[2], gap), **kw)


def linear_blend(clips: torch.Tensor) -> torch.Tensor:
    """The baseline: (B, C, T, ...) -> (B, C, 2T - 1, ...) with each new frame the mean of its neighbours."""
    mids = (clips[:, :, 1:] + clips[:, :, :-1]) / 2
    out = torch.stack([clips[:, :, :-1], mids], 3).flatten(2, 3)
    return torch.cat([out, clips[:, :, -1:]], 2)


def linear_fill(known: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The baseline for any mask: each unknown frame of `known` (B, C, T, ...) blended linearly in time between
    the nearest known frames before and after it (the nearest one alone at an end); mask (T,), 1 = known."""
    idx = [t for t in range(known.shape[2]) if mask[t] > 0]
    if not idx:
        raise ValueError("linear_fill needs at least one known frame")
    frames = []
    for t in range(known.shape[2]):
        a = max([k for k in idx if k <= t], default=None)
        b = min([k for k in idx if k >= t], default=None)
        if a is None or b is None or a == b:
            frames.append(known[:, :, a if b is None else b])
        else:
            w = (t - a) / (b - a)
            frames.append((1 - w) * known[:, :, a] + w * known[:, :, b])
    return torch.stack(frames, 2)


def path_fill(known: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """A baseline that knows straight paths: each unknown frame of `known` (B, 3, T, S, S) made from the nearest
    known frames before and after it, each moved along the clip's path to that time (`shifted` by the displacement
    per frame `known_cue` reads off the known frames alone), blended linearly in time; the nearest known frame alone
    at an end. Where the known frames either side are one frame away (a single in-between, a fraction of a pixel
    of motion) it is `linear_fill`: resampling by a fraction of a pixel blurs more than blending does. mask (T,)."""
    step = known_cue(known, mask)["motion"]                                   # (B, 2) per frame, grid units
    idx = [t for t in range(known.shape[2]) if mask[t] > 0]
    blend = linear_fill(known, mask)
    frames = []
    for t in range(known.shape[2]):
        a = max([k for k in idx if k <= t], default=None)
        b = min([k for k in idx if k >= t], default=None)
        if a == t or (a is not None and b is not None and b - a <= 2):
            frames.append(blend[:, :, t])
            continue
        moved = {k: shifted(known[:, :, k], (t - k) * step) for k in (a, b) if k is not None}
        w = 0.0 if b is None else 1.0 if a is None else (t - a) / (b - a)   # the weight of the frame after
        frames.append(moved[b] * w + moved[a] * (1 - w) if len(moved) == 2 else next(iter(moved.values())))
    return torch.stack(frames, 2)


FILLS = {"blend": linear_fill, "path": path_fill}      # `InterpRecipe.base` -> the fill a residual network adds to


__all__ = ["TASKS", "known_cue", "reads_cue", "gap_mask", "interp_pools", "interp_batch_fn", "interp_loss_fn", "train_interpolator", "fill_frames",
           "interpolate", "extrapolate", "fill_gap", "linear_blend", "linear_fill", "path_fill", "FILLS"]
