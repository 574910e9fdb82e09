"""Chapter 02 recipes: mini-CLIP pretraining, the text-conditioned U-Net, guided sampling.

Used by notebooks/02_text_to_image.ipynb, `python -m minivid bench ch02`, the CLI
(`python -m minivid train ch02`), and by later chapters through the recipe layer:

    tok, enc = pretrained("ch02.text_encoder", "full")   # trains it first if it is not cached
    cond = pretrained("ch02.conditioner", "full")        # the same, wrapped as a TextConditioner
    model, schedule, cond = pretrained("ch02.t2i", "full")
    x = sample_t2i(model, schedule, cond, ["a big red square"] * 8, guidance=2.0)   # (8, 3, 16, 16)

Papers: CLIP (arXiv:2103.00020), Latent Diffusion's cross-attention conditioning
(arXiv:2112.10752), Imagen's pooled text embedding (arXiv:2205.11487), classifier-free guidance
(arXiv:2207.12598), v-prediction (arXiv:2202.00512).

Both models train on the "train" split only: the held-out attribute combinations
(`minivid.data.HELDOUT_COMBOS`) are never seen by the text encoder or the U-Net.
The mini-CLIP's recipe, data and loss live in `minivid.pipelines.ch02_clip` and are re-exported here.
Caching, keys and loading come from `minivid.pipelines.common` (the U-Net's key includes the text encoder's).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

from minivid.data import COLORS, SHAPES, SIZES, sample_batch
from minivid.diffusion import Schedule, diffusion_loss
from minivid.models import UNet2D, unet2d_config
from minivid.pipelines import common
from minivid.pipelines.ch02_clip import (  # the mini-CLIP half of the chapter, re-exported here
    VIDEO_KEYS,
    ClipRecipe,
    build_clip,
    build_tokenizer,
    clip_loss_fn,
    direction_warning,
    heldout_direction,
    pool_batches,
    training_clips,
    training_pairs,
)
from minivid.pipelines.common import (
    ChapterCLI,
    Denoiser,
    guided_ddim,
    is_finished,
    load_or_train,
    load_weights,
    pick_preset,
    provides,
    schedule_for,
    training_record,
    with_steps,
    write_training_record,
)
from minivid.text import TextConditioner, TextEncoder
from minivid.utils import make_generator

MODEL_VERSION = 1          # bump when an architecture or loss of this chapter changes (stale caches retrain)


@dataclass(frozen=True)
class T2IRecipe:
    unet: str = "unet2d-small"
    unet_overrides: dict = field(default_factory=dict)
    use_pooled: bool = True          # add the pooled text vector to the timestep embedding
    p_uncond: float = 0.1            # caption dropout probability (classifier-free guidance)
    size: int = 16
    T: int = 1000
    schedule: str = "cosine"
    objective: str = "v"
    steps: int = 2000
    batch_size: int = 64
    lr: float = 1e-3
    warmup_steps: int = 100
    ema_decay: float = 0.995
    pool: int = 20000


@dataclass(frozen=True)
class Ch02Preset:
    name: str
    clip: ClipRecipe
    t2i: T2IRecipe
    eval_samples: int = 256                          # held-out prompts judged per guidance scale
    sample_steps: int = 50                           # DDIM steps
    guidance_scales: tuple[float, ...] = (0.0, 1.0, 2.0, 3.0, 5.0, 7.0)
    guidance: float = 2.0                            # default scale for samples: the full bench's best (see the sweep)
    retrieval_batch: int = 256
    direction_floor: float | None = 0.9              # a trained encoder naming fewer held-out directions is reported
    ablation_steps: int = 1000                       # each arm of the pooled-vector ablation
    ablation_samples: int = 128


PRESETS = {
    "smoke": Ch02Preset(
        name="smoke",
        clip=ClipRecipe(text="text-tiny", image_channels=(8, 16), embed_dim=32, steps=30, batch_size=64,
                        warmup_steps=0, pool=512, video_pool=64, video_batch=8, video_frames=4,
                        video_channels=(8, 16)),
        t2i=T2IRecipe(unet="unet2d-tiny", T=100, steps=8, batch_size=16, warmup_steps=0, pool=512),
        eval_samples=16, sample_steps=5, guidance_scales=(0.0, 1.0, 3.0), retrieval_batch=64,
        ablation_steps=4, ablation_samples=8, direction_floor=None,
    ),
    "full": Ch02Preset(name="full", clip=ClipRecipe(), t2i=T2IRecipe()),
}


def get_preset(name: str | Ch02Preset) -> Ch02Preset:
    return pick_preset(name, PRESETS, "ch02")


def checkpoint_path(what: str, preset: str | Ch02Preset, seed: int = 0, recipe: T2IRecipe | None = None) -> Path:
    """Where the trained `what` ("clip" | "t2i") model of a preset lives (recipe: another U-Net recipe)."""
    p = get_preset(preset)
    if what == "clip":
        return common.checkpoint_path("ch02", "clip", p.name, seed, p.clip, version=MODEL_VERSION)
    if what == "t2i":
        r = recipe or p.t2i
        name = p.name if r == p.t2i else f"{p.name}-{common.recipe_key(r, seed=seed)}"
        return common.checkpoint_path("ch02", "t2i", name, seed, p.clip, r, version=MODEL_VERSION)
    raise ValueError(f"what must be 'clip' or 't2i', got {what!r}")


def train_command(preset) -> str:
    """The shell command that trains this chapter's model of a preset (named in error messages)."""
    return f"python -m minivid train ch02 --preset {get_preset(preset).name}"


