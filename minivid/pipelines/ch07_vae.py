"""Chapter 07's building blocks: the autoencoder recipe, its data and loss, and encoding / decoding in batches.

Two kinds of autoencoder train on the same Shapes World clips (`VAERecipe.kind`):

* "video": the 3-D causal video VAE of CogVideoX (Yang et al. 2024, arXiv:2408.06072; MAGVIT-v2, Yu et al. 2023,
  arXiv:2310.05737), `minivid.models.video_vae.CausalVideoVAE`: 1 + 4k frames -> 1 + k latent frames at H/4 x W/4.
  It trains on whole clips (a batch is `batch_size` clips).
* "frame": chapter 06's kind, the image VAE of latent diffusion (Rombach et al. 2022, arXiv:2112.10752),
  `minivid.models.vae.AutoencoderKL`, encoding every frame on its own (a batch is `batch_size` frames drawn from
  the clips).

Both train with the same loss (`minivid.models.vae.vae_loss`: MSE + a tiny KL). `encode`, `decode` and
`reconstruct` run either model over many clips, batch by batch; the video VAE whole or chunk by chunk with its
conv cache (`chunk_frames`), which gives the same numbers with memory bounded by the chunk.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from minivid.data import from_uint8, video_pool
from minivid.data.world import check_size
from minivid.models.vae import AutoencoderKL, DiagonalGaussian, VAEConfig, vae_config, vae_loss
from minivid.models.video_vae import CausalVideoVAE, VideoVAEConfig, frame_count_error, video_vae_config
from minivid.train import LR_DECAYS

KINDS = ("video", "frame")
RECONS = ("mse", "l1")
INITS = ("scratch", "ch06")            # where the video VAE's weights start


@dataclass(frozen=True)
class VAERecipe:
    """An autoencoder and its training on Shapes World clips of `frames` frames at `size` x `size`."""
    kind: str = "video"               # "video": CausalVideoVAE | "frame": AutoencoderKL, frame by frame
    model: str = "video-vae-tiny"     # a preset of video_vae_config ("video") or vae_config ("frame")
    overrides: dict = field(default_factory=dict)     # config fields changed from the preset's
    frames: int = 17                  # clip length: 1 + 4k for the video VAE (17 -> 5 latent frames)
    train_frames: int | None = None   # "video": train on random windows of this many frames (1 + 4k) of the clips
    size: int = 32
    pool: int = 2000                  # unlabelled training clips (`video_pool`: an autoencoder reads no caption)
    kl_weight: float = 1e-6           # LDM's KL-f4 weight (`vae_loss`)
    recon: str = "mse"                # "mse" | "l1" (`vae_loss`)
    time_reversal: float = 0.5        # "video": chance a clip plays backwards (uniform motion: still a valid clip)
    init: str = "scratch"             # "video": "scratch" | "ch06": start as chapter 06's image VAE (the preset's
                                      # image_vae_preset, the same seed), inflated (`minivid.models.inflate`)
    temporal_weight: float = 0.0      # "video": plus this times the frame-difference error (`frame_difference_mse`)
    steps: int = 800
    batch_size: int = 8               # clips ("video") or frames ("frame") per step
    lr: float = 1e-3
    lr_decay: str = "constant"        # "constant" | "cosine" (`TrainConfig.lr_decay`)
    warmup_steps: int = 50
    ema_decay: float = 0.995

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if self.recon not in RECONS:
            raise ValueError(f"recon must be one of {RECONS}, got {self.recon!r}")
        if self.init not in INITS or (self.init != "scratch" and self.kind != "video"):
            raise ValueError(f"init must be one of {INITS} ('ch06' only for the video VAE), got {self.init!r} for a "
                             f"{self.kind!r} autoencoder")
        if not 0 <= self.time_reversal <= 1:
            raise ValueError(f"time_reversal must lie in [0, 1], got {self.time_reversal}")
        if self.kl_weight < 0:
            raise ValueError(f"kl_weight must be >= 0, got {self.kl_weight}")
        if self.temporal_weight < 0 or (self.temporal_weight and self.kind != "video"):
            raise ValueError(f"temporal_weight must be >= 0, and 0 for the per-frame VAE (it sees frames, not clips); "
                             f"got {self.temporal_weight} for a {self.kind!r} autoencoder")
        if self.lr_decay not in LR_DECAYS:
            raise ValueError(f"lr_decay must be one of {LR_DECAYS}, got {self.lr_decay!r}")
        if not isinstance(self.pool, int) or self.pool < 1:
            raise ValueError(f"pool must be a positive int, got {self.pool!r}")
        check_size(self.size)
        cfg = model_config(self)                                          # the model name and overrides, checked
        space = cfg.spatial_factor if self.kind == "video" else cfg.downsample_factor
        if self.size % space:
            raise ValueError(f"size must be a multiple of the spatial compression {space}, got {self.size}")
        if not isinstance(self.frames, int) or not 1 <= self.frames <= 32:
            raise ValueError(f"frames (clip length) must be an int in 1..32, got {self.frames!r}")
        if self.kind == "video" and (self.frames - 1) % cfg.time_factor:
            raise frame_count_error(self.frames, cfg.time_factor, "frames")
        if self.train_frames is not None:
            ok = isinstance(self.train_frames, int) and 1 <= self.train_frames <= self.frames
            if self.kind != "video" or not ok:
                raise ValueError(f"train_frames (the video VAE's training windows) must be an int in 1..frames="
                                 f"{self.frames}, or None for whole clips; got {self.train_frames!r} ({self.kind!r})")
            if (self.train_frames - 1) % cfg.time_factor:
                raise frame_count_error(self.train_frames, cfg.time_factor, "train_frames")


def model_config(recipe: VAERecipe) -> VideoVAEConfig | VAEConfig:
    """The recipe's model config: its preset with its overrides."""
    make = video_vae_config if recipe.kind == "video" else vae_config
    return make(recipe.model, **recipe.overrides)


