"""Chapter 07 recipes: the 3-D causal video VAE of CogVideoX (Yang et al. 2024, arXiv:2408.06072), after MAGVIT-v2
(Yu et al. 2023, arXiv:2310.05737), measured against a per-frame image VAE at the same latent budget.

    vae, state = train_vae("full")                  # 17 frames of 32x32 -> 5 latent frames of 8x8, 4 channels
    x_rec = reconstruct(vae, clips, chunk_frames=8)  # chunk by chunk with the conv cache: the same clips as whole
    lat = pretrained("ch07.latents", "full")        # chapter 08's data: scaled latents of the captioned clips

* Data: Shapes World clips of 1 + 4 * 4 = 17 frames at 32x32. Both autoencoders train on unlabelled clips
  (`video_pool`, the plentiful kind: an autoencoder reads no caption); the exported latents encode the scarce
  captioned pool (`video_text_pool`), the clips chapter 08's transformer learns text-to-video from.
* The baseline (`train_frame_vae`) is chapter 06's kind of autoencoder (`minivid.models.vae.AutoencoderKL`), one
  frame at a time, given the video VAE's latent budget per clip. The video VAE keeps 4 x 5 x 8 x 8 = 1280 numbers of
  a 17-frame clip; a per-frame VAE has 17 frames to spread them over, about 75 a frame, where chapter 06's 4x VAE
  keeps 4 x 8 x 8 = 256. So it compresses each frame about 4x harder: 8x in space (4x4 latents) with 5 channels,
  17 x 80 = 1360 numbers a clip (`latent_values`; 6% more than the video VAE's, never fewer, so the budget never
  favours the video VAE). It trains for the same time as the video VAE, on frames of the same clips.
* Latents for diffusion (`encode_pool`): posterior samples times LDM's scale factor (1 / their std, float64, from
  the very latents exported), so chapter 08 diffuses unit-variance latents; `decode_latents` undoes the scale.
  Whole-clip encoding: chapter 08 never runs chapter 07's chunking exercises.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import torch

from minivid.data import time_reversed, video_text_pool
from minivid.models.inflate import inflate, inflated_config
from minivid.models.vae import latent_scale_factor
from minivid.pipelines import common
from minivid.pipelines.ch07_vae import (
    KINDS,
    VAERecipe,
    batch_fn_for,
    build_vae,
    decode,
    encode,
    latent_shape,
    latent_values,
    loss_fn_for,
    model_config,
    reconstruct,
    training_clips,
)
from minivid.pipelines.common import (
    ChapterCLI,
    is_finished,
    load_or_train,
    load_weights,
    pick_preset,
    pretrained,
    pretrained_path,
    provides,
    recipe_key,
    with_steps,
)
from minivid.utils import CheckpointError, atomic_save, cache_dir, file_lock, make_generator

MODEL_VERSION = 1          # bump when an architecture or loss of this chapter changes (stale caches retrain)
WHATS = {"vae": "video", "frame_vae": "frame"}   # checkpoint name -> the recipe kind it holds
LATENT_NOISE_SEED = 104729  # the exported posterior samples: make_generator(seed + LATENT_NOISE_SEED)
MATCHED = {"channel_mult": (1, 2, 2, 2), "latent_channels": 5}   # per frame: 8x in space, 5 channels (see above)


@dataclass(frozen=True)
class Ch07Preset:
    name: str
    vae: VAERecipe                     # the causal video VAE
    frame_vae: VAERecipe               # the per-frame baseline at (nearly) the video VAE's latent values per clip
    image_vae_preset: str = "full"     # the chapter-06 preset whose image VAE a recipe with init="ch06" starts from
    latent_pool: int = 2000            # captioned clips encoded for chapter 08 (`encode_pool`)
    latent_reversed: bool = True       # encode them played backwards too (their captions' direction flipped)
    encode_batch: int = 32             # clips per batch when encoding


PRESETS = {
    "smoke": Ch07Preset(
        name="smoke",
        vae=VAERecipe(overrides={"channels": 8, "groups": 4}, init="ch06", train_frames=5, lr_decay="cosine", pool=8,
                      steps=2, batch_size=2, warmup_steps=0),
        frame_vae=VAERecipe(kind="frame", model="vae-tiny", overrides={**MATCHED, "channels": 8, "groups": 4}, pool=8,
                            steps=2, batch_size=4, warmup_steps=0),
        image_vae_preset="smoke", latent_pool=8, encode_batch=4,
    ),
    "full": Ch07Preset(
        name="full",
        # The causal VAE starts as chapter 06's image VAE, inflated (init="ch06": the same widths), and trains on
        # random 9-frame windows of the clips with a cosine learning rate. From scratch on whole clips (the recipe
        # recorded 2026-12-02: 720 steps, 24.1-27.9 dB, shape 0.58-0.75) it missed the small squares; by hand
        # (256 held-out clips, a Zen 3 AVX2 EPYC, not a recorded bench), seed 0: from scratch 27.5 dB, shape 0.78;
        # inflated 37.1 dB (seeds 1, 2: 37.6, 37.1), colour, shape, size and motion 1.00 at all three, flicker
        # 0.0038, 0.0037, 0.0039 (real clips 0.0011, the recorded per-frame VAE 0.0020-0.0030); with
        # temporal_weight=1, seed 0: 37.5 dB, all 1.00, flicker 0.0035; temporal_weight=4: 37.6 dB, flicker 0.0035
        # (the term saturates). Recorded (chapters/results/ch07.json, 3 seeds, a Zen 5 AVX-512 EPYC): 35.8-37.8 dB,
        # every attribute 1.00, flicker 0.0035-0.0040, 6.2-7.0 minutes a seed.
        # Step times: whole clips ran at 0.74 s/step on the idle 2-core AVX-512 AMD EPYC with two threads (720 steps,
        # ~8.9 min); 9-frame windows about 9/17 of that, ~0.39 s/step: 1400 steps ~9.1 min. The per-frame VAE at 64
        # frames, 0.41 s/step on one thread, ~0.21 on two: the same minutes. Encoding the 2000 captioned clips and
        # their reversals for chapter 08: 0.029 s a clip on one thread, ~1 min.
        vae=VAERecipe(init="ch06", train_frames=9, lr_decay="cosine", steps=1400),   # ~0.39 s/step: ~9.1 min
        frame_vae=VAERecipe(kind="frame", model="vae-tiny", overrides=MATCHED, batch_size=64, steps=2500),  # ~8.6 min
    ),
}


def get_preset(name: str | Ch07Preset) -> Ch07Preset:
    return pick_preset(name, PRESETS, "ch07")


def checkpoint_path(what: str, preset, seed: int = 0, recipe: VAERecipe | None = None) -> Path:
    """Where a trained autoencoder lives: what = "vae" (the causal video VAE) | "frame_vae" (the per-frame baseline)."""
    if what not in WHATS:
        raise ValueError(f"what must be one of {tuple(WHATS)}, got {what!r}")
    p = get_preset(preset)
    r = recipe or getattr(p, what)
    if r.kind != WHATS[what]:
        raise ValueError(f"recipe.kind is {r.kind!r}, but {what!r} holds a {WHATS[what]!r} autoencoder")
    upstream = (pretrained_path("ch06.vae", p.image_vae_preset, seed).name,) if r.init == "ch06" else ()
    return common.checkpoint_path("ch07", what, p.name, seed, r, *upstream, version=MODEL_VERSION)


def initial_vae(recipe: VAERecipe, image_vae_preset: str = "full", seed: int = 0):
    """The autoencoder a training starts from: fresh weights, or (init="ch06") chapter 06's trained image VAE of that
    preset and this seed, inflated to a causal video VAE (`minivid.models.inflate`; trained first if absent)."""
    if recipe.init == "scratch":
        return build_vae(recipe)
    image = pretrained("ch06.vae", image_vae_preset, seed).vae
    want, got = model_config(recipe), inflated_config(image, temporal_down=model_config(recipe).temporal_down)
    if replace(want, extra={}) != replace(got, extra={}):
        raise ValueError(f"init='ch06' inflates chapter 06's image VAE, whose widths ({got.channels} channels x "
                         f"{got.channel_mult}, {got.latent_channels} latent channels) differ from the recipe's "
                         f"({want.channels} x {want.channel_mult}, {want.latent_channels}); match them or use "
                         f"init='scratch'")
    return inflate(image, temporal_down=want.temporal_down)


def train_command(preset, what: str = "vae") -> str:
    name = get_preset(preset).name
    if what == "frame_vae":
        return f"python -c \"from minivid.pipelines import ch07; ch07.train_frame_vae('{name}')\""
    return f"python -m minivid train ch07 --preset {name}"


# ----------------------------------------------------------------------------- training

def _train(what: str, preset, seed: int, progress: bool, retrain: bool, recipe: VAERecipe | None):
    p = get_preset(preset)
    r = recipe or getattr(p, what)
    path = checkpoint_path(what, p, seed, r)
    torch.manual_seed(seed)
    c, n, h, w = latent_shape(r)
    label = "causal video VAE" if r.kind == "video" else "per-frame VAE"
    state = load_or_train(initial_vae(r, p.image_vae_preset, seed), loss_fn_for(r), batch_fn_for(r, training_clips(r)),
                          r, path, seed=seed,
                          progress=progress, retrain=retrain, ckpt_every=200, command=train_command(p, what),
                          desc=f"ch07 {label} ({p.name}, {r.frames}x{r.size}x{r.size} -> {n}x{h}x{w}x{c})")
    return state.sampling_model.eval(), state


def train_vae(preset="full", seed: int = 0, progress: bool = True, retrain: bool = False,
              recipe: VAERecipe | None = None):
    """Train (or load the cached) causal video VAE. Returns (the EMA model in eval mode, TrainState).

    retrain=True trains afresh; recipe: train this one instead of the preset's (cached under its own key).
    """
    return _train("vae", preset, seed, progress, retrain, recipe)


def train_frame_vae(preset="full", seed: int = 0, progress: bool = True, retrain: bool = False,
                    recipe: VAERecipe | None = None):
    """Train (or load the cached) per-frame baseline VAE. Returns (the EMA model in eval mode, TrainState)."""
    return _train("frame_vae", preset, seed, progress, retrain, recipe)


@provides("ch07.video_vae", path=lambda preset, seed=0: checkpoint_path("vae", preset, seed))
def load_vae(preset="full", seed: int = 0, progress: bool = True):
    """The preset's trained causal video VAE, frozen (eval mode, no gradients); trained first if absent."""
    p = get_preset(preset)
    path = checkpoint_path("vae", p, seed)
    if not is_finished(path, p.vae.steps):
        if progress:
            print(f"no trained chapter-07 video VAE for preset {p.name!r} (seed {seed}) yet; training it now")
        vae = train_vae(p, seed, progress)[0]
    else:
        vae = load_weights(build_vae(p.vae), path, steps=p.vae.steps, command=train_command(p))
    return vae.requires_grad_(False).eval()


