"""Denoising networks: one model per file, each with a config dataclass and named presets."""
from minivid.models.mlp import MLP_PRESETS, DiffusionMLP, MLPConfig
from minivid.models.unet2d import UNET2D_PRESETS, UNet2D, UNet2DConfig, unet2d_config
from minivid.models.unet3d import UNET3D_PRESETS, UNet3D, UNet3DConfig, unet3d_config

__all__ = ["MLP_PRESETS", "DiffusionMLP", "MLPConfig", "UNET2D_PRESETS", "UNet2D", "UNet2DConfig", "unet2d_config",
           "UNET3D_PRESETS", "UNet3D", "UNet3DConfig", "unet3d_config"]
