"""Helpers shared by the model tests: random weights everywhere (zero- and identity-initialised layers included, so
no layer is trivially the identity), chapter 02's tiny image U-Net so randomised, and stand-in text features."""
import torch

from minivid.models import UNet2D, unet2d_config


def randomize(module, seed=1, scale=0.1, params=None, skip=()):
    """Every parameter (or those in `params`; names containing a `skip` string excepted) drawn N(0, scale^2) from one
    generator seeded `seed`, in the module's parameter order."""
    g = torch.Generator().manual_seed(seed)
    todo = params if params is not None else [p for n, p in module.named_parameters()
                                              if not any(s in n for s in skip)]
    with torch.no_grad():
        for p in todo:
            p.copy_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return module


def tiny_image_model(channels=3, dim=8):
    """A "unet2d-tiny" text-to-image U-Net (`channels` in and out, text features of width `dim`), every weight
    random, in eval mode."""
    torch.manual_seed(0)
    return randomize(UNet2D(unet2d_config("unet2d-tiny", in_channels=channels, out_channels=channels,
                                          context_dim=dim, pooled_dim=dim))).eval()


def text_features(B, L=5, D=8, seed=3):
    """Stand-in text features for a batch of B: tokens (B, L, D), all valid, and a pooled vector (B, D)."""
    g = torch.Generator().manual_seed(seed)
    return {"context": torch.randn(B, L, D, generator=g), "context_mask": torch.ones(B, L, dtype=torch.bool),
            "pooled": torch.randn(B, D, generator=g)}
