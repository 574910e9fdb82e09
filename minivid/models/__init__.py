"""Denoising networks: one model per file, each with a config dataclass and named presets.

blocks.py (U-Net parts and skeleton) and temporal.py (temporal layers) are shared by the U-Nets.
"""
from minivid.models.dit import ATTENTION_KINDS, DIT_PRESETS, DiT, DiTConfig, dit_config
from minivid.models.mlp import MLP_PRESETS, DiffusionMLP, MLPConfig
from minivid.models.temporal import Pseudo3DConv, SpaceTimeConv, TemporalAttention, temporal_attention_mask
from minivid.models.unet2d import UNET2D_PRESETS, UNet2D, UNet2DConfig, unet2d_config
from minivid.models.unet3d import UNET3D_PRESETS, UNet3D, UNet3DConfig, unet3d_config
from minivid.models.vae import (
           VAE_PRESETS,
           AutoencoderKL,
           DiagonalGaussian,
           VAEConfig,
           latent_scale_factor,
           vae_config,
           vae_loss,
)
from minivid.models.video_vae import VIDEO_VAE_PRESETS, CausalVideoVAE, VideoVAEConfig, latent_frames, video_vae_config

__all__ = ["MLP_PRESETS", "DiffusionMLP", "MLPConfig", "UNET2D_PRESETS", "UNet2D", "UNet2DConfig", "unet2d_config",
           "UNET3D_PRESETS", "UNet3D", "UNet3DConfig", "unet3d_config", "SpaceTimeConv", "TemporalAttention",
           "temporal_attention_mask", "Pseudo3DConv", "ATTENTION_KINDS", "DIT_PRESETS", "DiT", "DiTConfig",
           "dit_config", "VAE_PRESETS", "AutoencoderKL", "DiagonalGaussian", "VAEConfig", "latent_scale_factor",
           "vae_config", "vae_loss", "VIDEO_VAE_PRESETS", "CausalVideoVAE", "VideoVAEConfig", "latent_frames",
           "video_vae_config"]