# ----------------------------------------------------------------------------- mini-CLIP

def train_clip(preset: str | Ch02Preset = "full", seed: int = 0, progress: bool = True, retrain: bool = False):
    """Pretrain (or load) the mini-CLIP. Returns (tokenizer, MiniCLIP in eval mode, TrainState)."""
    p = get_preset(preset)
    r = p.clip
    tok = build_tokenizer(r)
    data = training_pairs(r.size, r.pool)
    clips = training_clips(r.size, r.video_frames, r.video_pool) if r.video_pool else None
    torch.manual_seed(seed)
    model = build_clip(r, tok)
    state = load_or_train(model, clip_loss_fn(r.multi_positive, r.video_weight),
                          pool_batches(data, tok, r.batch_size, clips, r.video_batch, r.time_reversal), r,
                          checkpoint_path("clip", p, seed), seed=seed, progress=progress,
                          desc=f"ch02 mini-CLIP ({p.name})", retrain=retrain, command=train_command(p))
    clip = state.sampling_model.eval()
    check_directions(p, seed, clip, tok)
    return tok, clip, state


def check_directions(preset: str | Ch02Preset, seed: int, clip, tok) -> float | None:
    """Did this trained encoder learn the motion words? Its held-out direction retrieval (`heldout_direction`),
    measured once into the checkpoint's training record, and a warning when it is under the preset's
    `direction_floor` (None: not checked, as in the smoke preset). None for a model without a training record here
    (released weights: their figures are in weights/RELEASED.json) or a recipe without clips."""
    p = get_preset(preset)
    path = checkpoint_path("clip", p, seed)
    rec = training_record(path)
    if not rec or not p.clip.video_pool or p.direction_floor is None:
        return None
    if "heldout_direction_i2t" not in rec:
        rec["heldout_direction_i2t"] = heldout_direction(clip, tok, p.clip, p.retrieval_batch)
        write_training_record(path, rec)
    if line := direction_warning(rec["heldout_direction_i2t"], p.direction_floor, seed, p.name):
        warnings.warn(line, stacklevel=3)
    return rec["heldout_direction_i2t"]


