"""Chapter 06, the parts of Video LDM's four trainings: the latent codec, the latent pools, batches and losses.

Video LDM (Blattmann et al. 2023, arXiv:2304.08818) runs every diffusion model in the latent space of a
pre-trained *image* autoencoder (latent diffusion, Rombach et al. 2022, arXiv:2112.10752):

* `LatentCodec`: the autoencoder and its scale factor. `encode` maps pixels (B, 3, [T,] 32, 32) to scaled
  latents scale * z, z ~ q(z | x), frame by frame; `decode` undoes the scale and decodes, with the per-frame
  decoder or a temporally fine-tuned one (`minivid.models.alignment.TemporalDecoder`).
* `encode_pool`: a pool's posteriors (mean, std), computed once with the frozen encoder; every batch draws a
  fresh sample z = mean + std * eps from them, as LDM trains on posterior samples.
* The four recipes and the models they build (the recipes' step counts are sized in `minivid.pipelines.ch06`'s
  presets: each under 10 minutes on 2 cores).
* The losses: the autoencoder's (`minivid.models.vae.vae_loss`), the diffusion loss on latents (caption dropout,
  any objective; images (B, c, h, w) and clips (B, c, T, h, w) alike), and the decoder fine-tune's
  reconstruction plus temporal term (`decoder_loss`).

The decoder's temporal term. The paper fine-tunes the decoder against a patch-wise temporal discriminator built
from 3-D convolutions (Sec. 3.1.1): it punishes clips whose frame-to-frame behaviour is unlike real video. A GAN
is the least reliable thing to train in minutes on a CPU, so this chapter uses a documented cheaper substitute
aimed at the same failure: the decoded clip's frame-to-frame differences must match the real clip's,

    loss = mean (x_hat - x)^2 + temporal_weight * mean ((x_hat[t+1] - x_hat[t]) - (x[t+1] - x[t]))^2,

i.e. the second term is the squared change of the error from one frame to the next. An error that stays the same
in every frame costs nothing extra; one that changes from frame to frame - flicker, what a per-frame decoder adds
to a latent clip - costs up to 1 + 4 * temporal_weight times as much.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
import torch.nn.functional as F

from minivid.data import WorldConfig, flow_field, from_uint8, image_text_pool
from minivid.diffusion import Schedule, diffusion_loss, shifted_timesteps
from minivid.eval.distances import psnr
from minivid.models import UNet2D, unet2d_config
from minivid.models.alignment import PADDINGS, AlignmentConfig, TemporalDecoder, align
from minivid.models.vae import AutoencoderKL, frame_difference_mse, latent_scale_factor, vae_config, vae_loss
from minivid.text import caption_dropout
from minivid.utils import make_generator

RGB, FLOW = 3, 2                       # channels: pixels; the optical flow (x, y) of the motion channels


# ----------------------------------------------------------------------------- the four recipes

def _unit(name: str, value: float) -> None:
    if not 0 <= value <= 1:
        raise ValueError(f"{name} must lie in [0, 1], got {value}")


@dataclass(frozen=True)
class VAERecipe:
    vae: str = "vae-tiny"
    vae_overrides: dict = field(default_factory=dict)
    size: int = 32                     # frames are size x size; latents (size / 4) x (size / 4)
    kl_weight: float = 1e-6            # LDM's KL-f4 weight (per element, `vae_loss`)
    recon: str = "mse"
    steps: int = 2500                  # ~0.15 s/step on 2 cores (0.20-0.37 s with one thread): ~6.3 min
    batch_size: int = 32
    lr: float = 1e-3
    warmup_steps: int = 50
    ema_decay: float = 0.995
    pool: int = 20000                  # the image-caption pool's images (their captions are not read)
    scale_batch: int = 512             # images whose posterior samples set the latent scale factor

    def __post_init__(self):
        cfg = vae_config(self.vae, **self.vae_overrides)                    # checks the overrides
        if self.size < cfg.downsample_factor or self.size % cfg.downsample_factor:
            raise ValueError(f"size must be a multiple of the autoencoder's {cfg.downsample_factor}x compression, "
                             f"got {self.size}")
        if self.recon not in ("mse", "l1") or self.kl_weight < 0:
            raise ValueError(f"recon must be 'mse' or 'l1' and kl_weight >= 0, got {self.recon!r}, {self.kl_weight}")
        if self.scale_batch < 2 or self.scale_batch > self.pool:
            raise ValueError(f"scale_batch must lie in 2..pool={self.pool}, got {self.scale_batch}")


@dataclass(frozen=True)
class LatentRecipe:
    """Chapter 02's text-to-image U-Net, on latents."""
    unet: str = "unet2d-small"
    unet_overrides: dict = field(default_factory=lambda: {"channel_mult": (1, 2), "attn_levels": (1,)})
    text_preset: str = "full"          # the frozen chapter-02 text encoder
    p_uncond: float = 0.1              # caption dropout (classifier-free guidance)
    T: int = 1000
    schedule: str = "cosine"
    objective: str = "v"
    steps: int = 4000                  # ~0.10 s/step on 2 cores (0.17-0.23 s with one thread): ~6.7 min
    batch_size: int = 64
    lr: float = 1e-3
    warmup_steps: int = 100
    ema_decay: float = 0.995
    pool: int = 20000                  # image-caption pairs (plentiful)

    def __post_init__(self):
        _unit("p_uncond", self.p_uncond)


