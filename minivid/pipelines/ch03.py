"""Chapter 03 recipes: the first text-to-video model, a factorised 3-D U-Net trained jointly on video and images.

Follows Video Diffusion Models (Ho et al. 2022, arXiv:2204.03458): a space-time U-Net
(minivid.models.unet3d), conditioned on the frozen chapter-02 text encoder (cross-attention to
the tokens plus the pooled vector), classifier-free guidance (arXiv:2207.12598), v-prediction
on a cosine schedule (arXiv:2202.00512, as chapter 02), DDIM sampling (arXiv:2010.02502).

Data, as the field has it: video-text pairs are *scarce* - a small fixed pool of captioned clips
(`VideoRecipe.video_pool`, 2,000 in the full preset, rendered once and cached) - while
image-text pairs are plentiful (the chapter-02 pool of 20,000). Joint training fills part of
every batch with "image items": T independent captioned images, masked so they never see each
other. Held-out attribute combinations never appear in either pool.

    model, schedule, cond, state = train_video("full")           # cached under cache_dir("checkpoints")
    x = generate(model, schedule, cond, ["a big red circle moving to the right"] * 4)   # (4, 3, 8, 16, 16)
"""
from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from minivid.data import REVERSED_DIRECTION, WorldConfig, flow_field, from_uint8, sample_batch, time_reversed
from minivid.diffusion import Schedule, ddim_sample, diffusion_loss, make_schedule, q_sample, training_target
from minivid.models.unet3d import UNet3D, unet3d_config
from minivid.pipelines import pick_preset
from minivid.text import TextConditioner
from minivid.train import TrainConfig, train
from minivid.utils import CheckpointError, cache_dir, load_checkpoint, make_generator


RGB, FLOW = 3, 2                       # channels: the pixels, and the optical flow (motion channels only)


@dataclass(frozen=True)
class VideoRecipe:
    unet: str = "unet3d-tiny"
    unet_overrides: dict = field(default_factory=lambda: {"temporal_attn_levels": (0, 1), "frame_embedding": True})
    text_preset: str = "full"          # which chapter-02 text encoder (frozen)
    joint: bool = True                 # joint image-video training
    image_items: int = 2               # per batch: items made of T independent images (joint only)
    p_uncond: float = 0.1              # caption dropout (classifier-free guidance)
    size: int = 16
    frames: int = 8
    T: int = 1000
    schedule: str = "cosine"
    objective: str = "v"
    steps: int = 3000
    batch_size: int = 8                # items per batch (clips + image items); the same frames either way
    lr: float = 1e-3
    warmup_steps: int = 100
    ema_decay: float = 0.995
    video_pool: int = 2000             # the scarce video-text pairs (fixed, cached)
    time_reversal: float = 0.5         # chance a clip is played backwards, with its caption's direction flipped
    temporal_weight: float = 0.0       # extra weight on frame-to-frame differences of the error (diffusion_loss)
    image_pool: int = 20000            # the plentiful image-text pairs (chapter 02's pool)
    motion_channels: bool = True       # denoise the clip's optical flow with it (2 extra channels, VideoJAM-style)


@dataclass(frozen=True)
class Ch03Preset:
    name: str
    video: VideoRecipe
    eval_samples: int = 256            # held-out prompts judged
    eval_steps: int = 20               # DDIM steps for the judged samples
    guidance: float = 3.0              # default classifier-free guidance scale
    timing_steps: tuple[int, ...] = (50, 20)
    timing_clips: int = 8
    ablation_steps: int | None = None  # each arm of the joint-training ablation; None: the recipe's own steps
    ablation_samples: int | None = None  # its held-out prompts; None: the main evaluation's


PRESETS = {
    "smoke": Ch03Preset(
        name="smoke",
        video=VideoRecipe(unet="unet3d-tiny", unet_overrides={}, text_preset="smoke", image_items=2, T=100,
                          frames=4, steps=4, batch_size=4, warmup_steps=0, video_pool=64, image_pool=256),
        eval_samples=8, eval_steps=4, timing_steps=(4, 2), timing_clips=2, ablation_steps=3, ablation_samples=4,
    ),
    "full": Ch03Preset(name="full", video=VideoRecipe()),
}


