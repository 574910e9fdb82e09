"""Chapter 03 recipes: the first text-to-video model, a factorised 3-D U-Net trained jointly on video and images.

Follows Video Diffusion Models (Ho et al. 2022, arXiv:2204.03458): a space-time U-Net
(minivid.models.unet3d), conditioned on the frozen chapter-02 text encoder (cross-attention to
the tokens plus the pooled vector), classifier-free guidance (arXiv:2207.12598), v-prediction
on a cosine schedule (arXiv:2202.00512, as chapter 02) shifted towards noise for the clip's extra frames
(arXiv:2301.11093, §3.1; `VideoRecipe.schedule_shift`), DDIM sampling (arXiv:2010.02502).

Data, as the field has it: video-text pairs are *scarce* - a small fixed pool of captioned clips
(`VideoRecipe.video_pool`, 2,000 in the full preset, rendered once and cached) - while
image-text pairs are plentiful (the chapter-02 pool of 20,000). Joint training fills part of
every batch with "image items": T independent captioned images, masked so they never see each
other. Held-out attribute combinations never appear in either pool.

    model, schedule, cond, state = train_video("full")           # cached under cache_dir("checkpoints")
    x = generate(model, schedule, cond, ["a big red circle moving to the right"] * 4)   # (4, 3, 8, 16, 16)
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

from minivid.data import (
    REVERSED_DIRECTION,
    WorldConfig,
    flow_field,
    from_uint8,
    image_text_pool,
    time_reversed,
    video_text_pool,
)
from minivid.diffusion import Schedule, diffusion_loss
from minivid.models.unet3d import UNet3D, unet3d_config
from minivid.pipelines import common
from minivid.pipelines.common import (
    ChapterCLI,
    guided_ddim,
    load_or_train,
    load_weights,
    pick_preset,
    pretrained,
    pretrained_path,
    provides,
    schedule_for,
    with_steps,
)
from minivid.text import TextConditioner, caption_dropout

MODEL_VERSION = 1          # bump when an architecture or loss of this chapter changes (stale caches retrain)


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
    schedule_shift: float = 1.5        # every SNR / 1.5^2: more of training and sampling where direction is decided
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
    # the schedule-shift ablation's arms, (schedule_shift, seed): unshifted at every seed, larger shifts at seed 1
    shift_ablation: tuple[tuple[float, int], ...] = ((1.0, 0), (1.0, 1), (1.0, 2), (2.0, 1), (3.0, 1))


PRESETS = {
    "smoke": Ch03Preset(
        name="smoke",
        video=VideoRecipe(unet="unet3d-tiny", unet_overrides={}, text_preset="smoke", image_items=2, T=100,
                          frames=4, steps=4, batch_size=4, warmup_steps=0, video_pool=64, image_pool=256),
        eval_samples=8, eval_steps=4, timing_steps=(4, 2), timing_clips=2, ablation_steps=3, ablation_samples=4,
        shift_ablation=((1.0, 0), (2.0, 0)),
    ),
    "full": Ch03Preset(name="full", video=VideoRecipe()),
}


def get_preset(name: str | Ch03Preset) -> Ch03Preset:
    return pick_preset(name, PRESETS, "ch03")


def checkpoint_path(preset: str | Ch03Preset, seed: int = 0, recipe: VideoRecipe | None = None) -> Path:
    """Where a preset's trained video model lives (keyed by the recipe and the text encoder's checkpoint)."""
    p = get_preset(preset)
    r = recipe or p.video
    text = pretrained_path("ch02.text_encoder", r.text_preset, seed).name
    return common.checkpoint_path("ch03", "video" if r.joint else "video-nojoint", p.name, seed, r, text,
                                  version=MODEL_VERSION)


def train_command(preset) -> str:
    """The shell command that trains this chapter's model of a preset (named in error messages)."""
    return f"python -m minivid train ch03 --preset {get_preset(preset).name}"


# ----------------------------------------------------------------------------- data + text

def load_conditioner(recipe: VideoRecipe, seed: int = 0, progress: bool = True) -> TextConditioner:
    """The frozen chapter-02 text encoder wrapped for conditioning (trained first if absent)."""
    return pretrained("ch02.conditioner", recipe.text_preset, seed, progress)


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
    vid = video_text_pool(recipe.size, recipe.frames, recipe.video_pool)  # the clips chapter 02's mini-CLIP saw
    img = image_text_pool(recipe.size, recipe.image_pool)
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
    """Caption dropout per item (`caption_dropout` with the null caption's features), then the diffusion loss."""
    def loss_fn(net, batch, g):
        text = {k: batch[k] for k in ("context", "context_mask", "pooled")}
        kw, _ = caption_dropout(text, null, recipe.p_uncond, generator=g)
        return diffusion_loss(net, batch["x"], schedule, recipe.objective, generator=g,
                              cond={"image": batch["image"], **kw}, temporal_weight=recipe.temporal_weight)
    return loss_fn


# ----------------------------------------------------------------------------- models + training

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
    data = training_data(r, cond)
    torch.manual_seed(seed)
    model = build_model(r, cond.dim)
    state = load_or_train(model, loss_fn_for(r, schedule, cond.null_features()), make_batch_fn(r, data), r,
                          checkpoint_path(p, seed, r), seed=seed, progress=progress, retrain=retrain, ckpt_every=250,
                          command=train_command(p),
                          desc=f"ch03 video U-Net ({p.name}{'' if r.joint else ', no images'})")
    return state.sampling_model.eval(), schedule, cond, state