# ----------------------------------------------------------------------------- latents for chapter 08

def latents_path(preset, seed: int = 0) -> Path:
    """Where `encode_pool(preset, seed)` caches its latents (keyed by the VAE's checkpoint and the pool)."""
    p = get_preset(preset)
    spec = {"pool": p.latent_pool, "frames": p.vae.frames, "size": p.vae.size, "reversed": p.latent_reversed,
            "noise_seed": LATENT_NOISE_SEED}
    key = recipe_key(checkpoint_path("vae", p, seed).name, spec, seed=seed, version=MODEL_VERSION)
    return cache_dir("latents") / f"ch07-latents-{p.name}-seed{seed}-{key}.pt"


def _encoded(vae, pool: dict, scale: float | None, g: torch.Generator, batch: int) -> tuple[dict, float]:
    q = encode(vae, pool["x"], batch_size=batch)
    z = q.sample(g)
    if scale is None:
        scale = latent_scale_factor(z)                                 # 1 / std of these very samples (float64)
    return {"z": (z.double() * scale).float(), "mean": (q.mean.double() * scale).float(),
            "std": (q.std.double() * scale).float(), "captions": list(pool["captions"]),
            "labels": dict(pool["labels"])}, scale


@provides("ch07.latents", path=lambda preset, seed=0: latents_path(preset, seed))
def encode_pool(preset="full", seed: int = 0, progress: bool = True, retrain: bool = False) -> dict:
    """The captioned clip pool encoded by the preset's video VAE, scaled for diffusion, cached.

    Returns {"z": (N, c, n, h, w) float32 posterior samples times `scale` (std 1 over all of them), "mean", "std":
    the posterior, scaled alike; "scale": LDM's factor, a float (1 / std of the unscaled samples, in float64);
    "captions": N strings; "labels": {attribute: (N,)}; "reversed": the same for the clips played backwards
    (direction flipped in caption and labels; the forward pool's scale) or None; "vae": its checkpoint's name}.
    A 17x32x32 clip has (4, 5, 8, 8) latents. retrain=True encodes afresh (the VAE is not retrained).
    """
    p = get_preset(preset)
    path = latents_path(p, seed)
    with file_lock(path, "ch07 latents"):
        if path.exists() and not retrain:
            try:
                return torch.load(path, map_location="cpu", weights_only=True)
            except Exception as e:                                    # a truncated file: encode again
                print(f"ch07: latent cache {path.name} is unreadable ({type(e).__name__}); encoding again")
        vae = load_vae(p, seed, progress)
        vpath = checkpoint_path("vae", p, seed)
        if not is_finished(vpath, p.vae.steps):     # e.g. under common.capture_training, which trains nothing
            raise CheckpointError(f"the chapter-07 video VAE {vpath.name} is not trained; run `{train_command(p)}`")
        pool = video_text_pool(p.vae.size, p.vae.frames, p.latent_pool)
        if progress:
            print(f"ch07: encoding {p.latent_pool} captioned clips{' (and reversed)' if p.latent_reversed else ''}")
        g = make_generator(seed + LATENT_NOISE_SEED)
        out, scale = _encoded(vae, pool, None, g, p.encode_batch)
        out.update(scale=scale, vae=vpath.name, reversed=None)
        if p.latent_reversed:
            out["reversed"] = _encoded(vae, time_reversed(pool), scale, g, p.encode_batch)[0]
        atomic_save(out, path)
    return out


