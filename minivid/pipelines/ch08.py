"""Chapter 08 recipes: a diffusion transformer on spacetime patches (DiT, Peebles & Xie 2022, arXiv:2212.09748; OpenAI's
2024 Sora report), trained with flow matching (rectified flow: arXiv:2209.03003, arXiv:2210.02747; as SD3,
arXiv:2403.03206) on chapter 07's causal-VAE latents, text read through the frozen chapter-02 encoder.

    dit, state = train_dit("full")                                       # the chapter's model
    clips = generate(["a big red circle moving to the right"] * 4, preset="full")    # (4, 3, 17, 32, 32)
    clips = generate([...], frames=13)         # a length it never trained on (Sora's flexibility, measured)

* Data ("latent"): `pretrained("ch07.latents")` - the 2000 captioned clips of 17 frames at 32x32 as scaled
  posteriors (4, 5, 8, 8), and the same clips played backwards encoded on their own (a causal VAE's latents cannot
  simply be flipped in time: its first latent frame is an image). Every batch draws a fresh posterior sample.
* Clip lengths: a causal VAE makes variable length free - the latents of a clip's first 1 + 4a frames are exactly
  the first 1 + a latent frames of the whole clip's (chapter 07's causality test) - so a recipe may train on several
  lengths (`frames`, one length per batch) by cutting latent prefixes, and sample another.
* "pixel": the same transformer on RGB clips (patches of pixels), the chapter's comparison.
* objective "flow": the velocity noise - x0 on the straight path x_t = (1 - t) x0 + t noise, t ~ logit-normal
  (SD3), sampled by Euler or Heun (`common.guided_flow`); objective "v": the course's v-prediction on a cosine
  schedule, sampled by DDIM (`common.guided_ddim`) - the chapter's like-for-like comparison of the two.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from minivid.data import from_uint8, time_reversed, video_text_pool
from minivid.diffusion import diffusion_loss
from minivid.diffusion.flow import FLOW_METHODS, T_SAMPLERS, flow_matching_loss
from minivid.models.dit import DiT, dit_config
from minivid.models.video_vae import frame_count_error
from minivid.pipelines import ch07, common
from minivid.pipelines.ch03 import encode_captions
from minivid.pipelines.common import (
    ChapterCLI,
    guided_ddim,
    guided_flow,
    is_finished,
    lazy_batches,
    load_or_train,
    load_weights,
    pick_preset,
    pretrained,
    pretrained_path,
    provides,
    schedule_for,
    with_steps,
)
from minivid.text import caption_dropout

MODEL_VERSION = 1          # bump when an architecture or loss of this chapter changes (stale caches retrain)
SPACES = ("latent", "pixel")
OBJECTIVES = ("flow", "v")


def _latent_frames(T: int, factor: int = 4) -> int:
    """1 + k latent frames for T = 1 + factor*k (a clear error otherwise). `latent_frames` is exercise 7.1: a
    student copy of this chapter must import while that exercise is open."""
    if not isinstance(T, int) or T < 1 or (T - 1) % factor:
        raise frame_count_error(T, factor, "frames")
    return 1 + (T - 1) // factor


@dataclass(frozen=True)
class DiTRecipe:
    """A DiT and its training on captioned Shapes World clips, in chapter 07's latent space or on pixels."""
    space: str = "latent"              # "latent": chapter 07's scaled causal-VAE latents | "pixel": RGB clips
    model: str = "dit-small"           # a preset of minivid.models.dit.dit_config
    overrides: dict = field(default_factory=dict)          # DiTConfig fields: patch, attention, depth, ...
    vae_preset: str = "full"           # "latent": whose latents (pretrained("ch07.latents", vae_preset))
    text_preset: str = "full"          # the frozen chapter-02 text encoder
    frames: tuple[int, ...] = (17,)    # clip lengths trained on, in video frames (1 + 4k for "latent")
    size: int = 32                     # frame side ("latent": chapter 07's clips, 32x32 -> 8x8 latents)
    pool: int = 2000                   # "pixel": captioned clips (the latent pool is chapter 07's export)
    objective: str = "flow"            # "flow": rectified-flow velocity | "v": v-prediction on `schedule`, DDIM
    t_sampler: str = "logit_normal"    # "flow": training times (SD3's logit-normal, or "uniform")
    # "flow", logit-normal: t = sigmoid(N(t_loc, 1)). SD3's 0 centres training on the middle of the path; 1 moves it
    # towards the noise (median t 0.73), where a clip's layout and motion are decided, as chapter 03's schedule shift
    # does. The bench judges both at every seed (`tloc0_*`): at 0 the sense of a direction is a coin toss at 2 of 3
    # seeds (left/right, up/down: clips that are each other played backwards).
    t_loc: float = 1.0
    T: int = 1000                      # "v": the diffusion process
    schedule: str = "cosine"
    p_uncond: float = 0.1              # caption dropout (classifier-free guidance)
    time_reversal: float = 0.5         # chance a clip plays backwards, its caption's direction flipped
    steps: int = 2000
    batch_size: int = 16
    lr: float = 5e-4
    warmup_steps: int = 100
    ema_decay: float = 0.995

    def __post_init__(self):
        if self.space not in SPACES:
            raise ValueError(f"space must be one of {SPACES}, got {self.space!r}")
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {self.objective!r}")
        if self.t_sampler not in T_SAMPLERS:
            raise ValueError(f"t_sampler must be one of {T_SAMPLERS}, got {self.t_sampler!r}")
        if not self.frames or any(not isinstance(f, int) or f < 1 for f in self.frames):
            raise ValueError(f"frames must be a non-empty tuple of clip lengths >= 1, got {self.frames!r}")
        if self.space == "latent":
            for f in self.frames:
                _latent_frames(f)                      # a clear error naming the nearest 1 + 4k counts
        for name in ("p_uncond", "time_reversal"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must lie in [0, 1], got {getattr(self, name)}")
        dit_config(self.model, **self.overrides)                       # the preset and overrides, checked


@dataclass(frozen=True)
class Ch08Preset:
    name: str
    dit: DiTRecipe                     # the chapter's model: latent, full attention, flow matching
    guidance: float = 3.0
    eval_samples: int = 256            # held-out prompts judged
    eval_steps: int = 20               # sampling steps for the judged samples
    method: str = "euler"              # the flow sampler
    pixel_steps: int = 2               # the pixel-space comparison: about the latent DiT's training minutes


PRESETS = {
    "smoke": Ch08Preset(
        name="smoke",
        dit=DiTRecipe(model="dit-tiny", overrides={"dim": 32, "depth": 2, "heads": 2}, vae_preset="smoke",
                      text_preset="smoke", frames=(9,), T=100, steps=2, batch_size=2, warmup_steps=0, pool=8),
        eval_samples=4, eval_steps=2,
    ),
    # step times on the idle 2-core AMD EPYC, two threads (minivid.bench.ch08.step_cost, 2026-12-02): the latent DiT
    # 0.17 s (80 tokens, batch 16), so 4000 steps take ~11-13 min of the 15 allowed; on pixels the same DiT reads
    # 1,088 tokens of 4x4x3 pixels at 4.1 s a step: 170 steps are the same minutes
    "full": Ch08Preset(name="full", dit=DiTRecipe(steps=4000), pixel_steps=170),
}


def get_preset(name: str | Ch08Preset) -> Ch08Preset:
    return pick_preset(name, PRESETS, "ch08")


def _upstream(r: DiTRecipe, seed: int) -> tuple[str, ...]:
    text = pretrained_path("ch02.text_encoder", r.text_preset, seed).name
    return (text, pretrained_path("ch07.latents", r.vae_preset, seed).name) if r.space == "latent" else (text,)


def checkpoint_path(preset, seed: int = 0, recipe: DiTRecipe | None = None) -> Path:
    """Where a trained DiT lives, keyed by its recipe and upstream models (text encoder; chapter 07's latents)."""
    p = get_preset(preset)
    r = recipe or p.dit
    return common.checkpoint_path("ch08", f"dit-{r.space}", p.name, seed, r, *_upstream(r, seed),
                                  version=MODEL_VERSION)


def train_command(preset) -> str:
    return f"python -m minivid train ch08 --preset {get_preset(preset).name}"


# ----------------------------------------------------------------------------- data

def item_shape(r: DiTRecipe, frames: int) -> tuple[int, int, int, int]:
    """One clip as the DiT sees it: "latent" (c, 1 + (frames - 1) / 4, size / 4, size / 4); "pixel" (3, frames, S, S)."""
    if r.space == "pixel":
        return 3, frames, r.size, r.size
    vae = ch07.model_config(ch07.get_preset(r.vae_preset).vae)
    side = ch07.get_preset(r.vae_preset).vae.size // vae.spatial_factor
    return vae.latent_channels, _latent_frames(frames, vae.time_factor), side, side


def training_data(r: DiTRecipe, seed: int, cond) -> dict:
    """{"fwd": {"mean", "std" | "x", "text"}, "rev": the same clips played backwards}: latents (scaled posteriors)
    or uint8 clips, with their frozen caption features."""
    if r.space == "latent":
        lat = pretrained("ch07.latents", r.vae_preset, seed)
        if lat.get("reversed") is None:
            raise ValueError("chapter 07's latents were exported without the reversed clips; time_reversal needs "
                             "them (Ch07Preset.latent_reversed=True) or set time_reversal=0")
        return {k: {"mean": d["mean"], "std": d["std"], "text": encode_captions(cond, d["captions"])}
                for k, d in (("fwd", lat), ("rev", lat["reversed"]))}
    pool = video_text_pool(r.size, max(r.frames), r.pool)
    rev = time_reversed(pool)
    return {"fwd": {"x": pool["x"], "text": encode_captions(cond, pool["captions"])},
            "rev": {"x": pool["x"].flip(2), "text": encode_captions(cond, rev["captions"])}}


def batch_fn_for(r: DiTRecipe, data: dict):
    """batch_fn(step, g) -> {"x": (B, c, n, h, w), "context", "context_mask", "pooled"}: one clip length per batch
    (drawn from r.frames), each clip forwards or (chance time_reversal) backwards with its caption flipped."""
    n_of = {f: item_shape(r, f)[1] for f in r.frames}
    lengths = sorted(n_of.values())

    def batch_fn(step, g):
        B = r.batch_size
        n = lengths[int(torch.randint(0, len(lengths), (1,), generator=g))]
        fwd, rev = data["fwd"], data["rev"]
        idx = torch.randint(0, len(fwd["text"]["pooled"]), (B,), generator=g)
        back = torch.rand(B, generator=g) < r.time_reversal
        pick = lambda a, b: torch.where(back.view(-1, *[1] * (a.dim() - 1)), b[idx], a[idx])  # noqa: E731
        if r.space == "latent":
            mean, std = pick(fwd["mean"], rev["mean"]), pick(fwd["std"], rev["std"])
            x = (mean + std * torch.randn(mean.shape, generator=g))[:, :, :n]      # a causal prefix: exact
        else:
            x = from_uint8(pick(fwd["x"], rev["x"]))[:, :, :n]
        return {"x": x, **{k: pick(v, rev["text"][k]) for k, v in fwd["text"].items()}}
    return batch_fn


def loss_fn_for(r: DiTRecipe, null: dict):
    """Caption dropout, then the flow-matching loss (velocity) or the v-prediction diffusion loss."""
    schedule = schedule_for(r)

    def loss_fn(net, batch, g):
        text, dropped = caption_dropout({k: batch[k] for k in null}, null, r.p_uncond, generator=g)
        if r.objective == "flow":
            loss = flow_matching_loss(net, batch["x"], g, cond=text, t_sampler=r.t_sampler, loc=r.t_loc)
        else:
            loss = diffusion_loss(net, batch["x"], schedule, "v", generator=g, cond=text)
        return loss, {"dropped": dropped.float().mean()}
    return loss_fn


def build_dit(r: DiTRecipe, text_dim: int) -> DiT:
    return DiT(dit_config(r.model, in_channels=item_shape(r, 1)[0], context_dim=text_dim, pooled_dim=text_dim,
                          **r.overrides))


# ----------------------------------------------------------------------------- training and loading

def train_dit(preset="full", seed: int = 0, progress: bool = True, retrain: bool = False,
              recipe: DiTRecipe | None = None):
    """Train (or load the cached) DiT. Returns (the EMA model in eval mode, TrainState). recipe: a variant of the
    preset's (pixel space, factorised attention, another objective, other lengths), cached under its own key."""
    p = get_preset(preset)
    r = recipe or p.dit
    cond = pretrained("ch02.conditioner", r.text_preset, seed, progress)
    batch_fn = lazy_batches(lambda: batch_fn_for(r, training_data(r, seed, cond)))
    torch.manual_seed(seed)
    cfg = dit_config(r.model, **r.overrides)
    state = load_or_train(build_dit(r, cond.dim), loss_fn_for(r, cond.null_features()), batch_fn, r,
                          checkpoint_path(p, seed, r), seed=seed, progress=progress, retrain=retrain, ckpt_every=250,
                          command=train_command(p),
                          desc=f"ch08 DiT ({p.name}, {r.space}, {cfg.attention}, {r.objective}, frames {r.frames})")
    return state.sampling_model.eval().requires_grad_(False), state


@provides("ch08.dit", path=lambda preset, seed=0: checkpoint_path(preset, seed))
def load_dit(preset="full", seed: int = 0, progress: bool = True, recipe: DiTRecipe | None = None) -> DiT:
    """A trained DiT, frozen; trained first (with a progress bar) if absent."""
    p = get_preset(preset)
    r = recipe or p.dit
    path = checkpoint_path(p, seed, r)
    if not is_finished(path, r.steps):
        if progress:
            print(f"no trained chapter-08 DiT for preset {p.name!r} (seed {seed}) yet; training it now")
        return train_dit(p, seed, progress, recipe=r)[0]
    cond = pretrained("ch02.conditioner", r.text_preset, seed, progress)
    return load_weights(build_dit(r, cond.dim), path, steps=r.steps, command=train_command(p)).requires_grad_(False)


# ----------------------------------------------------------------------------- sampling

def generate(prompts, *, preset="full", seed: int = 0, steps: int | None = None, guidance: float | None = None,
             frames: int | None = None, method: str | None = None, recipe: DiTRecipe | None = None,
             model_seed: int = 0, progress: bool = True, batch_size: int = 64, return_latents: bool = False):
    """One clip per prompt: (B, 3, frames, S, S) in [-1, 1] (return_latents: also what the DiT made).

    frames: any length (1 + 4k for "latent"), trained on or not (default: the longest trained). Flow models sample
    with `method` ("euler" | "heun", default the preset's), v models with DDIM. seed picks the noise; model_seed the
    trained model. Latents are decoded by chapter 07's video VAE (whole clips).
    """
    p = get_preset(preset)
    r = recipe or p.dit
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    if not prompts:
        raise ValueError("prompts must hold at least one prompt")
    method = method or p.method
    if method not in FLOW_METHODS:
        raise ValueError(f"method must be one of {FLOW_METHODS}, got {method!r}")
    T = max(r.frames) if frames is None else frames
    if not isinstance(T, int) or T < 1:
        raise ValueError(f"frames must be an int >= 1, got {frames!r}")
    shape = item_shape(r, T)                                          # checks 1 + 4k for latents
    net = load_dit(p, model_seed, progress, recipe=r)
    cond = pretrained("ch02.conditioner", r.text_preset, model_seed, progress)
    steps = p.eval_steps if steps is None else steps
    w = p.guidance if guidance is None else guidance
    if r.objective == "flow":
        z = guided_flow(net, cond, prompts, shape, guidance=w, steps=steps, method=method, seed=seed,
                        batch_size=batch_size, progress=progress)
    else:
        z = guided_ddim(net, schedule_for(r), cond, prompts, shape, guidance=w, objective="v", steps=steps, seed=seed,
                        batch_size=batch_size, progress=progress, clip=1.0 if r.space == "pixel" else None)
    if r.space == "pixel":
        x = z.clamp(-1, 1)
    else:
        lat = pretrained("ch07.latents", r.vae_preset, model_seed, progress)
        x = ch07.decode_latents(ch07.load_vae(r.vae_preset, model_seed, progress), z, lat["scale"])
    return (x, z) if return_latents else x


# ----------------------------------------------------------------------------- command line

def cli_train(preset: str = "full", seed: int = 0, steps: int | None = None) -> Path:
    p = with_steps(get_preset(preset), "dit", steps)
    train_dit(p, seed)
    return checkpoint_path(p, seed)


def cli_generate(prompts: list[str], *, preset: str = "full", seed: int = 0, steps: int = 20,
                 guidance: float | None = None, frames: int | None = None, **_) -> torch.Tensor:
    return generate(prompts, preset=preset, seed=seed, steps=steps, guidance=guidance, frames=frames)


CLI = ChapterCLI(train=cli_train, generate=cli_generate, frames=(1, 32), demo_rank=0,
                 summary="a diffusion transformer on spacetime patches of chapter 07's latents, flow matching",
                 variants={"pixel": lambda p: replace(p, name=f"{p.name}-pixel", dit=replace(
                     p.dit, space="pixel", overrides={**p.dit.overrides, "patch": (1, 4, 4)}, steps=p.pixel_steps))})

__all__ = ["MODEL_VERSION", "SPACES", "OBJECTIVES", "DiTRecipe", "Ch08Preset", "PRESETS", "get_preset",
           "checkpoint_path", "train_command", "item_shape", "training_data", "batch_fn_for",
           "loss_fn_for", "build_dit", "train_dit", "load_dit", "generate", "cli_train", "cli_generate", "CLI"]
