"""Chapter 04 recipes: Make-A-Video - temporal layers grown on the frozen chapter-02 text-to-image model,
trained on unlabelled video; masked frame interpolation and extrapolation (Singer et al. 2022, arXiv:2209.14792).

* the video model: chapter 02's U-Net (`pretrained("ch02.t2i")`), frozen, with pseudo-3-D layers inserted
  (`minivid.models.pseudo3d`), trained on the *unlabelled* clip pool (`video_pool`): no caption is ever read;
* the conditioning question. The paper conditions its decoder on CLIP *image* embeddings, which unlabelled video
  has, and maps text to them with a prior at sampling time. The mini-CLIP's towers share one space, so each clip's
  first frame is replaced by the nearest appearance caption of the training combinations ("a big red circle"), a
  pseudo-caption read off the pixels; at sampling the prompt takes its place through a prior (`prior_captions`;
  `VideoRecipe.conditioning="null"`: the unconditional branch only - the chapter measures both);
* video-text fine-tuning (`ch04_finetune`) and the frame-interpolation network (`ch04_interp`), re-exported here.

    model, schedule, cond = load_video_model("full")
    clips = sample_prompts(model, schedule, cond, ["a big red circle moving to the right"] * 4)  # (4, 3, 8, 16, 16)
"""
from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

from minivid.data import WorldConfig, estimate_flow, estimate_velocity, from_uint8, video_pool
from minivid.diffusion import Schedule, diffusion_loss, mixed_noise, shifted_timesteps
from minivid.models.pseudo3d import Pseudo3DConfig, inflate, temporal_parameters
from minivid.pipelines import common
from minivid.pipelines.ch04_prior import (PRIORS, appearance_captions, prior_captions, prior_motion,  # noqa: F401
                                          pseudo_captions)
from minivid.pipelines.common import (
    ChapterCLI,
    added_field,
    guided_ddim,
    load_or_train,
    load_weights,
    pick_preset,
    pretrained,
    pretrained_path,
    provides,
    with_steps,
)
from minivid.text import TextConditioner, caption_dropout

MODEL_VERSION = 2          # bump when an architecture or loss of this chapter changes (stale caches retrain)
RGB, FLOW = 3, 2           # channels: the pixels, and the optical flow (motion channels only)


@dataclass(frozen=True)
class VideoRecipe:
    image_preset: str = "full"         # the frozen chapter-02 image model and text encoder
    image_seed: int = 0                # ... trained at this seed (every seed of this chapter grows the same one)
    pseudo3d: dict = field(default_factory=lambda: {"attn_levels": (0, 1)})   # Pseudo3DConfig overrides
    conditioning: str = "retrieved"    # "retrieved": a frame's CLIP image embedding -> nearest caption | "null"
    p_uncond: float = 0.1              # chance a clip trains with the null caption (retrieved only)
    size: int = 16
    frames: int = 8
    steps: int = 1700
    batch_size: int = 8
    lr: float = 1e-3
    warmup_steps: int = 100
    ema_decay: float = 0.995
    video_pool: int = 8000             # unlabelled clips (plentiful)
    time_reversal: float = 0.5         # chance a clip is played backwards (free data: no caption to fix)
    noise_alpha: float = 1.0           # noise partly shared across frames, in training and sampling (`mixed_noise`)
    # also denoise the clip's flow, read off its pixels (`estimate_flow`; VideoJAM, as chapter 03), through new
    # layers that start at zero. An added field: off, the models trained before it keep their cache keys. Tried and
    # not kept: chapter 04 section 6 (`bench ch04_ablations`) and the notes there on the runs by hand
    motion_channels: bool = added_field(False)
    # added: timesteps SNR-shifted, noisier (`shifted_timesteps`, chapter 06), 1: uniform; not kept (ch04_ablations)
    t_shift: float = added_field(1.0)
    # beyond the paper: the temporal layers also read the clip's velocity, read off its pixels (`estimate_velocity`,
    # as the paper's decoder reads the frame rate) through a zero-init embedding; at sampling it comes from the
    # prompt (`prior_motion`). An unconditional model of four directions averaged them into diagonal paths
    motion_cue: bool = added_field(False)

    def __post_init__(self):
        if self.t_shift <= 0:
            raise ValueError(f"t_shift must be > 0, got {self.t_shift}")
        if self.noise_alpha < 0:
            raise ValueError(f"noise_alpha must be >= 0, got {self.noise_alpha}")
        if self.conditioning not in ("retrieved", "null"):
            raise ValueError(f"conditioning must be 'retrieved' or 'null', got {self.conditioning!r}")