@provides("ch03.video", path=lambda preset, seed=0: checkpoint_path(preset, seed))
def load_video_model(preset: str | Ch03Preset = "full", seed: int = 0, progress: bool = True):
    """(model, schedule, cond) of a preset: the cached model, trained first (with a progress bar) if absent.

    A corrupt, unfinished or ill-fitting checkpoint raises CheckpointError saying what to do.
    """
    p = get_preset(preset)
    path = checkpoint_path(p, seed)
    if not path.exists():
        print(f"no trained chapter-03 model for preset {p.name!r} (seed {seed}) yet; training it now ({path.name})")
        train_video(p, seed=seed, progress=progress)
    cond = load_conditioner(p.video, seed, progress)
    model = load_weights(build_model(p.video, cond.dim), path, steps=p.video.steps, command=train_command(p))
    return model, schedule_for(p.video), cond


# ----------------------------------------------------------------------------- sampling

@torch.no_grad()
def generate(model: UNet3D, schedule: Schedule, cond: TextConditioner, prompts: list[str], guidance: float = 3.0, *,
             objective: str = "v", steps: int = 50, seed: int = 0, frames: int = 8, size: int = 16,
             batch_size: int = 64, progress: bool = True, return_motion: bool = False,
             noise_alpha: float = 0.0) -> torch.Tensor:
    """One clip per prompt with DDIM + classifier-free guidance: (B, 3, frames, size, size) in [-1, 1].

    The initial noise depends only on `seed` and the position in the batch; noise_alpha: its share across frames
    (`mixed_noise`; 0, independent frames, as this chapter trains). A model with motion channels
    (`VideoRecipe.motion_channels`) denoises the flow alongside: return_motion=True returns (clips, flow
    (B, 2, frames, size, size)); without it only the clips come back.
    """
    c = model.cfg.in_channels
    if return_motion and not has_motion_channels(model):
        raise ValueError(f"return_motion needs a model with motion channels (in_channels {RGB + FLOW}), "
                         f"this one has {c}")
    x = guided_ddim(model, schedule, cond, prompts, (c, frames, size, size), guidance=guidance, objective=objective,
                    steps=steps, seed=seed, batch_size=batch_size, progress=progress, noise_alpha=noise_alpha)
    return (x[:, :RGB], x[:, RGB:]) if return_motion else x[:, :RGB]


def sample_prompts(model: UNet3D, schedule: Schedule, cond: TextConditioner, prompts: list[str], preset="full", *,
                   seed: int = 0, steps: int | None = None, guidance: float | None = None, frames: int | None = None,
                   batch_size: int = 64, progress: bool = True, noise_alpha: float | None = None) -> torch.Tensor:
    """Clips (B, 3, frames, size, size) in [-1, 1] for the prompts from a model of the preset's recipe (its objective,
    frames and size); steps, guidance and noise_alpha (as `generate`'s; None: 0, as this chapter trains): the
    preset's by default. Later chapters sample a chapter's model by this."""
    p = get_preset(preset)
    r = p.video
    return generate(model, schedule, cond, list(prompts), p.guidance if guidance is None else guidance,
                    objective=r.objective, steps=p.eval_steps if steps is None else steps, seed=seed,
                    frames=frames or r.frames, size=r.size, batch_size=batch_size, progress=progress,
                    noise_alpha=0.0 if noise_alpha is None else noise_alpha)


# ----------------------------------------------------------------------------- command line

def cli_train(preset: str = "full", seed: int = 0, steps: int | None = None) -> Path:
    """`python -m minivid train ch03`: train (or finish) the text-to-video model; returns its checkpoint."""
    p = with_steps(get_preset(preset), "video", steps)
    train_video(p, seed=seed)
    return checkpoint_path(p, seed)


def cli_generate(prompts: list[str], *, preset: str = "full", seed: int = 0, steps: int = 50,
                 guidance: float | None = None, frames: int | None = None) -> torch.Tensor:
    """`python -m minivid generate --model ch03`: clips (B, 3, T, H, W) in [-1, 1] for the prompts.

    `seed` picks the sampling noise only: the model is the preset's trained one (training seed 0), loaded
    from the cache or trained once if absent. Unknown words warn with suggestions.
    """
    model, schedule, cond = load_video_model(preset, seed=0)
    return sample_prompts(model, schedule, cond, list(prompts), preset, seed=seed, steps=steps, guidance=guidance,
                          frames=frames)


CLI = ChapterCLI(train=cli_train, generate=cli_generate, frames=(1, 32), demo_rank=3,
                 models=("ch02.text_encoder", "ch03.video"),
                 summary="Video Diffusion Models: a factorised space-time 3-D U-Net, joint image-video training")

__all__ = ["VideoRecipe", "Ch03Preset", "PRESETS", "get_preset", "checkpoint_path", "load_conditioner",
           "encode_captions", "training_data", "make_batch_fn", "loss_fn_for", "schedule_for", "build_model",
           "has_motion_channels", "with_motion", "train_video", "load_video_model", "generate", "sample_prompts",
           "cli_train", "cli_generate", "CLI", "RGB", "FLOW"]