def get_preset(name: str | Ch03Preset) -> Ch03Preset:
    return pick_preset(name, PRESETS, "ch03")


def checkpoint_path(preset: str | Ch03Preset, seed: int = 0, recipe: VideoRecipe | None = None) -> Path:
    """Where a preset's trained video model lives (keyed by the recipe and the text encoder's checkpoint)."""
    from minivid.pipelines.ch02 import checkpoint_path as clip_path

    p = get_preset(preset)
    r = recipe or p.video
    blob = json.dumps({"recipe": asdict(r), "seed": seed, "text": clip_path("clip", r.text_preset, seed).name},
                      sort_keys=True, default=str)
    key = hashlib.sha256(blob.encode()).hexdigest()[:10]
    return cache_dir("checkpoints") / f"ch03-video-{p.name}{'' if r.joint else '-nojoint'}-seed{seed}-{key}.pt"


def how_to_retrain(preset: str) -> str:
    return f"delete the file and run `python -m minivid train ch03 --preset {preset}`"


# ----------------------------------------------------------------------------- data + text

def load_conditioner(recipe: VideoRecipe, seed: int = 0, progress: bool = True) -> TextConditioner:
    """The frozen chapter-02 text encoder wrapped for conditioning (trained first if absent)."""
    from minivid.pipelines.ch02 import load_text_encoder

    tok, enc = load_text_encoder(recipe.text_preset, seed, progress)
    return TextConditioner(tok, enc, use_pooled=True)