def decode_latents(vae, z: torch.Tensor, scale: float, *, chunk_latents: int | None = None,
                   batch_size: int = 32) -> torch.Tensor:
    """Clips in [-1, 1] of scaled latents z (N, c, n, h, w), e.g. a diffusion model's samples: decode(z / scale)."""
    if not scale > 0:
        raise ValueError(f"scale must be > 0 (the latents' scale factor), got {scale!r}")
    return decode(vae, z / scale, chunk_latents=chunk_latents, batch_size=batch_size)


# ----------------------------------------------------------------------------- command line

def cli_train(preset: str = "full", seed: int = 0, steps: int | None = None) -> Path:
    """`python -m minivid train ch07`: the causal video VAE, then chapter 08's latents of the captioned pool."""
    p = with_steps(get_preset(preset), "vae", steps)
    train_vae(p, seed)
    path = checkpoint_path("vae", p, seed)
    if is_finished(path, p.vae.steps):              # under capture_training nothing trains: no latents to encode
        encode_pool(p, seed)
    return path


CLI = ChapterCLI(train=cli_train, demo_rank=0,
                 summary="CogVideoX's 3-D causal video VAE: 17 frames of 32x32 -> 5 latent frames of 8x8")

__all__ = ["MODEL_VERSION", "KINDS", "MATCHED", "VAERecipe", "Ch07Preset", "PRESETS", "get_preset", "checkpoint_path",
           "train_command", "initial_vae", "model_config", "build_vae", "latent_shape", "latent_values",
           "training_clips",
           "batch_fn_for", "loss_fn_for", "encode", "decode", "reconstruct", "train_vae", "train_frame_vae",
           "load_vae", "latents_path", "encode_pool", "decode_latents", "cli_train", "CLI"]
