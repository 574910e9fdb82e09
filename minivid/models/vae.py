"""The KL-regularised image autoencoder of latent diffusion (Rombach et al. 2022, arXiv:2112.10752).

Video LDM (Blattmann et al. 2023, arXiv:2304.08818) runs diffusion in the latent space of a
*pre-trained image* autoencoder and encodes a clip frame by frame. This file is that autoencoder,
the "KL-f4" kind of the LDM paper at tiny scale: a convolutional encoder maps a (3, H, W) image in
[-1, 1] to a diagonal Gaussian over (latent_channels, H/f, W/f) latents, f = 2**(len(channel_mult)-1)
(f = 4: a 32x32 image -> 8x8 latents); a mirror-image decoder maps a latent back to pixels.

* `DiagonalGaussian` is the posterior q(z | x): mean, log-variance (clamped like LDM's to
  [-30, 20]), a reparameterised `sample`, `mode` and `kl` = KL(q || N(0, I)) per item. The 3-D
  video VAE of chapter 07 (minivid.models.video_vae) uses it too.
* `vae_loss`: reconstruction (MSE; LDM's L1 comes with perceptual and GAN terms left out here)
  plus a tiny KL weight, so latents stay near N(0, I) without blurring the reconstruction.
* `latent_scale_factor`: LDM rescales latents by 1 / std (of all latent elements of posterior
  samples of a data batch) so the diffusion model sees unit-variance inputs.
* Video: encode/decode also take (B, C, T, H, W) and treat it as B*T independent images.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import nn

from minivid.eval.distances import psnr
from minivid.models.unet2d import Downsample, Upsample

LOGVAR_RANGE = (-30.0, 20.0)  # LDM's clamp: exp(-30) ~ 1e-13, exp(20) ~ 5e8


class DiagonalGaussian:
    """q(z | x) = N(mean, diag(exp(logvar))); mean and logvar of any shape (B, ...), logvar clamped."""

    def __init__(self, mean: torch.Tensor, logvar: torch.Tensor):
        if mean.shape != logvar.shape or mean.dim() < 2:
            raise ValueError(f"mean and logvar must have one shape (B, ...), got {tuple(mean.shape)} "
                             f"and {tuple(logvar.shape)}")
        self.mean = mean
        self.logvar = logvar.clamp(*LOGVAR_RANGE)

    @classmethod
    def from_params(cls, params: torch.Tensor) -> DiagonalGaussian:
        """params: (B, 2c, ...) = [mean; logvar] stacked on dim 1 (what an encoder outputs)."""
        mean, logvar = params.chunk(2, dim=1)
        return cls(mean, logvar)

    @property
    def std(self) -> torch.Tensor:
        return torch.exp(0.5 * self.logvar)

    @property
    def var(self) -> torch.Tensor:
        return torch.exp(self.logvar)

    @property
    def shape(self) -> torch.Size:
        return self.mean.shape

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """Reparameterised z = mean + std * eps, eps ~ N(0, I) drawn from `generator`: (B, ...).

        Differentiable in mean and logvar (the noise is an input, not a sampled node).
        """
        eps = torch.randn(self.mean.shape, generator=generator, dtype=self.mean.dtype, device=self.mean.device)
        return self.mean + self.std * eps

    def mode(self) -> torch.Tensor:
        """The most likely latent, the mean: (B, ...)."""
        return self.mean

    def kl(self) -> torch.Tensor:
        """KL(q || N(0, I)) in nats, summed over every latent dimension of an item: (B,)."""
        ### BEGIN SOLUTION  # exercise 6.1: the KL term of a diagonal Gaussian against N(0, I)
        per_dim = 0.5 * (self.mean.pow(2) + self.var - 1.0 - self.logvar)   # (B, ...)
        return per_dim.flatten(1).sum(dim=1)                               # (B,)
        ### END SOLUTION


def check_autoencoder_config(cfg) -> None:
    """The checks every autoencoder config shares (this one and `video_vae.VideoVAEConfig`): clear ValueErrors."""
    for name in ("in_channels", "channels", "num_res_blocks", "latent_channels", "groups"):
        v = getattr(cfg, name)
        if not isinstance(v, int) or v < (0 if name == "num_res_blocks" else 1):
            raise ValueError(f"{name} must be a positive int, got {v!r}")
    if len(cfg.channel_mult) < 1 or any(not isinstance(c, int) or c < 1 for c in cfg.channel_mult):
        raise ValueError(f"channel_mult must be a non-empty tuple of positive ints, got {cfg.channel_mult!r}")
    for c in cfg.channel_mult:
        if (cfg.channels * c) % cfg.groups:
            raise ValueError(f"channels*mult ({cfg.channels}*{c}) must divide into groups={cfg.groups}")


@dataclass
class VAEConfig:
    in_channels: int = 3
    channels: int = 32                          # width at full resolution
    channel_mult: tuple[int, ...] = (1, 2, 2)   # one entry per level; every level but the last halves H, W
    num_res_blocks: int = 1                     # per level in the encoder (the decoder has one more)
    latent_channels: int = 4
    groups: int = 8
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        check_autoencoder_config(self)

    @property
    def downsample_factor(self) -> int:
        """Spatial compression f: H, W -> H/f, W/f."""
        return 2 ** (len(self.channel_mult) - 1)


VAE_PRESETS = {
    "vae-tiny": VAEConfig(channels=16, channel_mult=(1, 2, 2), num_res_blocks=1, latent_channels=4),
    "vae-small": VAEConfig(channels=32, channel_mult=(1, 2, 2), num_res_blocks=1, latent_channels=4),
    "vae-base": VAEConfig(channels=64, channel_mult=(1, 2, 2), num_res_blocks=2, latent_channels=4),
}


def vae_config(name: str, **overrides) -> VAEConfig:
    """A named preset with field overrides: vae_config("vae-small", latent_channels=8)."""
    if name not in VAE_PRESETS:
        raise ValueError(f"unknown VAE preset {name!r}; choose one of {sorted(VAE_PRESETS)}")
    return replace(VAE_PRESETS[name], extra={"preset": name}, **overrides)


class VAEResBlock(nn.Module):
    """GN-SiLU-conv3x3, GN-SiLU-conv3x3, plus a (1x1 if needed) skip. (N, Cin, H, W) -> (N, Cout, H, W)."""

    def __init__(self, cin: int, cout: int, groups: int):
        super().__init__()
        self.norm1, self.conv1 = nn.GroupNorm(groups, cin), nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2, self.conv2 = nn.GroupNorm(groups, cout), nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x):
        h = self.conv1(F.silu(self.norm1(x)))
        return self.skip(x) + self.conv2(F.silu(self.norm2(h)))


class Encoder(nn.Module):
    """(N, in_channels, H, W) -> (N, 2 * latent_channels, H/f, W/f): [mean; logvar]."""

    def __init__(self, cfg: VAEConfig):
        super().__init__()
        ch, g = cfg.channels, cfg.groups
        self.conv_in = nn.Conv2d(cfg.in_channels, ch, 3, padding=1)
        layers, cin = [], ch
        for lv, mult in enumerate(cfg.channel_mult):
            for _ in range(cfg.num_res_blocks):
                layers.append(VAEResBlock(cin, ch * mult, g))
                cin = ch * mult
            if lv < len(cfg.channel_mult) - 1:
                layers.append(Downsample(cin))
        layers += [VAEResBlock(cin, cin, g), nn.GroupNorm(g, cin), nn.SiLU(),
                   nn.Conv2d(cin, 2 * cfg.latent_channels, 3, padding=1)]
        self.body = nn.Sequential(*layers)

    def forward(self, x):
        return self.body(self.conv_in(x))


class Decoder(nn.Module):
    """(N, latent_channels, h, w) -> (N, in_channels, h*f, w*f)."""

    def __init__(self, cfg: VAEConfig):
        super().__init__()
        ch, g = cfg.channels, cfg.groups
        cin = ch * cfg.channel_mult[-1]
        layers = [nn.Conv2d(cfg.latent_channels, cin, 3, padding=1), VAEResBlock(cin, cin, g)]
        for lv in reversed(range(len(cfg.channel_mult))):
            for _ in range(cfg.num_res_blocks + 1):
                layers.append(VAEResBlock(cin, ch * cfg.channel_mult[lv], g))
                cin = ch * cfg.channel_mult[lv]
            if lv > 0:
                layers.append(Upsample(cin))
        layers += [nn.GroupNorm(g, cin), nn.SiLU(), nn.Conv2d(cin, cfg.in_channels, 3, padding=1)]
        self.body = nn.Sequential(*layers)

    def forward(self, z):
        return self.body(z)


class AutoencoderKL(nn.Module):
    """encode(x) -> DiagonalGaussian; decode(z) -> x; model(x, generator) -> (recon, posterior).

    Images (B, C, H, W) or clips (B, C, T, H, W), the latter as B*T independent frames.
    """

    def __init__(self, cfg: VAEConfig | None = None):
        super().__init__()
        self.cfg = cfg or VAEConfig()
        self.encoder, self.decoder = Encoder(self.cfg), Decoder(self.cfg)

    def _fold(self, x: torch.Tensor, channels: int, name: str, check_hw: bool):
        if x.dim() not in (4, 5) or x.shape[1] != channels:
            raise ValueError(f"{name} must be (B, {channels}, H, W) or (B, {channels}, T, H, W), got {tuple(x.shape)}")
        f = self.cfg.downsample_factor
        if check_hw and (x.shape[-1] % f or x.shape[-2] % f):
            raise ValueError(f"{name}'s H and W must be multiples of {f}, got {tuple(x.shape[-2:])}")
        if x.dim() == 4:
            return x, None
        B, C, T, H, W = x.shape
        return x.transpose(1, 2).reshape(B * T, C, H, W), T              # (B*T, C, H, W)

    @staticmethod
    def _unfold(h: torch.Tensor, T: int | None) -> torch.Tensor:
        if T is None:
            return h
        N, C, H, W = h.shape
        return h.reshape(N // T, T, C, H, W).transpose(1, 2)             # (B, C, T, H, W)

    def encode(self, x: torch.Tensor) -> DiagonalGaussian:
        """x: (B, in_ch, H, W) or (B, in_ch, T, H, W) in [-1, 1] -> q(z|x) over (B, c, H/f, W/f) or
        (B, c, T, H/f, W/f)."""
        h, T = self._fold(x, self.cfg.in_channels, "x", check_hw=True)
        return DiagonalGaussian.from_params(self._unfold(self.encoder(h), T))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """z: (B, c, h, w) or (B, c, T, h, w) -> (B, in_ch, h*f, w*f) or (B, in_ch, T, h*f, w*f)."""
        h, T = self._fold(z, self.cfg.latent_channels, "z", check_hw=False)
        return self._unfold(self.decoder(h), T)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None, sample: bool = True):
        """x: (B, C, [T,] H, W) -> (recon of x's shape, posterior); sample=False decodes the mean."""
        posterior = self.encode(x)
        z = posterior.sample(generator) if sample else posterior.mode()
        return self.decode(z), posterior


def frame_difference_mse(x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """mean ((x_hat[t+1] - x_hat[t]) - (x[t+1] - x[t]))^2 over clips (B, C, T >= 2, H, W): the squared change of the
    error from one frame to the next. An error that stays put costs nothing; one that changes - flicker - does."""
    if x_hat.shape != x.shape or x.dim() != 5 or x.shape[2] < 2:
        raise ValueError(f"x_hat and x must be clips of one shape (B, C, T >= 2, H, W), got {tuple(x_hat.shape)} "
                         f"and {tuple(x.shape)}")
    return (x_hat.diff(dim=2) - x.diff(dim=2)).pow(2).mean()


def vae_loss(model: AutoencoderKL, x: torch.Tensor, kl_weight: float = 1e-6,
             generator: torch.Generator | None = None, recon: str = "mse", temporal_weight: float = 0.0):
    """LDM's autoencoder loss without its perceptual and GAN terms: (loss, metrics).

    loss = mean over elements of (x - x_rec)^2 + kl_weight * KL(q || N(0, I)) / (elements of an item),
    i.e. a per-item sum (sum err + kl_weight * KL, LDM's form) divided by the item's element count,
    so kl_weight means what it means in LDM (1e-6 for KL-f4). MSE by default, not LDM's L1: LDM
    pairs L1 with a perceptual and a GAN loss for sharpness; alone, MSE is the Gaussian likelihood
    and exactly what PSNR measures, and on Shapes World it trains much faster (vae-tiny, 800 steps:
    30.7 dB with MSE, 19.6 dB with L1). recon="l1" gives LDM's choice. x: (B, C, [T,] H, W) in
    [-1, 1]. temporal_weight (clips only): plus that times `frame_difference_mse` of the reconstruction, a
    flicker penalty (chapter 06's decoder fine-tune uses the same term). metrics: floats "loss", "rec", "kl"
    (nats per item), "psnr" (dB, of the clamped sampled reconstruction).
    """
    if recon not in ("l1", "mse"):
        raise ValueError(f"recon must be 'l1' or 'mse', got {recon!r}")
    x_rec, posterior = model(x, generator=generator)
    err = (x_rec - x).abs() if recon == "l1" else (x_rec - x).pow(2)
    rec = err.mean()
    kl = posterior.kl()                                                    # (B,)
    loss = rec + kl_weight * kl.mean() / (x.numel() // x.shape[0])
    if temporal_weight:
        loss = loss + temporal_weight * frame_difference_mse(x_rec, x)
    with torch.no_grad():
        p = psnr(x_rec.clamp(-1, 1), x).mean()
    return loss, {"loss": loss.item(), "rec": rec.item(), "kl": kl.mean().item(), "psnr": p.item()}


def latent_scale_factor(latents: torch.Tensor | DiagonalGaussian,
                        generator: torch.Generator | None = None) -> float:
    """LDM's scale factor: 1 / std of ALL latent elements (one number for every channel).

    latents: posterior samples z ~ q(z|x) of a data batch, any shape; or the DiagonalGaussian
    itself, sampled here (with `generator`) as LDM does — the mean alone would miss the
    posterior's own variance. std is torch's default (unbiased), as LDM's `z.flatten().std()`.
    """
    if isinstance(latents, DiagonalGaussian):
        latents = latents.sample(generator)
    if latents.numel() < 2 or bool(latents.min() == latents.max()) or not bool(latents.isfinite().all()):
        raise ValueError(f"latents must hold >= 2 finite, not all equal values to have a std, got shape "
                         f"{tuple(latents.shape)}")
    ### BEGIN SOLUTION  # exercise 6.2: the latent scale factor
    return float(1.0 / latents.detach().double().flatten().std())
    ### END SOLUTION