@dataclass(frozen=True)
class VideoRecipe:
    """The temporal layers aligned to the frozen latent image model (its schedule and objective)."""
    # AlignmentConfig overrides: a temporal attention after the full-size ResBlocks too; the clip's latent-resolution
    # flow denoised with its latents (motion_channels=2, `latent_flow`, VideoJAM as in chapter 03); each temporal
    # attention followed by a cross-attention to the text tokens (text_cross_attn, the released code's
    # VideoTransformerBlock). With t_shift=2 below, the three together are what made every seed learn direction.
    # Tried by hand first (2026-12-02/03, Zen 5 EPYC, one thread beside another run, guidance 4.5, 256 held-out
    # prompts, frame decoder, not recorded benches), at seed 1, the seed whose frozen text encoder puts "up" nearest
    # "right" (pooled cosine 0.87) and "down" nearest "left" (0.80) and whose earlier recipe (attention at level 0
    # only, t_shift 1: the recorded 0.656) moved half its "up" clips right and its "down" clips left:
    #   motion channels alone 0.23 (an earlier run; `bench ch06_ablations` records 0.59); t_shift 2: 0.64, 3: 0.65;
    #   the text tokens' mean read by the temporal attention (text_tokens_in_time) 0.56; 3x3x3 temporal convs
    #   (spatial_kernel=3) 0.656; cross-attention alone 0.61 (seed 2: 0.86, recorded 0.72); motion channels with
    #   t_shift 2: 0.68; motion channels, cross-attention and t_shift 2 together: 0.92. The recorded ablation (`python
    #   -m minivid bench ch06_ablations --preset full --seed 1`, chapter 06 section 5) measures these arms again.
    alignment: dict = field(default_factory=lambda: {"attn_levels": (0,), "motion_channels": FLOW,
                                                     "text_cross_attn": True})
    frames: int = 8
    p_uncond: float = 0.1
    time_reversal: float = 0.5         # chance a clip plays backwards, its caption's direction flipped
    # t_shift > 1 draws the training timesteps SNR-shifted, noisier (`shifted_timesteps`): every SNR / t_shift^2, as
    # chapter 03's schedule shift, where direction is decided (the frozen image model's schedule cannot change).
    t_shift: float = 2.0
    steps: int = 3000                  # ~0.15 s/step on 2 cores (0.21-0.36 s with one thread): ~7.5 min
    batch_size: int = 8
    lr: float = 1e-3
    warmup_steps: int = 100
    ema_decay: float = 0.995
    pool: int = 2000                   # captioned clips (scarce)

    def __post_init__(self):
        if AlignmentConfig(**self.alignment).motion_channels not in (0, FLOW):       # checks the overrides
            raise ValueError(f"alignment's motion_channels must be 0 or {FLOW} (the flow's x and y), got "
                             f"{self.alignment['motion_channels']!r}")
        if self.frames < 2:
            raise ValueError(f"frames must be >= 2 (a clip), got {self.frames}")
        _unit("p_uncond", self.p_uncond)
        _unit("time_reversal", self.time_reversal)
        if self.t_shift <= 0:
            raise ValueError(f"t_shift must be > 0, got {self.t_shift}")