@provides("ch02.text_encoder", path=lambda preset, seed=0: checkpoint_path("clip", preset, seed))
def load_text_encoder(preset: str | Ch02Preset = "full", seed: int = 0, progress: bool = True):
    """The frozen, pretrained text encoder every later chapter uses: (Tokenizer, TextEncoder in eval mode).

    Loads the cached mini-CLIP checkpoint, or trains it first (with a progress bar) when absent.
    """
    p = get_preset(preset)
    tok, clip = load_clip(p, seed, progress)
    enc: TextEncoder = clip.text
    return tok, enc.eval().requires_grad_(False)


@provides("ch02.conditioner", path=lambda preset, seed=0: checkpoint_path("clip", preset, seed))
def load_conditioner(preset: str | Ch02Preset = "full", seed: int = 0, progress: bool = True) -> TextConditioner:
    """The frozen text encoder wrapped for conditioning (tokens + pooled vector), trained first if absent."""
    tok, enc = load_text_encoder(preset, seed, progress)
    return TextConditioner(tok, enc, use_pooled=True)


# ----------------------------------------------------------------------------- text-conditioned U-Net

def build_unet(recipe: T2IRecipe, text_dim: int) -> UNet2D:
    """The chapter-01 U-Net with cross-attention to text_dim-wide tokens (and the pooled vector if asked)."""
    return UNet2D(unet2d_config(recipe.unet, context_dim=text_dim, pooled_dim=text_dim if recipe.use_pooled else None,
                                **recipe.unet_overrides))


def t2i_loss_fn(cond: TextConditioner, schedule: Schedule, recipe: T2IRecipe):
    """loss_fn(model, batch, generator): frozen text features, caption dropout (p_uncond), diffusion loss."""
    def loss_fn(net, batch, g):
        kw, dropped = cond.dropout(cond.encode_ids(batch["ids"], batch["mask"]), recipe.p_uncond, generator=g)
        loss = diffusion_loss(net, batch["x"], schedule, recipe.objective, generator=g, cond=kw)
        return loss, {"dropped": dropped.float().mean()}
    return loss_fn


def train_t2i(preset: str | Ch02Preset = "full", seed: int = 0, progress: bool = True, retrain: bool = False,
              recipe: T2IRecipe | None = None):
    """Train (or load) the text-conditioned U-Net on the frozen text encoder of the same preset.

    recipe overrides the preset's U-Net recipe (the bench's ablation uses it; it gets its own checkpoint).
    Returns (EMA model in eval mode, schedule, TextConditioner, TrainState).
    """
    p = get_preset(preset)
    r = recipe or p.t2i
    tok, enc = load_text_encoder(p, seed, progress)
    cond = TextConditioner(tok, enc, use_pooled=r.use_pooled)
    schedule = schedule_for(r)
    torch.manual_seed(seed)
    model = build_unet(r, enc.cfg.dim)
    state = load_or_train(model, t2i_loss_fn(cond, schedule, r),
                          pool_batches(training_pairs(r.size, r.pool), tok, r.batch_size), r,
                          checkpoint_path("t2i", p, seed, r), seed=seed, progress=progress,
                          desc=f"ch02 text-to-image U-Net ({p.name})", retrain=retrain,
                          command=train_command(p))
    return state.sampling_model.eval(), schedule, cond, state


def load_t2i(preset: str | Ch02Preset = "full", seed: int = 0, progress: bool = True):
    """(model, schedule, TextConditioner) of a preset, trained first if absent."""
    model, schedule, cond, _ = train_t2i(preset, seed, progress)
    return model, schedule, cond


@provides("ch02.t2i", path=lambda preset, seed=0: checkpoint_path("t2i", preset, seed))
def load_denoiser(preset: str | Ch02Preset = "full", seed: int = 0, progress: bool = True) -> Denoiser:
    """The trained text-to-image model as later chapters use it: Denoiser(model, schedule, cond, objective, size)."""
    p = get_preset(preset)
    model, schedule, cond = load_t2i(p, seed, progress)
    return Denoiser(model, schedule, cond, p.t2i.objective, p.t2i.size)


