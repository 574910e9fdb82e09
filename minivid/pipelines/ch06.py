"""Chapter 06 recipes: Video LDM - latent diffusion with an image autoencoder, temporal layers aligned to a frozen
latent image model, and a temporally fine-tuned decoder.

Blattmann et al. 2023, "Align your Latents", arXiv:2304.08818; latent diffusion: Rombach et al. 2022,
arXiv:2112.10752. Four trainings, each on the frozen result of the ones before it:

    1. "vae"      the KL image autoencoder (`minivid.models.vae`) on Shapes World frames, 32x32 -> 4 x 8x8 latents;
                  its latent scale factor is computed from data (1 / std of posterior samples, as LDM)
    2. "latent"   chapter 02's text-conditioned U-Net retrained on those latents, on the frozen chapter-02 text
                  encoder (`pretrained("ch02.conditioner")`): a latent text-to-image model
    3. "video"    that model frozen, with alpha-merged temporal layers interleaved (`minivid.models.alignment`,
                  paper Sec. 3.1), trained on captioned latent clips; only the temporal layers and alphas move
    4. "decoder"  the autoencoder's decoder with temporal layers, fine-tuned on unlabelled clips with the encoder
                  frozen (Sec. 3.1.1); the paper's 3-D discriminator is replaced by a frame-difference loss
                  (`minivid.pipelines.ch06_latents`)

Data, as the field has it: image-caption pairs for 1-2 (the chapter-02 pool at 32x32), the scarce captioned clips
for 3, the plentiful unlabelled clips for 4 - a decoder needs no caption.

    clips = generate(["a big red circle moving to the right"] * 4, preset="full")          # (4, 3, 8, 32, 32)
    flicker = generate([...], preset="full", decoder="frame")       # the same latents, the per-frame decoder
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import torch

from minivid.data import image_text_pool, time_reversed, video_pool, video_text_pool
from minivid.models.alignment import TemporalDecoder, alignment_parameters, set_alpha
from minivid.pipelines import common
from minivid.pipelines.ch03 import encode_captions
from minivid.pipelines.ch06_latents import (
    RGB,
    DecoderRecipe,
    LatentCodec,
    LatentRecipe,
    VAERecipe,
    VideoRecipe,
    build_decoder,
    build_latent_unet,
    build_vae,
    build_video_model,
    decoder_batch_fn,
    decoder_loss_fn,
    encode_pool,
    latent_batch_fn,
    latent_flow,
    latent_loss_fn,
    latent_side,
    motion_channels,
    scale_factor,
    vae_batch_fn,
    vae_loss_fn,
)
from minivid.pipelines.common import (
    ChapterCLI,
    Denoiser,
    guided_ddim,
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

MODEL_VERSION = 1          # bump when an architecture or loss of this chapter changes (stale caches retrain)
STAGES = ("vae", "latent", "video", "decoder")
DECODERS = ("temporal", "frame")


@dataclass(frozen=True)
class Ch06Preset:
    name: str
    vae: VAERecipe
    latent: LatentRecipe
    video: VideoRecipe
    decoder: DecoderRecipe
    guidance: float = 3.0              # default classifier-free guidance scale (the bench's sweep at seed 0 on the
                                       # 1,200-step text encoder: colour 1.00 / 0.99 / 0.93 and validity 0.95 / 0.87 /
                                       # 0.79 at 1.5 / 3 / 4.5, direction 0.84 / 0.91 / 0.91; 4.5 was the 800-step's)
    eval_samples: int = 256            # held-out prompts judged
    eval_steps: int = 20               # DDIM steps for the judged samples


PRESETS = {
    "smoke": Ch06Preset(
        name="smoke",
        vae=VAERecipe(vae_overrides={"channels": 8, "groups": 4}, steps=2, batch_size=4, warmup_steps=0, pool=32,
                      scale_batch=32),
        latent=LatentRecipe(unet="unet2d-tiny", unet_overrides={}, text_preset="smoke", T=100, steps=2, batch_size=4,
                            warmup_steps=0, pool=32),
        video=VideoRecipe(alignment={"head_dim": 16, "motion_channels": 2, "text_cross_attn": True}, frames=4, steps=2,
                          batch_size=2, warmup_steps=0, pool=16),
        decoder=DecoderRecipe(frames=4, steps=2, batch_size=2, warmup_steps=0, pool=16),
        eval_samples=4, eval_steps=2,
    ),
    # step times: minivid.bench.time_train_step, 5 steps with one thread on a busy 2-core machine (several runs;
    # the range is beside each recipe), halved for 2 cores; each training stays under 10 minutes, ~27 in all, plus
    # about a minute encoding the pools once (the first batch of each latent training)
    "full": Ch06Preset(name="full", vae=VAERecipe(), latent=LatentRecipe(), video=VideoRecipe(),
                       decoder=DecoderRecipe()),
}


def get_preset(name: str | Ch06Preset) -> Ch06Preset:
    return pick_preset(name, PRESETS, "ch06")


def checkpoint_path(what: str, preset, seed: int = 0) -> Path:
    """Where a trained model lives: what = "vae" | "latent" | "video" | "decoder", each keyed by its recipe and
    its upstream models' checkpoints (the autoencoder; the text encoder; the latent image model)."""
    p = get_preset(preset)
    if what not in STAGES:
        raise ValueError(f"what must be one of {STAGES}, got {what!r}")
    if what == "vae":
        parts = (p.vae,)
    elif what == "latent":
        text = pretrained_path("ch02.text_encoder", p.latent.text_preset, seed).name
        parts = (p.latent, checkpoint_path("vae", p, seed).name, text)
    elif what == "video":
        parts = (p.video, checkpoint_path("latent", p, seed).name)
    else:
        parts = (p.decoder, checkpoint_path("vae", p, seed).name)
    return common.checkpoint_path("ch06", what, p.name, seed, *parts, version=MODEL_VERSION)


