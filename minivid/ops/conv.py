"""Factorized space-time convolution: a spatial (1,k,k) conv, then a temporal (k,1,1) conv.

Video Diffusion Models (Ho et al. 2022, arXiv:2204.03458) factorise their 3-D U-Net over space
and time; Make-A-Video (Singer et al. 2022, arXiv:2209.14792) starts the temporal conv as the
identity, so a pretrained image model that gains temporal layers computes exactly what it
computed before ("pseudo-3D" convolution).

Two forms of the same maths:

* `factorized_conv3d_reference`: the teaching form, the way the papers describe it: fold time
  into the batch and run a Conv2d on every frame, then fold space into the batch and run a
  Conv1d over time. Easy to read; the reshapes cost copies.
* `FactorizedConv3d`: the fast form, two Conv3d with (1,k,k) and (k,1,1) kernels on the
  (B, C, T, H, W) tensor directly: no permute copies. Measured about twice as fast as the
  reference form in the forward pass, and faster than a full k x k x k Conv3d there when
  activations and weights are in `torch.channels_last_3d` (the layout oneDNN computes in);
  forward + backward, about even with the full Conv3d (`python -m minivid bench ops`,
  chapters/appendix_ops.md).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def _check_video(x: torch.Tensor, channels: int, name: str = "x") -> None:
    if not isinstance(x, torch.Tensor) or x.dim() != 5:
        raise ValueError(f"{name} must be a video tensor (B, C, T, H, W), got "
                         f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
    if x.shape[1] != channels:
        raise ValueError(f"{name} must have C={channels} channels in dim 1, got shape {tuple(x.shape)}")


def factorized_conv3d_reference(x, spatial_weight, spatial_bias, temporal_weight, temporal_bias):
    """Conv2d on every frame, then Conv1d over time at every pixel ("same" zero padding).

    x: (B, Cin, T, H, W); spatial_weight: (Cout, Cin, k, k) or (Cout, Cin, 1, k, k);
    temporal_weight: (Cout, Cout, k) or (Cout, Cout, k, 1, 1); biases (Cout,) or None.
    Returns (B, Cout, T, H, W).
    """
    sw = spatial_weight.reshape(spatial_weight.shape[0], spatial_weight.shape[1], *spatial_weight.shape[-2:])
    tw = temporal_weight.reshape(temporal_weight.shape[0], temporal_weight.shape[1], temporal_weight.shape[2])
    _check_video(x, sw.shape[1])
    B, C, T, H, W = x.shape
    frames = x.permute(0, 2, 1, 3, 4).reshape(B * T, C, H, W)  # (B*T, Cin, H, W)
    y = F.conv2d(frames, sw, spatial_bias, padding=(sw.shape[-2] // 2, sw.shape[-1] // 2))
    Co = y.shape[1]
    y = y.reshape(B, T, Co, H, W).permute(0, 3, 4, 2, 1).reshape(B * H * W, Co, T)  # (B*H*W, Cout, T)
    y = F.conv1d(y, tw, temporal_bias, padding=tw.shape[-1] // 2)
    return y.reshape(B, H, W, Co, T).permute(0, 3, 4, 1, 2).contiguous()  # (B, Cout, T, H, W)


class FactorizedConv3d(nn.Module):
    """Spatial Conv3d (1,k,k) then temporal Conv3d (k,1,1), "same" padding, on (B, C, T, H, W).

    identity_init=True makes the temporal conv the identity (centre tap = I, rest 0, bias 0),
    so at initialisation the output equals the spatial conv's output (Make-A-Video). The temporal
    conv maps out_ch -> out_ch, so it is always square.

    Fastest on CPU in channels-last layout: `conv.to(memory_format=torch.channels_last_3d)` and
    inputs `x.contiguous(memory_format=torch.channels_last_3d)`; the output keeps that layout.
    """

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int = 3, identity_init: bool = False):
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd and >= 1 (for 'same' padding), got {kernel_size}")
        k, p = kernel_size, kernel_size // 2
        self.spatial = nn.Conv3d(in_ch, out_ch, (1, k, k), padding=(0, p, p))
        self.temporal = nn.Conv3d(out_ch, out_ch, (k, 1, 1), padding=(p, 0, 0))
        self.in_ch, self.out_ch, self.kernel_size = in_ch, out_ch, k
        if identity_init:
            self.init_temporal_identity()

    @torch.no_grad()
    def init_temporal_identity(self) -> None:
        """Temporal weight = identity at the centre tap, zero elsewhere; bias 0."""
        self.temporal.weight.zero_()
        self.temporal.bias.zero_()
        idx = torch.arange(self.out_ch)
        self.temporal.weight[idx, idx, self.kernel_size // 2, 0, 0] = 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, in_ch, T, H, W) -> (B, out_ch, T, H, W)."""
        _check_video(x, self.in_ch)
        return self.temporal(self.spatial(x))

    def forward_reference(self, x: torch.Tensor) -> torch.Tensor:
        """The same function through the reshape-based teaching form (for tests and benchmarks)."""
        return factorized_conv3d_reference(x, self.spatial.weight, self.spatial.bias,
                                           self.temporal.weight, self.temporal.bias)


def conv3d_flops(x_shape, out_ch: int, kernel: tuple[int, int, int]) -> int:
    """Multiply-add FLOPs (2 per MAC) of a stride-1 'same' Conv3d on x_shape = (B, Cin, T, H, W)."""
    B, C, T, H, W = x_shape
    kt, kh, kw = kernel
    return 2 * B * T * H * W * out_ch * C * kt * kh * kw


def factorized_conv3d_flops(x_shape, out_ch: int, kernel_size: int = 3) -> int:
    """FLOPs of FactorizedConv3d: (1,k,k) in_ch -> out_ch plus (k,1,1) out_ch -> out_ch."""
    B, C, T, H, W = x_shape
    k = kernel_size
    return conv3d_flops(x_shape, out_ch, (1, k, k)) + conv3d_flops((B, out_ch, T, H, W), out_ch, (k, 1, 1))