@dataclass(frozen=True)
class DecoderRecipe:
    """The decoder's temporal fine-tune (encoder and spatial decoder frozen) on unlabelled clips."""
    kernel: int = 3
    padding: str = "zeros"             # the temporal convs' beyond the clip's ends ("zeros" | "replicate")
    alpha_init: float = 0.5
    temporal_weight: float = 1.0       # the frame-difference term (`ch06_latents.decoder_loss`)
    latent_noise: float = 0.25         # max std of per-frame noise added to the latents (scaled units, 1 = their
                                       # spread; `decoder_batch_fn`). Seed 0, guidance 4.5, flicker of generated
                                       # clips (per-frame decoder 0.00528): 0 -> 0.00532, 0.25 -> 0.00489,
                                       # 0.5 -> 0.00508, 1.0 -> 0.00553 (validity 0.969, 0.961, 0.941, 0.926)
    frames: int = 8
    time_reversal: float = 0.5
    steps: int = 1600                  # ~0.23 s/step on 2 cores (0.44-0.49 s with one thread): ~6.1 min
    batch_size: int = 8
    lr: float = 1e-3
    warmup_steps: int = 50
    ema_decay: float = 0.995
    pool: int = 2000                   # unlabelled clips (plentiful)

    def __post_init__(self):
        AlignmentConfig(kernel=self.kernel, alpha_init=self.alpha_init)     # checks both
        if self.padding not in PADDINGS:
            raise ValueError(f"padding must be one of {PADDINGS}, got {self.padding!r}")
        if self.frames < 2 or self.temporal_weight < 0 or self.latent_noise < 0:
            raise ValueError(f"frames must be >= 2, temporal_weight and latent_noise >= 0, got {self.frames}, "
                             f"{self.temporal_weight}, {self.latent_noise}")
        _unit("time_reversal", self.time_reversal)


# ----------------------------------------------------------------------------- the models

def build_vae(recipe: VAERecipe) -> AutoencoderKL:
    return AutoencoderKL(vae_config(recipe.vae, **recipe.vae_overrides))


@torch.no_grad()
def scale_factor(vae: AutoencoderKL, recipe: VAERecipe, seed: int = 0) -> float:
    """LDM's latent scale factor: 1 / std of posterior samples of the pool's first `scale_batch` images."""
    x = from_uint8(image_text_pool(recipe.size, recipe.pool)["x"][:recipe.scale_batch])
    return latent_scale_factor(vae.eval().encode(x), generator=make_generator(seed))


def build_latent_unet(recipe: LatentRecipe, latent_channels: int, text_dim: int) -> UNet2D:
    """Chapter 02's U-Net (cross-attention to the text tokens, the pooled vector) reading and writing latents."""
    return UNet2D(unet2d_config(recipe.unet, in_channels=latent_channels, out_channels=latent_channels,
                                context_dim=text_dim, pooled_dim=text_dim, **recipe.unet_overrides))


def build_video_model(recipe: VideoRecipe, image_unet: UNet2D) -> UNet2D:
    """A copy of the latent image U-Net with alpha-merged temporal layers; only they (and the alphas) require grad."""
    return align(copy.deepcopy(image_unet), AlignmentConfig(**recipe.alignment))


def build_decoder(recipe: DecoderRecipe, vae: AutoencoderKL) -> TemporalDecoder:
    """A copy of the autoencoder's decoder with alpha-merged temporal layers (equal to it at initialisation)."""
    return TemporalDecoder(copy.deepcopy(vae), recipe.kernel, recipe.alpha_init, recipe.padding)


def motion_channels(recipe: VideoRecipe) -> int:
    """How many flow channels the video model denoises after the latents (0 or 2)."""
    return AlignmentConfig(**recipe.alignment).motion_channels


def latent_side(recipe: VAERecipe) -> int:
    """The side of the autoencoder's latents: size / f."""
    return recipe.size // vae_config(recipe.vae, **recipe.vae_overrides).downsample_factor


# ----------------------------------------------------------------------------- the codec and the latent pools