def train_command(preset) -> str:
    return f"python -m minivid train ch06 --preset {get_preset(preset).name}"


# ----------------------------------------------------------------------------- 1. the image autoencoder

def train_vae(preset="full", seed: int = 0, progress: bool = True, retrain: bool = False):
    """Train (or load) the autoencoder. Returns (LatentCodec with the EMA autoencoder, frozen; TrainState)."""
    p = get_preset(preset)
    r = p.vae
    torch.manual_seed(seed)
    state = load_or_train(build_vae(r), vae_loss_fn(r.kl_weight, r.recon),
                          lazy_batches(lambda: vae_batch_fn(r.batch_size, image_text_pool(r.size, r.pool)["x"])), r,
                          checkpoint_path("vae", p, seed), seed=seed, progress=progress, retrain=retrain,
                          ckpt_every=250, command=train_command(p), desc=f"ch06 image autoencoder ({p.name})")
    vae = state.sampling_model.eval().requires_grad_(False)
    return LatentCodec(vae, scale_factor(vae, r, seed)), state


_CODECS: dict[tuple, LatentCodec] = {}     # (checkpoint, mtime) -> the loaded codec (its scale factor computed once)


@provides("ch06.vae", path=lambda preset, seed=0: checkpoint_path("vae", preset, seed))
def load_vae(preset="full", seed: int = 0, progress: bool = True) -> LatentCodec:
    """The trained autoencoder and its scale factor (LatentCodec), trained first if absent. Frozen; shared."""
    p = get_preset(preset)
    path = checkpoint_path("vae", p, seed)
    if not is_finished(path, p.vae.steps):
        return train_vae(p, seed, progress)[0]
    key = (str(path), path.stat().st_mtime_ns)
    if key not in _CODECS:
        vae = load_weights(build_vae(p.vae), path, steps=p.vae.steps, command=train_command(p)).requires_grad_(False)
        _CODECS[key] = LatentCodec(vae, scale_factor(vae, p.vae, seed))
    return _CODECS[key]


# ----------------------------------------------------------------------------- 2. the latent image model