@torch.no_grad()
def encode_captions(cond: TextConditioner, captions: list[str], batch: int = 2048) -> dict:
    """Frozen text features of a caption list: {"context": (N, L, D), "context_mask": (N, L), "pooled": (N, D)}."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        parts = [cond(captions[i:i + batch]) for i in range(0, len(captions), batch)]
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}


def training_data(recipe: VideoRecipe, cond: TextConditioner) -> dict:
    """The two pools with their (precomputed, frozen) text features.

    {"video": {"x": (Nv, 3, T, S, S) uint8, "text": features, "text_reversed": features of the captions of the
    clips played backwards (`minivid.data.time_reversed`) or None}, "image": {"x": (Ni, 3, S, S) uint8, "text": ...}}
    """
    from minivid.pipelines.ch02_clip import training_clips, training_pairs

    vid = training_clips(recipe.size, recipe.frames, recipe.video_pool)  # the clips chapter 02's mini-CLIP saw
    img = training_pairs(recipe.size, recipe.image_pool)
    rev = encode_captions(cond, time_reversed(vid)["captions"]) if recipe.time_reversal else None
    motion = {k: vid["labels"][k] for k in ("direction", "speed")}
    return {"video": {"x": vid["x"], "text": encode_captions(cond, vid["captions"]), "text_reversed": rev,
                      **motion},
            "image": {"x": img["x"], "text": encode_captions(cond, img["captions"]) if recipe.joint else None}}


def make_batch_fn(recipe: VideoRecipe, data: dict):
    """batch_fn(step, g) -> {"x": (B, 3, T, S, S), "image": (B,) bool, "context": (B, T, L, D), ...}.

    Joint training: the last `image_items` items are T independent images each (one caption per frame).
    With `time_reversal` p, each clip is played backwards with probability p, captioned with the
    opposite direction: twice the motion data from the same scarce pool.
    """
    T = recipe.frames
    n_img = recipe.image_items if recipe.joint else 0
    n_vid = recipe.batch_size - n_img

    def batch_fn(step, g):
        vi = torch.randint(0, len(data["video"]["x"]), (n_vid,), generator=g)
        clips = from_uint8(data["video"]["x"][vi])                                # (Bv, 3, T, S, S)
        text = {k: v[vi] for k, v in data["video"]["text"].items()}
        direction = data["video"]["direction"][vi]
        if recipe.time_reversal:                   # played backwards: the same clip moving the other way
            back = torch.rand(n_vid, generator=g) < recipe.time_reversal
            clips = torch.where(back[:, None, None, None, None], clips.flip(2), clips)
            direction = torch.where(back, REVERSED_DIRECTION[direction], direction)
            text = {k: torch.where(back.view(-1, *[1] * (v.dim() - 1)), data["video"]["text_reversed"][k][vi], v)
                    for k, v in text.items()}
        if recipe.motion_channels:
            clips = with_motion(clips, direction, data["video"]["speed"][vi])
        x = [clips]
        text = {k: v[:, None].expand(n_vid, T, *v.shape[1:]) for k, v in text.items()}
        if n_img:
            ii = torch.randint(0, len(data["image"]["x"]), (n_img * T,), generator=g)
            imgs = from_uint8(data["image"]["x"][ii])                             # (Bi*T, 3, S, S)
            imgs = imgs.reshape(n_img, T, *imgs.shape[1:]).transpose(1, 2)        # (Bi, 3, T, S, S)
            if recipe.motion_channels:                                            # still images: no flow
                imgs = torch.cat([imgs, imgs.new_zeros(n_img, FLOW, *imgs.shape[2:])], 1)
            x.append(imgs)
            for k, v in data["image"]["text"].items():
                text[k] = torch.cat([text[k], v[ii].reshape(n_img, T, *v.shape[1:])])
        image = torch.arange(recipe.batch_size) >= n_vid
        return {"x": torch.cat(x), "image": image, **text}
    return batch_fn


def with_motion(clips: torch.Tensor, direction: torch.Tensor, speed: torch.Tensor) -> torch.Tensor:
    """Clips (B, 3, T, S, S) -> (B, 3 + 2, T, S, S): RGB then the clip's flow (`minivid.data.flow_field`).

    VideoJAM (Chefer et al. 2025, arXiv:2502.02492): a pixel loss barely notices which way a small object
    moves, but the flow of a left-moving object is the negative of a right-moving one's everywhere on it,
    so denoising the flow too makes the direction in the prompt matter to the loss.
    """
    world = WorldConfig(size=clips.shape[-1], frames=clips.shape[2])
    return torch.cat([clips, flow_field(clips, direction, speed, world)], 1)


def loss_fn_for(recipe: VideoRecipe, schedule: Schedule, null: dict):
    """Caption dropout per item (the null caption's features), then the diffusion loss."""
    def loss_fn(net, batch, g):
        B = batch["x"].shape[0]
        drop = torch.rand(B, generator=g, device=g.device).to(batch["x"].device) < recipe.p_uncond
        kw = {"image": batch["image"]}
        for k in ("context", "context_mask", "pooled"):
            nk = null[k].to(batch[k].device).expand_as(batch[k])
            kw[k] = torch.where(drop.view(B, *[1] * (batch[k].dim() - 1)), nk, batch[k])
        return diffusion_loss(net, batch["x"], schedule, recipe.objective, generator=g, cond=kw,
                              temporal_weight=recipe.temporal_weight)
    return loss_fn


# ----------------------------------------------------------------------------- models + training

def schedule_for(recipe: VideoRecipe) -> Schedule:
    return make_schedule(recipe.schedule, recipe.T)


def has_motion_channels(model) -> bool:
    """Does the model denoise flow with the pixels (RGB + FLOW channels)? Plain callables: no."""
    return getattr(getattr(model, "cfg", None), "in_channels", RGB) == RGB + FLOW


def build_model(recipe: VideoRecipe, text_dim: int, **overrides) -> UNet3D:
    io = {"in_channels": RGB + FLOW, "out_channels": RGB + FLOW} if recipe.motion_channels else {}
    return UNet3D(unet3d_config(recipe.unet, context_dim=text_dim, pooled_dim=text_dim,
                                **{**recipe.unet_overrides, **io, **overrides}))


def train_video(preset: str | Ch03Preset = "full", seed: int = 0, progress: bool = True,
                recipe: VideoRecipe | None = None, retrain: bool = False):
    """Train (or load the cached) text-to-video model. Returns (EMA model in eval mode, schedule, cond, TrainState).

    recipe overrides the preset's (the ablation trains a joint=False twin); its checkpoint is keyed by it.
    """
    p = get_preset(preset)
    r = recipe or p.video
    cond = load_conditioner(r, seed, progress)
    schedule = schedule_for(r)
    path = checkpoint_path(p, seed, r)
    if retrain and path.exists():
        path.unlink()
    data = training_data(r, cond)
    null = {k: v[0] for k, v in cond.null(1).items()}
    torch.manual_seed(seed)
    model = build_model(r, cond.dim)
    cfg = TrainConfig(steps=r.steps, batch_size=r.batch_size, lr=r.lr, ema_decay=r.ema_decay,
                      warmup_steps=r.warmup_steps, seed=seed, ckpt_path=str(path), ckpt_every=250, device="cpu",
                      progress=progress, desc=f"ch03 video U-Net ({p.name}{'' if r.joint else ', no images'})")
    state = train(model, loss_fn_for(r, schedule, null), make_batch_fn(r, data), cfg)
    return state.sampling_model.eval(), schedule, cond, state


def load_video_model(preset: str | Ch03Preset = "full", seed: int = 0, progress: bool = True):
    """(model, schedule, cond) from the cached checkpoint; CheckpointError (with how to retrain) if missing/corrupt."""
    p = get_preset(preset)
    r = p.video
    path = checkpoint_path(p, seed)
    ck = load_checkpoint(path, how_to_retrain=how_to_retrain(p.name))
    if int(ck.get("step", -1)) < r.steps:
        raise CheckpointError(f"checkpoint {path} is unfinished (step {ck.get('step')} of {r.steps}); "
                              f"{how_to_retrain(p.name)} (it resumes)")
    cond = load_conditioner(r, seed, progress)
    model = build_model(r, cond.dim)
    try:
        model.load_state_dict(ck["ema"] if ck.get("ema") is not None else ck["model"])
    except (RuntimeError, KeyError) as e:
        raise CheckpointError(f"checkpoint {path} does not fit this model ({type(e).__name__}); "
                              f"{how_to_retrain(p.name)}") from None
    return model.eval(), schedule_for(r), cond


# ----------------------------------------------------------------------------- sampling

@torch.no_grad()
def generate(model: UNet3D, schedule: Schedule, cond: TextConditioner, prompts: list[str], guidance: float = 3.0, *,
             objective: str = "v", steps: int = 50, seed: int = 0, frames: int = 8, size: int = 16,
             batch_size: int = 64, progress: bool = True, return_motion: bool = False) -> torch.Tensor:
    """One clip per prompt with DDIM + classifier-free guidance: (B, 3, frames, size, size) in [-1, 1].

    The initial noise depends only on `seed` and the position in the batch. A model with motion channels
    (`VideoRecipe.motion_channels`) denoises the flow alongside: return_motion=True returns (clips, flow
    (B, 2, frames, size, size)); without it only the clips come back.
    """
    if isinstance(prompts, str):
        prompts = [prompts]
    c = model.cfg.in_channels
    if return_motion and not has_motion_channels(model):
        raise ValueError(f"return_motion needs a model with motion channels (in_channels {RGB + FLOW}), "
                         f"this one has {c}")
    g = make_generator(seed)
    noise = torch.randn(len(prompts), c, frames, size, size, generator=g)
    outs = []
    for i in range(0, len(prompts), batch_size):
        chunk = prompts[i:i + batch_size]
        b = len(chunk)
        x = ddim_sample(model, (b, c, frames, size, size), schedule, objective, steps=steps, cond=cond(chunk),
                        uncond=cond.null(b), guidance_scale=guidance, clip=1.0, noise=noise[i:i + b], generator=g,
                        progress=progress, desc=f"DDIM-{steps} w={guidance:g} [{i + b}/{len(prompts)}]")
        outs.append(x)
    x = torch.cat(outs).clamp(-1, 1)
    return (x[:, :RGB], x[:, RGB:]) if return_motion else x[:, :RGB]


@torch.no_grad()
def direction_reliance(model: UNet3D, schedule: Schedule, cond: TextConditioner, n: int = 128,
                       levels: tuple[float, ...] = (0.3, 0.5, 0.7), *, objective: str = "v", frames: int = 8,
                       size: int = 16, seed: int = 0) -> dict:
    """Does the model listen to the direction words? Its diffusion loss on n validation clips with
    their own captions vs with the direction flipped (clips, noise and t unchanged).

    levels: noise levels as fractions of the schedule's T (0.3 -> t = 300 of 1000).
    Returns {"true": loss, "flipped": loss, "gap": flipped - true} (means over levels) on the RGB channels,
    so models with and without motion channels compare; a motion-channel model (5 input channels) also gets
    "flow_true", "flow_flipped" (its loss on the flow channels, fed the clips' true flow). A gap near 0 means
    the direction in the prompt does not change the denoiser's prediction.
    """
    b = sample_batch(n, kind="video_text", split="val", size=size, frames=frames, generator=make_generator(seed))
    flipped = time_reversed(b, seed)["captions"]
    g = make_generator(seed + 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        feats = {"true": cond(b["captions"]), "flipped": cond(flipped)}
    x = b["x"]
    motion = has_motion_channels(model)
    if motion:
        x = with_motion(x, b["labels"]["direction"], b["labels"]["speed"])
    out = {k: 0.0 for k in ("true", "flipped", *(("flow_true", "flow_flipped") if motion else ()))}
    for level in levels:
        noise = torch.randn(x.shape, generator=g)
        tt = torch.full((n,), min(int(level * schedule.T), schedule.T - 1), dtype=torch.long)
        x_t, target = q_sample(x, tt, noise, schedule), training_target(objective, x, noise, tt, schedule)
        for k in ("true", "flipped"):
            err = (model(x_t, tt, **feats[k]) - target).pow(2)
            out[k] += err[:, :RGB].mean().item() / len(levels)
            if motion:
                out[f"flow_{k}"] += err[:, RGB:].mean().item() / len(levels)
    return {**out, "gap": out["flipped"] - out["true"]}


# ----------------------------------------------------------------------------- CLI hooks

def cli_train(preset: str = "full", seed: int = 0, steps: int | None = None) -> Path:
    """`python -m minivid train ch03`: train (or finish) the text-to-video model; returns its checkpoint."""
    p = get_preset(preset)
    if steps is not None:
        p = replace(p, name=f"{p.name}-steps{steps}", video=replace(p.video, steps=steps))
    train_video(p, seed=seed)
    return checkpoint_path(p, seed)


def cli_generate(prompts: list[str], *, preset: str = "full", seed: int = 0, steps: int = 50,
                 guidance: float | None = None, frames: int | None = None) -> torch.Tensor:
    """`python -m minivid generate`: clips (B, 3, T, H, W) in [-1, 1] for the prompts.

    Loads the cached model; trains it (with a progress bar) only if the file is missing. A corrupt
    file raises CheckpointError saying how to retrain. Unknown words warn with suggestions.
    """
    p = get_preset(preset)
    path = checkpoint_path(p, seed)
    if not path.exists():
        print(f"no trained chapter-03 model for preset {p.name!r} yet; training it now ({path.name})")
        train_video(p, seed=seed)
    model, schedule, cond = load_video_model(p, seed)
    r = p.video                                          # unknown words warn (with suggestions) in cond(...)
    return generate(model, schedule, cond, list(prompts), p.guidance if guidance is None else guidance,
                    objective=r.objective, steps=steps, seed=seed, frames=frames or r.frames, size=r.size)


__all__ = ["VideoRecipe", "Ch03Preset", "PRESETS", "get_preset", "checkpoint_path", "load_conditioner",
           "encode_captions", "training_data", "make_batch_fn", "loss_fn_for", "schedule_for", "build_model",
           "has_motion_channels", "with_motion", "train_video", "load_video_model", "generate", "direction_reliance",
           "cli_train", "cli_generate"]
