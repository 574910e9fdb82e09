"""Causal 3-D convolution with a conv cache, and causal temporal down/upsampling (CogVideoX).

CogVideoX (Yang et al. 2024, arXiv:2408.06072) builds its video VAE from convolutions that
never look into the future: time is padded on the *front only*, by repeating the first frame,
so output frame t depends on input frames <= t. Two consequences it relies on:

* the first frame is encoded on its own (it sees only copies of itself), so a single image is
  a 1-frame video and videos have 1 + s*k frames (s = the temporal stride);
* a long video can be processed in chunks: keep the last input frames of a chunk (the *conv
  cache*) and put them in front of the next chunk instead of padding. Chunked == whole, exactly.

Temporal down/upsampling keeps the first frame apart, mapping 1 + 2k <-> 1 + k frames.
Exercise A.2 is `causal_pad`, the padding step on its own; `CausalConv3d` pads with its own two
lines, so the video VAE (chapter 07) never runs a learner's unfinished answer.
"""
from __future__ import annotations

import torch
import torch.nn as nn


def _triple(v, name: str) -> tuple[int, int, int]:
    t = (v, v, v) if isinstance(v, int) else tuple(v)
    if len(t) != 3 or not all(isinstance(i, int) and i >= 1 for i in t):
        raise ValueError(f"{name} must be a positive int or a (t, h, w) triple of positive ints, got {v!r}")
    return t


def compressed_frames(T: int, factor: int) -> int:
    """Frames after causal temporal compression by `factor`: 1 + s*k -> 1 + k (T must be 1 + factor*k)."""
    if T < 1 or (T - 1) % factor:
        raise ValueError(f"a causal video must have 1 + {factor}*k frames, got T={T}")
    return 1 + (T - 1) // factor


def causal_pad(x: torch.Tensor, time_pad: int, cache: torch.Tensor | None = None) -> torch.Tensor:
    """Put the past in front of x (B, C, T, H, W) along time: (B, C, n + T, H, W).

    cache None (the start of a video): n = time_pad copies of the first frame; else the previous
    chunk's last input frames `cache` (B, C, n, H, W), the true past. Nothing goes behind x.
    """
    if x.dim() != 5:
        raise ValueError(f"x must be (B, C, T, H, W), got {tuple(x.shape)}")
    ### BEGIN SOLUTION  # exercise A.2: causal padding (the first frame repeated, or the cache)
    front = x[:, :, :1].expand(-1, -1, time_pad, -1, -1) if cache is None else cache
    return torch.cat([front, x], dim=2)
    ### END SOLUTION


class CausalConv3d(nn.Module):
    """Conv3d whose output frame t sees input frames <= t (front replicate padding in time).

    Spatial padding is zero padding of k//2 ("same" for odd kernels). With temporal stride s,
    output frame i sees input frames <= i*s, and 1 + s*k input frames give 1 + k output frames.
    """

    def __init__(self, in_ch: int, out_ch: int, kernel_size=(3, 3, 3), stride=1, bias: bool = True):
        super().__init__()
        kt, kh, kw = _triple(kernel_size, "kernel_size")
        self.stride = _triple(stride, "stride")
        self.kernel_size = (kt, kh, kw)
        self.time_pad = kt - 1
        self.in_ch, self.out_ch = in_ch, out_ch
        self.conv = nn.Conv3d(in_ch, out_ch, (kt, kh, kw), stride=self.stride, padding=(0, kh // 2, kw // 2),
                              bias=bias)

    def forward(self, x: torch.Tensor, cache: torch.Tensor | None = None):
        """x: (B, in_ch, T, H, W); cache: None at the start of a video, else the `new_cache` of the
        previous chunk. Returns (y, new_cache): y (B, out_ch, T', H', W'), new_cache (B, in_ch, n, H, W).

        T' = number of complete strided windows in [front padding or cache] + x; for stride 1
        and cache=None, T' = T.
        """
        if x.dim() != 5 or x.shape[1] != self.in_ch:
            raise ValueError(f"x must be (B, {self.in_ch}, T, H, W), got {tuple(x.shape)}")
        if x.shape[2] < 1:
            raise ValueError("x must have at least one frame")
        if cache is not None and (cache.dim() != 5 or cache.shape[:2] != x.shape[:2] or cache.shape[3:] != x.shape[3:]):
            raise ValueError(f"cache must be (B, C, n, H, W) matching x {tuple(x.shape)} except in time, "
                             f"got {tuple(cache.shape)}")
        if cache is None:  # start of the video: repeat the first frame kt-1 times in front (as `causal_pad`)
            front = x[:, :, :1].expand(-1, -1, self.time_pad, -1, -1)
        else:  # a later chunk: the previous chunk's last frames are the true past
            front = cache
        x = torch.cat([front, x], dim=2)  # (B, C, pad + T, H, W)
        kt, st = self.kernel_size[0], self.stride[0]
        n_out = max(0, (x.shape[2] - kt) // st + 1)
        new_cache = x[:, :, n_out * st:].clone()  # the frames the next window starts from
        if n_out == 0:
            return x.new_zeros(x.shape[0], self.out_ch, 0, *self._out_hw(x)), new_cache
        return self.conv(x), new_cache

    def _out_hw(self, x):
        (kh, kw), (sh, sw) = self.kernel_size[1:], self.stride[1:]
        H, W = x.shape[3] + 2 * (kh // 2), x.shape[4] + 2 * (kw // 2)
        return (H - kh) // sh + 1, (W - kw) // sw + 1


class CausalTemporalDownsample(nn.Module):
    """Average frame pairs, keeping the first frame apart: (B, C, 1+2k, H, W) -> (B, C, 1+k, H, W).

    As in CogVideoX's time compression. In chunked use, only the first chunk has the lone first
    frame (odd length); later chunks have even lengths and every frame pair is averaged.
    """

    def forward(self, x: torch.Tensor, first_chunk: bool = True) -> torch.Tensor:
        """x: (B, C, T, H, W), T = 1+2k if first_chunk else 2k -> (B, C, 1+k or k, H, W)."""
        if x.dim() != 5:
            raise ValueError(f"x must be (B, C, T, H, W), got {tuple(x.shape)}")
        T = x.shape[2]
        head, rest = (x[:, :, :1], x[:, :, 1:]) if first_chunk else (x[:, :, :0], x)
        if rest.shape[2] % 2:
            want = "1 + 2k frames (first_chunk=True)" if first_chunk else "an even number of frames"
            raise ValueError(f"x must have {want}, got T={T}")
        B, C, T2, H, W = rest.shape
        pairs = rest.reshape(B, C, T2 // 2, 2, H, W).mean(dim=3)  # (B, C, k, H, W)
        return torch.cat([head, pairs], dim=2)


class CausalTemporalUpsample(nn.Module):
    """Repeat every frame twice except the first: (B, C, 1+k, H, W) -> (B, C, 1+2k, H, W).

    The inverse bookkeeping of `CausalTemporalDownsample` (nearest-neighbour in time).
    """

    def forward(self, x: torch.Tensor, first_chunk: bool = True) -> torch.Tensor:
        """x: (B, C, 1+k or k, H, W) -> (B, C, 1+2k or 2k, H, W)."""
        if x.dim() != 5:
            raise ValueError(f"x must be (B, C, T, H, W), got {tuple(x.shape)}")
        head, rest = (x[:, :, :1], x[:, :, 1:]) if first_chunk else (x[:, :, :0], x)
        return torch.cat([head, rest.repeat_interleave(2, dim=2)], dim=2)