class LatentCodec(NamedTuple):
    """A trained image autoencoder and the scale factor of its latents (1 / std of posterior samples)."""
    vae: AutoencoderKL
    scale: float

    @torch.no_grad()
    def encode(self, x: torch.Tensor, generator: torch.Generator | None = None, sample: bool = True) -> torch.Tensor:
        """x: (B, 3, [T,] H, W) in [-1, 1] -> scaled latents (B, c, [T,] H/f, W/f): scale * z, z ~ q(z | x)
        (sample=False: the posterior mean)."""
        q = self.vae.encode(x)
        return self.scale * (q.sample(generator) if sample else q.mode())

    @torch.no_grad()
    def decode(self, z: torch.Tensor, decoder=None) -> torch.Tensor:
        """z: scaled latents (B, c, [T,] h, w) -> pixels (B, 3, [T,] h*f, w*f) (not clamped). decoder: None for the
        autoencoder's own, frame by frame; or a `TemporalDecoder` (clips only)."""
        return (self.vae.decode if decoder is None else decoder)(z / self.scale)


@torch.no_grad()
def encode_pool(vae: AutoencoderKL, x_uint8: torch.Tensor, batch: int = 256) -> dict:
    """The posteriors of a pool of images (N, 3, S, S) or clips (N, 3, T, S, S), uint8, by the frozen encoder:
    {"mean", "std"}, each (N, c, [T,] S/f, S/f) float32, unscaled."""
    vae = vae.eval()
    means, stds = [], []
    for i in range(0, len(x_uint8), batch):
        q = vae.encode(from_uint8(x_uint8[i:i + batch]))
        means.append(q.mean)
        stds.append(q.std)
    return {"mean": torch.cat(means), "std": torch.cat(stds)}


@torch.no_grad()
def latent_flow(pool: dict, factor: int, batch: int = 256) -> torch.Tensor:
    """The exact optical flow of a pool's clips (`minivid.data.flow_field`, the fast speed is 1 on the object's
    pixels) averaged over each latent cell: {"x": (N, 3, T, S, S) uint8 or in [-1, 1], "labels"} -> (N, 2, T, S/f,
    S/f).
    What chapter 03's motion channels denoise, at the resolution of the latents it is denoised with."""
    x, lab = pool["x"], pool["labels"]
    world = WorldConfig(size=x.shape[-1], frames=x.shape[2])
    out = []
    for i in range(0, len(x), batch):
        xb = x[i:i + batch]
        xb = from_uint8(xb) if xb.dtype == torch.uint8 else xb
        flow = flow_field(xb, lab["direction"][i:i + batch], lab["speed"][i:i + batch], world)
        out.append(F.avg_pool3d(flow, (1, factor, factor)))
    return torch.cat(out)