def build_vae(recipe: VAERecipe) -> CausalVideoVAE | AutoencoderKL:
    cfg = model_config(recipe)
    return CausalVideoVAE(cfg) if recipe.kind == "video" else AutoencoderKL(cfg)


def latent_shape(recipe: VAERecipe) -> tuple[int, int, int, int]:
    """The latents of one clip (c, n, h, w): video 17x32x32 -> (4, 5, 8, 8); per frame n = frames."""
    cfg = model_config(recipe)
    if recipe.kind == "video":
        n, f = 1 + (recipe.frames - 1) // cfg.time_factor, cfg.spatial_factor
    else:
        n, f = recipe.frames, cfg.downsample_factor
    return cfg.latent_channels, n, recipe.size // f, recipe.size // f


def latent_values(recipe: VAERecipe) -> int:
    """How many numbers the autoencoder keeps of one clip: c * n * h * w (the budget the chapter compares at)."""
    c, n, h, w = latent_shape(recipe)
    return c * n * h * w


# ----------------------------------------------------------------------------- data and loss

def training_clips(recipe: VAERecipe) -> torch.Tensor:
    """The recipe's training clips: (pool, 3, frames, size, size) uint8 (unlabelled, train split, cached)."""
    return video_pool(recipe.size, recipe.frames, recipe.pool)["x"]


def batch_fn_for(recipe: VAERecipe, clips: torch.Tensor):
    """batch_fn(step, g) -> "video": (B, 3, T, S, S) clips (T = train_frames: a random window of each; else whole),
    time-reversed with chance `time_reversal`; "frame": (B, 3, S, S) frames, each from a random clip at a random
    time. In [-1, 1]; clips: uint8."""
    B = recipe.batch_size

    def clip_batch(step, g):
        x = from_uint8(clips[torch.randint(0, len(clips), (B,), generator=g)])
        if recipe.train_frames is not None:               # one random window of train_frames frames per clip
            start = torch.randint(0, x.shape[2] - recipe.train_frames + 1, (B,), generator=g)
            x = torch.stack([c[:, a:a + recipe.train_frames] for c, a in zip(x, start.tolist())])
        back = torch.rand(B, generator=g) < recipe.time_reversal
        return torch.where(back[:, None, None, None, None], x.flip(2), x)

    def frame_batch(step, g):
        idx = torch.randint(0, len(clips), (B,), generator=g)
        t = torch.randint(0, clips.shape[2], (B,), generator=g)
        return from_uint8(clips[idx, :, t])                             # (B, 3, S, S)

    return clip_batch if recipe.kind == "video" else frame_batch