@dataclass(frozen=True)
class FinetuneRecipe:
    """The paper's optional third step: a short fine-tune of the temporal layers on captioned clips."""
    steps: int = 300
    batch_size: int = 8
    lr: float = 5e-4
    warmup_steps: int = 20
    ema_decay: float = 0.99
    p_uncond: float = 0.1
    time_reversal: float = 0.5         # clips played backwards, their caption's direction flipped
    # each temporal attention gains a zero-init cross-attention to the caption's tokens (`add_text_cross_attn`)
    # before the fine-tune. Without it the temporal layers hear the text only through what the frozen image layers
    # made of it, and the image model never heard a direction word: the curve stayed at chance (recorded 2026-12-01:
    # 0.20-0.27 at 0 to 2,000 clips)
    text_cross_attn: bool = True


@dataclass(frozen=True)
class InterpRecipe:
    """The frame-interpolation network: known frames + a mask in, every frame out (unlabelled clips)."""
    interp_frames: int = 15            # 8 known frames -> one new frame between each pair
    extrap_frames: int = 12            # 8 known frames -> 4 more
    steps: int = 600
    batch_size: int = 8
    lr: float = 1e-3
    warmup_steps: int = 50
    ema_decay: float = 0.995
    pool: int = 2000                   # clips of each kind
    gap: int = 4                       # a third task: the middle `gap` frames of an extrap_frames clip removed
    # denoise the clip minus the linear blend of its known frames (`linear_fill`): only what blending gets wrong
    # is left to learn (chapter 04 section 5 says why, with the figures without it)
    residual: bool = True
    # fine-tune every weight, as the paper does its interpolation decoder, not only the new layers: the frozen
    # image layers were made to denoise a clip, not to copy known frames or to predict a residual
    train_all: bool = True
    # what a residual network adds to: "blend" (`linear_fill`) or "path" (`path_fill`: the known frames moved along
    # their path, read off them, where the nearest known frame is more than one frame away). Added: "blend" keeps keys
    base: str = added_field("blend")

    def __post_init__(self):
        if self.base not in ("blend", "path"):
            raise ValueError(f"base must be 'blend' or 'path', got {self.base!r}")
        if not 0 < self.gap <= self.extrap_frames - 2:
            raise ValueError(f"gap must leave a known frame on each side: 1..{self.extrap_frames - 2}, got {self.gap}")


@dataclass(frozen=True)
class Ch04Preset:
    name: str
    video: VideoRecipe
    finetune: FinetuneRecipe = FinetuneRecipe()
    interp: InterpRecipe = InterpRecipe()
    finetune_clips: tuple[int, ...] = (0, 100, 500, 2000)
    eval_samples: int = 256
    eval_steps: int = 20
    guidance: float = 1.0              # the unlabelled-video model: its text only ever said what things look like
    finetune_guidance: float = 3.0     # fine-tuned on captions: direction words need guidance (chapter 03's scale)
    prior: str | None = "parse"        # the unlabelled-video model hears each prompt as `prior_captions(how=prior)`;
                                       # None: the prompt as written
    interp_eval: int = 64
    ablation_base: VideoRecipe | None = None   # the recipe `bench ch04_ablations`' arms change (None: `video`)


CUE = dict(motion_cue=True, pseudo3d={"attn_levels": (0, 1), "aligned_attn": True})
_TINY = dict(image_preset="smoke", frames=4, steps=3, batch_size=2, warmup_steps=0, video_pool=32)