def posterior_sample(latents: dict, idx: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """A fresh sample mean + std * eps of the items idx of `encode_pool`'s output: (len(idx), c, ...)."""
    mean, std = latents["mean"][idx], latents["std"][idx]
    return mean + std * torch.randn(mean.shape, generator=g)


# ----------------------------------------------------------------------------- the autoencoder

def vae_batch_fn(batch_size: int, x_uint8: torch.Tensor):
    """batch_fn(step, g) -> {"x": (B, 3, S, S)} random images of the pool, in [-1, 1]."""
    def batch_fn(step, g):
        return {"x": from_uint8(x_uint8[torch.randint(0, len(x_uint8), (batch_size,), generator=g)])}
    return batch_fn


def vae_loss_fn(kl_weight: float, recon: str = "mse"):
    """LDM's autoencoder loss without its perceptual and GAN terms (`vae_loss`): (loss, metrics)."""
    def loss_fn(net, batch, g):
        return vae_loss(net, batch["x"], kl_weight, generator=g, recon=recon)
    return loss_fn


# ----------------------------------------------------------------------------- latent diffusion (images and clips)

def latent_batch_fn(batch_size: int, data: dict, scale: float, time_reversal: float = 0.0):
    """batch_fn(step, g) -> {"x": scaled latents (B, c, [T,] h, w), "context", "context_mask", "pooled"}.

    data: {"latents": `encode_pool` output, "text": frozen text features, and for clips "text_reversed": the
    features of the captions of the clips played backwards, and optionally "flow": `latent_flow`, concatenated
    after the latents, (B, c + 2, T, h, w)}. With `time_reversal` p a clip plays backwards (its latents flipped in
    time: the encoder works frame by frame; its flow flipped and negated) with its caption's direction flipped.
    """
    lat, text, flow = data["latents"], data["text"], data.get("flow")

    def batch_fn(step, g):
        idx = torch.randint(0, len(lat["mean"]), (batch_size,), generator=g)
        z = scale * posterior_sample(lat, idx, g)
        f = None if flow is None else flow[idx]
        out = {k: v[idx] for k, v in text.items()}
        if time_reversal:
            back = torch.rand(batch_size, generator=g) < time_reversal
            flip = back[:, None, None, None, None]
            z = torch.where(flip, z.flip(2), z)
            f = None if f is None else torch.where(flip, -f.flip(2), f)
            out = {k: torch.where(back.view(-1, *[1] * (v.dim() - 1)), data["text_reversed"][k][idx], v)
                   for k, v in out.items()}
        return {"x": z if f is None else torch.cat([z, f], 1), **out}
    return batch_fn


def latent_loss_fn(schedule: Schedule, objective: str, null: dict, p_uncond: float, t_shift: float = 1.0):
    """Caption dropout (per item, to the null caption's features), then the diffusion loss on the latents, its
    timesteps drawn SNR-shifted by `t_shift` (`shifted_timesteps`; 1 = uniform)."""
    def loss_fn(net, batch, g):
        text, dropped = caption_dropout({k: batch[k] for k in null}, null, p_uncond, generator=g)
        t = shifted_timesteps(batch["x"].shape[0], schedule, t_shift, generator=g, device=batch["x"].device)
        loss = diffusion_loss(net, batch["x"], schedule, objective, generator=g, cond=text, t=t)
        return loss, {"dropped": dropped.float().mean()}
    return loss_fn


# ----------------------------------------------------------------------------- the temporal decoder

def decoder_batch_fn(batch_size: int, data: dict, time_reversal: float = 0.5, noise: float = 0.0):
    """batch_fn(step, g) -> {"x": clips (B, 3, T, S, S) in [-1, 1], "z": posterior samples of their latents
    (B, c, T, S/f, S/f), unscaled}. data: {"x": uint8 clips, "latents": their `encode_pool` output}.

    noise: each clip's latents also get Gaussian noise, independent per frame and element, of a std drawn
    uniformly from [0, noise] (unscaled units). A generated clip's latents are not posterior samples of a real
    clip: each frame carries its own small sampling error, and that is what flickers. Posterior samples alone
    barely differ from their means (the KL weight is tiny), so a decoder fine-tuned on them has nothing to fix;
    with the noise it learns to read a frame's latents in the context of its neighbours.
    """
    def batch_fn(step, g):
        idx = torch.randint(0, len(data["x"]), (batch_size,), generator=g)
        x, z = from_uint8(data["x"][idx]), posterior_sample(data["latents"], idx, g)
        if noise > 0:
            level = noise * torch.rand(batch_size, generator=g).view(-1, *[1] * (z.dim() - 1))
            z = z + level * torch.randn(z.shape, generator=g)
        back = (torch.rand(batch_size, generator=g) < time_reversal)[:, None, None, None, None]
        return {"x": torch.where(back, x.flip(2), x), "z": torch.where(back, z.flip(2), z)}
    return batch_fn


def decoder_loss(x_hat: torch.Tensor, x: torch.Tensor, temporal_weight: float) -> tuple[torch.Tensor, dict]:
    """Reconstruction MSE + temporal_weight * MSE of the frame-to-frame differences (see the module docstring).

    x_hat, x: (B, 3, T, H, W). Returns (loss, {"rec", "temporal", "psnr"}).
    """
    temporal = frame_difference_mse(x_hat, x)                          # checks the shapes
    rec = (x_hat - x).pow(2).mean()
    with torch.no_grad():
        p = psnr(x_hat.clamp(-1, 1), x).mean()
    return rec + temporal_weight * temporal, {"rec": rec.detach(), "temporal": temporal.detach(), "psnr": p}


def decoder_loss_fn(temporal_weight: float):
    def loss_fn(decoder, batch, g):
        return decoder_loss(decoder(batch["z"]), batch["x"], temporal_weight)
    return loss_fn


__all__ = ["RGB", "FLOW", "VAERecipe", "LatentRecipe", "VideoRecipe", "DecoderRecipe", "build_vae", "scale_factor",
           "build_latent_unet", "build_video_model", "build_decoder", "motion_channels", "latent_flow", "latent_side",
           "LatentCodec", "encode_pool", "posterior_sample", "vae_batch_fn", "vae_loss_fn", "latent_batch_fn",
           "latent_loss_fn", "decoder_batch_fn", "decoder_loss", "decoder_loss_fn"]