@provides("ch02.clip", path=lambda preset, seed=0: checkpoint_path("clip", preset, seed))
def load_clip(preset: str | Ch02Preset = "full", seed: int = 0, progress: bool = True):
    """(Tokenizer, MiniCLIP in eval mode): both towers, for later chapters that embed images in the text space."""
    p = get_preset(preset)
    path = checkpoint_path("clip", p, seed)
    tok = build_tokenizer(p.clip)
    if not is_finished(path, p.clip.steps):
        return train_clip(p, seed, progress)[:2]
    clip = load_weights(build_clip(p.clip, tok), path, command=train_command(p)).requires_grad_(False)
    check_directions(p, seed, clip, tok)
    return tok, clip


def sample_t2i(model: UNet2D, schedule: Schedule, cond: TextConditioner, prompts: list[str], guidance: float = 1.0,
               *, objective: str = "v", steps: int = 50, seed: int = 0, batch_size: int = 256,
               progress: bool = True, size: int | None = None) -> torch.Tensor:
    """One image per prompt with DDIM and classifier-free guidance: (B, 3, S, S) in [-1, 1].

    guidance: 1 = the conditional model alone, 0 = the unconditional one, > 1 = extrapolate away from
    it. The initial noise depends only on `seed` and the position in the batch (`common.guided_ddim`).
    """
    s = size or 16
    return guided_ddim(model, schedule, cond, prompts, (3, s, s), guidance=guidance, objective=objective, steps=steps,
                       seed=seed, batch_size=batch_size, progress=progress)


# ----------------------------------------------------------------------------- prompts and the judge's words

def heldout_prompts(n: int, seed: int = 0, size: int = 16, split: str = "heldout") -> dict:
    """n prompts of a split with their labels and real images: {"captions", "labels", "x"} (sample_batch)."""
    return sample_batch(n, kind="image", split=split, size=size, generator=make_generator(10_000 + seed))


def combo_name(labels: dict, i: int) -> tuple[str, str, str]:
    """(size, colour, shape) names of item i of a labels dict: ("big", "red", "square")."""
    return SIZES[int(labels["size"][i])], COLORS[int(labels["color"][i])], SHAPES[int(labels["shape"][i])]


def judge_names(pred: dict) -> list[str]:
    """What `Judge.predict` read in each sample, as words ("big red square"; "not one clean object")."""
    return [" ".join(combo_name(pred, i)) if bool(pred["valid"][i]) else "not one clean object"
            for i in range(len(pred["valid"]))]


# ----------------------------------------------------------------------------- command line

def cli_train(preset: str = "full", seed: int = 0, steps: int | None = None) -> Path:
    """`python -m minivid train ch02`: pretrain the text encoder, then the text-to-image U-Net."""
    p = with_steps(get_preset(preset), "t2i", steps)
    train_clip(p, seed=seed)                   # the chapter's two models: the mini-CLIP (loaded if cached), then
    train_t2i(p, seed=seed)                    # the U-Net on its frozen text encoder
    return checkpoint_path("t2i", p, seed)


CLI = ChapterCLI(train=cli_train, summary="mini-CLIP text encoder and a text-to-image U-Net with guidance")

__all__ = ["ClipRecipe", "T2IRecipe", "Ch02Preset", "PRESETS", "get_preset", "checkpoint_path", "training_pairs",
           "training_clips", "pool_batches", "VIDEO_KEYS", "build_tokenizer", "build_clip", "clip_loss_fn",
           "train_clip", "load_text_encoder", "load_conditioner", "schedule_for", "build_unet", "t2i_loss_fn",
           "train_t2i", "sample_t2i", "heldout_prompts", "combo_name", "judge_names", "load_t2i", "load_denoiser",
           "load_clip", "check_directions", "cli_train", "CLI"]