def train_latent(preset="full", seed: int = 0, progress: bool = True, retrain: bool = False):
    """Train (or load) the latent text-to-image U-Net. Returns (Denoiser with the EMA model, TrainState)."""
    p = get_preset(preset)
    r = p.latent
    codec = load_vae(p, seed, progress)
    cond = pretrained("ch02.conditioner", r.text_preset, seed, progress)
    schedule = schedule_for(r)

    def data():
        pool = image_text_pool(p.vae.size, r.pool)
        lat = {"latents": encode_pool(codec.vae, pool["x"]), "text": encode_captions(cond, pool["captions"])}
        return latent_batch_fn(r.batch_size, lat, codec.scale)
    torch.manual_seed(seed)
    model = build_latent_unet(r, codec.vae.cfg.latent_channels, cond.dim)
    loss_fn = latent_loss_fn(schedule, r.objective, cond.null_features(), r.p_uncond)
    state = load_or_train(model, loss_fn, lazy_batches(data),
                          r, checkpoint_path("latent", p, seed), seed=seed, progress=progress, retrain=retrain,
                          ckpt_every=250, command=train_command(p), desc=f"ch06 latent text-to-image U-Net ({p.name})")
    net = state.sampling_model.eval().requires_grad_(False)
    return Denoiser(net, schedule, cond, r.objective, latent_side(p.vae)), state


@provides("ch06.latent_t2i", path=lambda preset, seed=0: checkpoint_path("latent", preset, seed))
def load_latent(preset="full", seed: int = 0, progress: bool = True) -> Denoiser:
    """The latent text-to-image model: Denoiser(model, schedule, cond, objective, size = the latent side)."""
    p = get_preset(preset)
    r, path = p.latent, checkpoint_path("latent", p, seed)
    if not is_finished(path, r.steps):
        return train_latent(p, seed, progress)[0]
    codec = load_vae(p, seed, progress)
    cond = pretrained("ch02.conditioner", r.text_preset, seed, progress)
    net = load_weights(build_latent_unet(r, codec.vae.cfg.latent_channels, cond.dim), path, steps=r.steps,
                       command=train_command(p)).requires_grad_(False)
    return Denoiser(net, schedule_for(r), cond, r.objective, latent_side(p.vae))


# ----------------------------------------------------------------------------- 3. the temporal alignment

def train_video(preset="full", seed: int = 0, progress: bool = True, retrain: bool = False):
    """Train (or load) the temporal layers on captioned latent clips. Returns (Denoiser, TrainState)."""
    p = get_preset(preset)
    r = p.video
    image = load_latent(p, seed, progress)
    codec = load_vae(p, seed, progress)

    def data():
        pool = video_text_pool(p.vae.size, r.frames, r.pool)
        lat = {"latents": encode_pool(codec.vae, pool["x"]), "text": encode_captions(image.cond, pool["captions"]),
               "text_reversed": encode_captions(image.cond, time_reversed(pool)["captions"])}
        if motion_channels(r):
            lat["flow"] = latent_flow(pool, codec.vae.cfg.downsample_factor)
        return latent_batch_fn(r.batch_size, lat, codec.scale, r.time_reversal)
    torch.manual_seed(seed)
    model = build_video_model(r, image.model)
    loss_fn = latent_loss_fn(image.schedule, image.objective, image.cond.null_features(), r.p_uncond, r.t_shift)
    state = load_or_train(model, loss_fn, lazy_batches(data), r, checkpoint_path("video", p, seed), seed=seed,
                          progress=progress, retrain=retrain, params=alignment_parameters(model), ckpt_every=250,
                          command=train_command(p), desc=f"ch06 temporal alignment layers ({p.name})")
    return image._replace(model=state.sampling_model.eval().requires_grad_(False)), state