PRESETS = {
    "smoke": Ch04Preset(
        name="smoke",
        video=VideoRecipe(**_TINY, **CUE), ablation_base=VideoRecipe(**_TINY),
        finetune=FinetuneRecipe(steps=2, batch_size=2, warmup_steps=0),
        interp=InterpRecipe(interp_frames=7, extrap_frames=6, steps=3, batch_size=2, warmup_steps=0, pool=16, gap=2,
                            base="path"),
        finetune_clips=(0, 8), eval_samples=4, eval_steps=2, interp_eval=2,
    ),
    # the headline recipe: the motion cue with temporal attention along its path (the ablation's last arm, chapter 04
    # section 6), at 900 steps: its step is 0.45-0.65 s on 2 cores (the attention resamples each frame twice), and by
    # hand at seed 1 it was at plausibility 0.99, direction 1.00 by step 1,000 (0.69 and 0.93 at step 250)
    "full": Ch04Preset(name="full", video=VideoRecipe(**CUE, steps=900), ablation_base=VideoRecipe(),
                       interp=InterpRecipe(base="path")),
}


def get_preset(name: str | Ch04Preset) -> Ch04Preset:
    return pick_preset(name, PRESETS, "ch04")


def checkpoint_path(what: str, preset: str | Ch04Preset, seed: int = 0, recipe: VideoRecipe | None = None,
                    clips: int = 0) -> Path:
    """Where a trained model lives: what = "video" | "finetune" (with `clips` captioned clips) | "interp"."""
    p = get_preset(preset)
    r = recipe or p.video
    image = pretrained_path("ch02.t2i", r.image_preset, r.image_seed).name
    name = p.name if r == p.video else f"{p.name}-{r.conditioning}-{common.recipe_key(r, seed=seed)}"
    parts = {"video": (r,), "finetune": (r, p.finetune, clips), "interp": (r, p.interp)}
    if what not in parts:
        raise ValueError(f"what must be one of {sorted(parts)}, got {what!r}")
    tag = f"finetune{clips}" if what == "finetune" else what
    return common.checkpoint_path("ch04", tag, name, seed, *parts[what], image, version=MODEL_VERSION)


def train_command(preset) -> str:
    return f"python -m minivid train ch04 --preset {get_preset(preset).name}"


# ----------------------------------------------------------------------------- the frozen image model, grown

_IMAGE_MODELS: dict[tuple, common.Denoiser] = {}      # checkpoint (path, mtime) -> the loaded frozen model


def image_model(recipe: VideoRecipe, progress: bool = True) -> common.Denoiser:
    """The frozen chapter-02 text-to-image model (model, schedule, cond, objective, size), trained first if absent;
    loaded once per checkpoint file (everything here asks for it; never modified: `build_video_model` grows a copy)."""
    path = pretrained_path("ch02.t2i", recipe.image_preset, recipe.image_seed)
    key = (str(path), path.stat().st_mtime_ns if path.exists() else None)
    if key not in _IMAGE_MODELS:
        image = pretrained("ch02.t2i", recipe.image_preset, recipe.image_seed, progress)
        key = (str(path), path.stat().st_mtime_ns if path.exists() else None)      # it may have just been trained
        _IMAGE_MODELS[key] = image
    return _IMAGE_MODELS[key]


def build_video_model(recipe: VideoRecipe, unet) -> torch.nn.Module:
    """A copy of the image U-Net with pseudo-3-D layers (and the motion channels' layers); only they require grad."""
    net = inflate(copy.deepcopy(unet), Pseudo3DConfig(**recipe.pseudo3d))
    if recipe.motion_channels:
        net.add_extra_channels(FLOW)
    if recipe.motion_cue:
        net.add_extra_embedding(2)                             # (vx, vy)
    if recipe.motion_channels or recipe.motion_cue:
        temporal_parameters(net)                               # inflate froze all but its own layers: these train too
    return net