def loss_fn_for(recipe: VAERecipe):
    """loss_fn(model, x, g) -> (loss, {"loss", "rec", "kl", "psnr"}): `vae_loss` with the recipe's KL and temporal
    weights."""
    def loss_fn(model, x, g):
        return vae_loss(model, x, recipe.kl_weight, generator=g, recon=recipe.recon,
                        temporal_weight=recipe.temporal_weight)
    return loss_fn


# ----------------------------------------------------------------------------- encoding and decoding many clips

def _clips(x: torch.Tensor, name: str = "clips") -> torch.Tensor:
    if x.dim() != 5 or x.shape[1] != 3 or not len(x):
        raise ValueError(f"{name} must be (N >= 1, 3, T, H, W) clips (uint8, or float in [-1, 1]), got {tuple(x.shape)}")
    return from_uint8(x) if x.dtype == torch.uint8 else x


def _check_chunks(vae, chunk: int | None, name: str) -> None:
    if chunk is not None and not isinstance(vae, CausalVideoVAE):
        raise ValueError(f"{name}: the per-frame VAE encodes every frame on its own; chunking (with a conv cache) "
                         f"is the causal video VAE's, give {name}=None")


@torch.no_grad()
def encode(vae, clips: torch.Tensor, *, chunk_frames: int | None = None, batch_size: int = 32) -> DiagonalGaussian:
    """q(z | x) of many clips, `batch_size` at a time. clips: (N, 3, T, H, W), uint8 or in [-1, 1].

    Video VAE: (N, c, 1 + (T-1)/4, H/4, W/4), whole clips, or chunk by chunk with the conv cache (chunk_frames: a
    multiple of 4; the same numbers). Per-frame VAE: (N, c, T, H/f, W/f), chunk_frames None.
    """
    _check_chunks(vae, chunk_frames, "chunk_frames")
    _clips(clips[:1])
    means, logvars = [], []
    for i in range(0, len(clips), batch_size):
        x = _clips(clips[i:i + batch_size])
        q = vae.encode(x) if chunk_frames is None else vae.encode_chunked(x, chunk_frames)
        means.append(q.mean)
        logvars.append(q.logvar)
    return DiagonalGaussian(torch.cat(means), torch.cat(logvars))


@torch.no_grad()
def decode(vae, z: torch.Tensor, *, chunk_latents: int | None = None, batch_size: int = 32) -> torch.Tensor:
    """Clips of latents z (N, c, n, h, w), `batch_size` at a time, clamped to [-1, 1]: video VAE (N, 3, 1 + 4(n-1),
    4h, 4w), whole or `chunk_latents` latent frames at a time; per-frame VAE (N, 3, n, fh, fw)."""
    _check_chunks(vae, chunk_latents, "chunk_latents")
    out = [vae.decode(z[i:i + batch_size]) if chunk_latents is None else
           vae.decode_chunked(z[i:i + batch_size], chunk_latents) for i in range(0, len(z), batch_size)]
    return torch.cat(out).clamp(-1, 1)


@torch.no_grad()
def reconstruct(vae, clips: torch.Tensor, *, chunk_frames: int | None = None, batch_size: int = 32) -> torch.Tensor:
    """Encode (the posterior mean) and decode clips (N, 3, T, H, W) -> (N, 3, T, H, W) in [-1, 1], batch by batch.

    chunk_frames (video VAE only): encode chunk_frames frames at a time and decode chunk_frames / 4 latent frames at
    a time, each with the conv cache; the same clips as whole, with memory bounded by the chunk.
    """
    _check_chunks(vae, chunk_frames, "chunk_frames")
    _clips(clips[:1])
    chunk_latents = None if chunk_frames is None else chunk_frames // vae.cfg.time_factor
    out = []
    for i in range(0, len(clips), batch_size):
        z = encode(vae, clips[i:i + batch_size], chunk_frames=chunk_frames, batch_size=batch_size).mode()
        out.append(decode(vae, z, chunk_latents=chunk_latents, batch_size=batch_size))
    return torch.cat(out)


__all__ = ["KINDS", "INITS", "VAERecipe", "model_config", "build_vae", "latent_shape", "latent_values", "training_clips",
           "batch_fn_for", "loss_fn_for", "encode", "decode", "reconstruct"]