@provides("ch06.video", path=lambda preset, seed=0: checkpoint_path("video", preset, seed))
def load_video(preset="full", seed: int = 0, progress: bool = True) -> Denoiser:
    """The latent text-to-video model: Denoiser(model, schedule, cond, objective, size = the latent side)."""
    p = get_preset(preset)
    path = checkpoint_path("video", p, seed)
    if not is_finished(path, p.video.steps):
        return train_video(p, seed, progress)[0]
    image = load_latent(p, seed, progress)
    net = load_weights(build_video_model(p.video, image.model), path, steps=p.video.steps, command=train_command(p))
    return image._replace(model=net.requires_grad_(False))


# ----------------------------------------------------------------------------- 4. the temporal decoder

def train_decoder(preset="full", seed: int = 0, progress: bool = True, retrain: bool = False):
    """Fine-tune (or load) the temporal decoder on unlabelled clips. Returns (TemporalDecoder, TrainState)."""
    p = get_preset(preset)
    r = p.decoder
    codec = load_vae(p, seed, progress)

    def data():
        pool = video_pool(p.vae.size, r.frames, r.pool)
        return decoder_batch_fn(r.batch_size, {"x": pool["x"], "latents": encode_pool(codec.vae, pool["x"])},
                                r.time_reversal, noise=r.latent_noise / codec.scale)
    torch.manual_seed(seed)
    dec = build_decoder(r, codec.vae)
    state = load_or_train(dec, decoder_loss_fn(r.temporal_weight), lazy_batches(data), r,
                          checkpoint_path("decoder", p, seed),
                          seed=seed, progress=progress, retrain=retrain, params=alignment_parameters(dec),
                          ckpt_every=250, command=train_command(p), desc=f"ch06 temporal decoder ({p.name})")
    return state.sampling_model.eval().requires_grad_(False), state


@provides("ch06.decoder", path=lambda preset, seed=0: checkpoint_path("decoder", preset, seed))
def load_decoder(preset="full", seed: int = 0, progress: bool = True) -> TemporalDecoder:
    """The temporally fine-tuned decoder (reads unscaled latents: `LatentCodec.decode(z, decoder)` scales)."""
    p = get_preset(preset)
    path = checkpoint_path("decoder", p, seed)
    if not is_finished(path, p.decoder.steps):
        return train_decoder(p, seed, progress)[0]
    dec = build_decoder(p.decoder, load_vae(p, seed, progress).vae)
    return load_weights(dec, path, steps=p.decoder.steps, command=train_command(p)).requires_grad_(False)


# ----------------------------------------------------------------------------- sampling

def _prompts(prompts) -> list[str]:
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    if not prompts:
        raise ValueError("prompts must hold at least one prompt")
    return prompts


def sample_latents(preset, video: Denoiser, codec: LatentCodec, prompts: list[str], *, frames: int, steps: int,
                   seed: int, guidance: float | None = None, batch_size: int = 64, progress: bool = True):
    """Latent clips by DDIM + classifier-free guidance from the video model: scaled latents (B, c, frames, h, w).
    With motion channels the flow is denoised alongside (B, c + 2, ...) and dropped here."""
    p = get_preset(preset)
    c = codec.vae.cfg.latent_channels
    z = guided_ddim(video.model, video.schedule, video.cond, prompts, (c + motion_channels(p.video), frames,
                    video.size, video.size), guidance=p.guidance if guidance is None else guidance,
                    objective=video.objective, steps=steps, seed=seed, batch_size=batch_size, progress=progress,
                    clip=None)
    return z[:, :c]