def cue_inputs(v: torch.Tensor, frames: int) -> dict:
    """The model inputs of the motion cue from velocities v (..., 2) (`estimate_velocity`'s units: the fast speed is
    1): the vector itself ("extra_emb", into the block embedding) and the displacement per frame in grid_sample's
    units ("motion", for temporal attention along the path, `Pseudo3DConfig.aligned_attn`)."""
    world = WorldConfig(frames=frames)
    return {"extra_emb": v, "motion": v * 2 * world.speed_fast * world.speed_scale()}


def channels(model) -> int:
    """The channels a (video or interpolation) model denoises: RGB, plus FLOW with motion channels."""
    video = getattr(model, "video", model)                     # a FrameInterpolator wraps the video model
    return RGB + (0 if getattr(video, "extra_io", None) is None else video.extra_io.n)


def with_flow(x: torch.Tensor) -> torch.Tensor:
    """Clips (B, 3, T, S, S) -> (B, 3 + 2, T, S, S): RGB then the flow read off the pixels (`estimate_flow`)."""
    return torch.cat([x, estimate_flow(x, WorldConfig(size=x.shape[-1], frames=x.shape[2]))], 1)


def training_data(recipe: VideoRecipe, cond: TextConditioner, progress: bool = True) -> dict:
    """{"x": (N, 3, T, S, S) uint8 unlabelled clips, "text": their (pseudo-)caption features or None, "captions"}."""
    pool = video_pool(recipe.size, recipe.frames, recipe.video_pool)
    if recipe.conditioning == "null":
        return {"x": pool["x"], "text": None, "captions": None}
    caps = pseudo_captions(pool["x"], recipe, progress)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        text = cond(caps)
    return {"x": pool["x"], "text": text, "captions": caps}


def make_batch_fn(recipe, data: dict, batch_size: int | None = None, time_reversal: float | None = None):
    """batch_fn(step, g) -> {"x": (B, 3, T, S, S), "context", "context_mask", "pooled"} (null text when absent).

    With `time_reversal` p a clip is played backwards with probability p; when the data has
    "text_reversed" (captioned clips), its caption flips direction with it. With `recipe.motion_channels` "x" also
    carries the (played) clip's flow, read off its pixels: (B, 3 + 2, T, S, S).
    """
    B = batch_size or recipe.batch_size
    p_back = recipe.time_reversal if time_reversal is None else time_reversal

    def batch_fn(step, g):
        idx = torch.randint(0, len(data["x"]), (B,), generator=g)
        x = from_uint8(data["x"][idx])
        back = torch.rand(B, generator=g) < p_back
        x = torch.where(back[:, None, None, None, None], x.flip(2), x)
        out = {"x": with_flow(x) if recipe.motion_channels else x}
        if recipe.motion_cue:                                  # the velocity of the clip as played
            out.update(cue_inputs(estimate_velocity(x, WorldConfig(size=x.shape[-1], frames=x.shape[2])), x.shape[2]))
        if data.get("text") is not None:
            for k, v in data["text"].items():
                out[k] = v[idx]
                if data.get("text_reversed") is not None:
                    out[k] = torch.where(back.view(B, *[1] * (v.dim() - 1)), data["text_reversed"][k][idx], out[k])
        return out
    return batch_fn


def loss_fn_for(schedule: Schedule, objective: str, null: dict, p_uncond: float, noise_alpha: float = 0.0,
                t_shift: float = 1.0):
    """Caption dropout (everything is dropped when the batch has no text), then the diffusion loss on noise
    shared across frames by `noise_alpha` (`mixed_noise`), its timesteps SNR-shifted by `t_shift` (1 = uniform)."""
    def loss_fn(net, batch, g):
        B = batch["x"].shape[0]
        noise = mixed_noise(batch["x"].shape, noise_alpha, g, device=batch["x"].device)   # drawn where g lives
        nul = null if "extra_emb" not in batch else {**null, **cue_inputs(batch["extra_emb"].new_zeros(2), 2)}
        if "context" in batch:                                 # the motion cue is dropped with the caption (0: unknown)
            text, _ = caption_dropout({k: batch[k] for k in nul}, nul, p_uncond, generator=g)
        else:
            text = {k: v.expand(B, *v.shape) for k, v in nul.items()}
        t = shifted_timesteps(B, schedule, t_shift, generator=g, device=batch["x"].device)   # drawn as inside
        return diffusion_loss(net, batch["x"], schedule, objective, generator=g, cond=text, noise=noise, t=t)
    return loss_fn


