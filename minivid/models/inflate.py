"""Inflation: a causal video VAE that starts as a trained image VAE, frame by frame.

Video autoencoders are rarely trained from nothing: CV-VAE (Zhao et al. 2024, arXiv:2405.20279) and Open-Sora-Plan's
causal video VAE start from Stable Diffusion's image VAE, inflating every 2-D convolution to 3-D; I3D (Carreira &
Zisserman 2017, arXiv:1705.07750) named the trick for classifiers. For a *causal* conv the natural inflation puts
the 2-D kernel on the tap that reads the current frame and zeros on the taps that read the past ("tail" init):

    w3d[:, :, kt - 1] = w2d,   w3d[:, :, :kt - 1] = 0        (CausalConv3d pads the past in front: tap kt-1 is "now")

Everything else maps one to one (norms, 1x1 skips, the strided and upsampling convs), and the temporal resamplers
have no weights. So the inflated model encodes the first frame exactly as the image VAE does (it stands alone),
and a still clip exactly as the image VAE encodes each frame (averaging equal frames changes nothing); what it
must learn is the rest of time - how four moving frames share one latent frame. Spatial detail, the slow part
to learn, it has from the start.

    image_vae = pretrained("ch06.vae", "full").vae          # chapter 06's KL image autoencoder (vae-tiny)
    video_vae = inflate(image_vae)                          # CausalVideoVAE with the same widths
"""
from __future__ import annotations

import torch
from torch import nn

from minivid.models.unet2d import Downsample, Upsample
from minivid.models.vae import AutoencoderKL, VAEResBlock
from minivid.models.video_vae import (
    CachedCausalConv,
    CausalResBlock,
    CausalVideoVAE,
    Down,
    FrameGroupNorm,
    Up,
    VideoVAEConfig,
)


def inflated_config(image: AutoencoderKL, **overrides) -> VideoVAEConfig:
    """The causal video VAE config with the image VAE's widths (channels, levels, blocks, latent channels)."""
    c = image.cfg
    return VideoVAEConfig(in_channels=c.in_channels, channels=c.channels, channel_mult=tuple(c.channel_mult),
                          num_res_blocks=c.num_res_blocks, latent_channels=c.latent_channels, groups=c.groups,
                          **overrides)


def _tail(conv3d: nn.Conv3d, conv2d: nn.Conv2d) -> None:
    """conv3d's kernel: conv2d's on the last (current-frame) tap, zeros on the past ones; the same bias."""
    w = torch.zeros_like(conv3d.weight)                              # (out, in, kt, kh, kw)
    w[:, :, -1] = conv2d.weight
    conv3d.weight.copy_(w)
    if conv2d.bias is not None:
        conv3d.bias.copy_(conv2d.bias)


def _copy(video: nn.Module, image: nn.Module) -> None:
    """Copy one image-VAE layer into its causal counterpart (raises on a layer that has none)."""
    if isinstance(video, CachedCausalConv) and isinstance(image, nn.Conv2d):
        _tail(video.conv.conv, image)
    elif isinstance(video, CausalResBlock) and isinstance(image, VAEResBlock):
        for name in ("norm1", "norm2"):
            getattr(video, name).load_state_dict(getattr(image, name).state_dict())
        _tail(video.conv1.conv.conv, image.conv1)
        _tail(video.conv2.conv.conv, image.conv2)
        if isinstance(image.skip, nn.Conv2d):
            video.skip.weight.copy_(image.skip.weight[:, :, None])    # 1x1 -> 1x1x1
            video.skip.bias.copy_(image.skip.bias)
    elif (isinstance(video, Down) and isinstance(image, Downsample)) or (isinstance(video, Up) and
                                                                          isinstance(image, Upsample)):
        video.conv.load_state_dict(image.conv.state_dict())         # per-frame 2-D convs already
    elif isinstance(video, FrameGroupNorm) and type(image) is nn.GroupNorm:
        video.load_state_dict(image.state_dict())
    elif not (isinstance(video, nn.SiLU) and isinstance(image, nn.SiLU)):
        raise TypeError(f"no inflation from {type(image).__name__} to {type(video).__name__}")


@torch.no_grad()
def inflate(image: AutoencoderKL, **overrides) -> CausalVideoVAE:
    """A `CausalVideoVAE` (4x in time, the image VAE's 4x in space) whose every conv is the image VAE's, inflated
    with the tail init: the first frame, and every frame of a still clip, encode and decode as the image VAE's."""
    video = CausalVideoVAE(inflated_config(image, **overrides))
    pairs = ((video.encoder.layers, [image.encoder.conv_in, *image.encoder.body]),
             (video.decoder.layers, list(image.decoder.body)))
    for vids, imgs in pairs:
        if len(vids) != len(imgs):
            raise ValueError(f"the image VAE has {len(imgs)} layers where the video VAE has {len(vids)}")
        for v, i in zip(vids, imgs):
            _copy(v, i)
    return video


__all__ = ["inflated_config", "inflate"]