def generate(prompts, *, preset="full", seed: int = 0, steps: int = 50, guidance: float | None = None,
             frames: int | None = None, decoder: str = "temporal", alpha: float | None = None, model_seed: int = 0,
             progress: bool = True, batch_size: int = 64, return_latents: bool = False):
    """One clip per prompt: latents by DDIM + classifier-free guidance from the video model, then decoded.
    Returns (B, 3, frames, 32, 32) in [-1, 1] (return_latents: also the scaled latents (B, c, frames, 8, 8)).

    decoder: "temporal" (the fine-tuned one) | "frame" (the autoencoder's, frame by frame: the same latents, to
    see what the fine-tune fixes). alpha: sample with every alpha set to it (1: the latent image model frame by
    frame). seed picks the noise; model_seed the trained models (loaded, or trained once if absent).
    """
    p = get_preset(preset)
    prompts = _prompts(prompts)
    if decoder not in DECODERS:
        raise ValueError(f"decoder must be one of {DECODERS}, got {decoder!r}")
    T = p.video.frames if frames is None else frames
    if not isinstance(T, int) or T < 1:
        raise ValueError(f"frames must be an int >= 1, got {frames!r}")
    video = load_video(p, model_seed, progress)
    codec = load_vae(p, model_seed, progress)
    net = video.model if alpha is None else set_alpha(copy.deepcopy(video.model), alpha)
    z = sample_latents(p, video._replace(model=net), codec, prompts, frames=T, steps=steps, seed=seed,
                       guidance=guidance, batch_size=batch_size, progress=progress)
    dec = load_decoder(p, model_seed, progress) if decoder == "temporal" else None
    x = codec.decode(z, dec).clamp(-1, 1)
    return (x, z) if return_latents else x


def generate_images(prompts, *, preset="full", seed: int = 0, steps: int = 50, guidance: float | None = None,
                    model_seed: int = 0, progress: bool = True, batch_size: int = 64) -> torch.Tensor:
    """One image per prompt from the latent text-to-image model, decoded: (B, 3, 32, 32) in [-1, 1]."""
    p = get_preset(preset)
    image, codec = load_latent(p, model_seed, progress), load_vae(p, model_seed, progress)
    c, s = codec.vae.cfg.latent_channels, image.size
    z = guided_ddim(image.model, image.schedule, image.cond, _prompts(prompts), (c, s, s), objective=image.objective,
                    guidance=p.guidance if guidance is None else guidance, steps=steps, seed=seed,
                    batch_size=batch_size, progress=progress, clip=None)
    return codec.decode(z).clamp(-1, 1)


# ----------------------------------------------------------------------------- command line

def with_all_steps(preset, steps: int | None) -> Ch06Preset:
    """The preset with every one of its four trainings run for `steps` steps (named so its caches are its own)."""
    return with_steps(get_preset(preset), STAGES, steps)


def cli_train(preset: str = "full", seed: int = 0, steps: int | None = None) -> Path:
    """`python -m minivid train ch06`: the autoencoder, the latent image model, the temporal layers, the decoder."""
    p = with_all_steps(preset, steps)
    train_vae(p, seed)
    train_latent(p, seed)
    train_video(p, seed)
    train_decoder(p, seed)
    return checkpoint_path("video", p, seed)


def cli_generate(prompts: list[str], *, preset: str = "full", seed: int = 0, steps: int = 50,
                 guidance: float | None = None, frames: int | None = None) -> torch.Tensor:
    """`python -m minivid generate --model ch06`: clips (B, 3, T, 32, 32) in [-1, 1], decoded by the temporal
    decoder; `seed` picks the sampling noise only (the models are training seed 0)."""
    return generate(list(prompts), preset=preset, seed=seed, steps=steps, guidance=guidance, frames=frames)


# demo_rank 0 until a recorded bench shows it beating the chapters before and its weights are released
CLI = ChapterCLI(train=cli_train, generate=cli_generate, frames=(2, 16), demo_rank=0,
                 summary="Video LDM: an image autoencoder, latent diffusion with alpha-merged temporal layers, "
                         "a temporally fine-tuned decoder")

__all__ = ["MODEL_VERSION", "STAGES", "DECODERS", "RGB", "VAERecipe", "LatentRecipe", "VideoRecipe", "DecoderRecipe",
           "Ch06Preset", "PRESETS", "get_preset", "checkpoint_path", "train_command", "LatentCodec", "latent_side", "build_vae",
           "scale_factor", "train_vae", "load_vae", "build_latent_unet", "train_latent", "load_latent",
           "build_video_model", "train_video", "load_video", "build_decoder", "train_decoder", "load_decoder",
           "sample_latents", "generate", "generate_images", "with_all_steps", "cli_train", "cli_generate", "CLI"]