def train_video(preset: str | Ch04Preset = "full", seed: int = 0, progress: bool = True,
                recipe: VideoRecipe | None = None, retrain: bool = False):
    """Train (or load) the temporal layers on unlabelled video. Returns (EMA model, schedule, cond, TrainState)."""
    p = get_preset(preset)
    r = recipe or p.video
    image = image_model(r, progress)
    schedule, cond = image.schedule, image.cond
    data = training_data(r, cond, progress)
    torch.manual_seed(seed)
    model = build_video_model(r, image.model)
    loss_fn = loss_fn_for(schedule, image.objective, cond.null_features(), r.p_uncond, r.noise_alpha, r.t_shift)
    state = load_or_train(model, loss_fn,
                          make_batch_fn(r, data), r, checkpoint_path("video", p, seed, r), seed=seed,
                          progress=progress, retrain=retrain, params=temporal_parameters(model), ckpt_every=250,
                          desc=f"ch04 temporal layers ({p.name}, {r.conditioning})", command=train_command(p))
    return state.sampling_model.eval(), schedule, cond, state


@provides("ch04.video", path=lambda preset, seed=0: checkpoint_path("video", preset, seed))
def load_video_model(preset: str | Ch04Preset = "full", seed: int = 0, progress: bool = True):
    """(model, schedule, cond) of a preset: the cached video model, trained first (with progress bars) if absent."""
    p = get_preset(preset)
    path = checkpoint_path("video", p, seed)
    if not path.exists():
        print(f"no trained chapter-04 model for preset {p.name!r} (seed {seed}) yet; training it now ({path.name})")
        return train_video(p, seed, progress)[:3]
    image = image_model(p.video, progress)
    model = load_weights(build_video_model(p.video, image.model), path, steps=p.video.steps, command=train_command(p))
    return model, image.schedule, image.cond


def generate(model, schedule: Schedule, cond: TextConditioner, prompts: list[str], guidance: float = 3.0, *,
             objective: str = "v", steps: int = 50, seed: int = 0, frames: int = 8, size: int = 16,
             batch_size: int = 64, progress: bool = True, noise_alpha: float | None = None,
             motion: torch.Tensor | None = None) -> torch.Tensor:
    """One clip per prompt with DDIM + classifier-free guidance: (B, 3, frames, size, size) in [-1, 1]. noise_alpha:
    the starting noise's share across frames (`mixed_noise`; by default the recipe's); motion: (B, 2) velocities for a
    model with the motion cue (`prior_motion`), given to both guidance branches."""
    alpha = VideoRecipe.noise_alpha if noise_alpha is None else noise_alpha
    x = guided_ddim(model, schedule, cond, prompts, (channels(model), frames, size, size), guidance=guidance,
                    objective=objective, steps=steps, seed=seed, batch_size=batch_size, progress=progress,
                    noise_alpha=alpha, extra=None if motion is None else cue_inputs(motion, frames))
    return x[:, :RGB]                                          # a motion-channel model's flow is not returned


# ----------------------------------------------------------------------------- command line

def cli_train(preset: str = "full", seed: int = 0, steps: int | None = None) -> Path:
    """`python -m minivid train ch04`: the temporal layers on unlabelled video (the frozen ch02 model first)."""
    p = with_steps(get_preset(preset), "video", steps)
    train_video(p, seed=seed)
    return checkpoint_path("video", p, seed)


def sample_prompts(model, schedule: Schedule, cond: TextConditioner, prompts: list[str], preset="full", *,
                   seed: int = 0, steps: int | None = None, guidance: float | None = None, frames: int | None = None,
                   prior="preset", motion="prompt", batch_size: int = 64, progress: bool = True,
                   noise_alpha: float | None = None) -> torch.Tensor:
    """Prompts as a user writes them -> clips (B, 3, frames, size, size) in [-1, 1] from the preset's video model.

    Each prompt is heard through a prior (`prior_captions`; "preset": the preset's, None: as written). A model with
    the motion cue moves as the prompt's words say (`prior_motion`; motion="random": one of the world's motions at
    random, whatever the prompt says; a (B, 2) tensor: that velocity). steps, guidance and noise_alpha (the starting
    noise's share across frames, `mixed_noise`): the preset's by default, the share it trained with."""
    p = get_preset(preset)
    r, kw = p.video, {}
    said = prior_captions(list(prompts), r, p.prior if prior == "preset" else prior, progress=False)
    if r.motion_cue:
        kw["motion"] = motion if torch.is_tensor(motion) else prior_motion(
            list(prompts) if motion == "prompt" else [""] * len(said), frames or r.frames, seed)
    return generate(model, schedule, cond, said, p.guidance if guidance is None else guidance,
                    objective=image_model(r, False).objective, steps=p.eval_steps if steps is None else steps,
                    seed=seed, frames=frames or r.frames, size=r.size, batch_size=batch_size, progress=progress,
                    noise_alpha=r.noise_alpha if noise_alpha is None else noise_alpha, **kw)


def cli_generate(prompts: list[str], *, preset: str = "full", seed: int = 0, steps: int = 50,
                 guidance: float | None = None, frames: int | None = None) -> torch.Tensor:
    """`python -m minivid generate --model ch04`: clips for the prompts; `seed` picks the sampling noise only."""
    p, (model, schedule, cond) = get_preset(preset), load_video_model(preset, seed=0)
    heard = prior_captions(list(prompts), p.video, p.prior, progress=False)
    for said, h in sorted(set(zip(prompts, heard))) if p.prior else ():
        print(f"ch04: {said!r} -> the model, trained on uncaptioned clips, is told the appearance {h!r}"
              + (" and the motion its words name (its prior)" if p.video.motion_cue else ""))
    return sample_prompts(model, schedule, cond, list(prompts), p, seed=seed, steps=steps, guidance=guidance,
                          frames=frames)


CLI = ChapterCLI(train=cli_train, generate=cli_generate, frames=(2, 32), demo_rank=4,  # the demo's: beats ch03 (§5)
                 models=("ch02.text_encoder", "ch04.video"),
                 summary="Make-A-Video: temporal layers on the frozen ch02 image model, from unlabelled video")

__all__ = ["VideoRecipe", "FinetuneRecipe", "InterpRecipe", "Ch04Preset", "PRESETS", "get_preset", "checkpoint_path",
           "image_model", "build_video_model", "cue_inputs", "channels", "with_flow", "appearance_captions",
           "pseudo_captions", "prior_captions", "prior_motion", "PRIORS", "training_data", "make_batch_fn",
           "loss_fn_for", "train_video", "load_video_model", "generate", "sample_prompts", "finetune", "train_command",
           "cli_train", "cli_generate", "CLI"]

# the paper's optional third step and the frame-interpolation half of the chapter (both build on the video model)
from minivid.pipelines.ch04_finetune import finetune  # noqa: E402
from minivid.pipelines.ch04_interp import (extrapolate, fill_frames, fill_gap, gap_mask, interp_batch_fn,  # noqa: E402
                                           interp_loss_fn, interp_pools, interpolate, linear_blend, linear_fill,
                                           path_fill, train_interpolator)

__all__ += ["interp_pools", "interp_batch_fn", "interp_loss_fn", "train_interpolator", "fill_frames", "interpolate",
            "extrapolate", "gap_mask", "fill_gap", "linear_blend", "linear_fill", "path_fill"]
