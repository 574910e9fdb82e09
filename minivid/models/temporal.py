"""Temporal layers: what turns a per-frame image network into a video network.

Shared by every video model of the course:

* `SpaceTimeConv`: a 3x3 conv for video - factorised (1,3,3) spatial then (3,1,1) temporal (Video
  Diffusion Models, Ho et al. 2022, arXiv:2204.03458), dense 3x3x3, or spatial only. Its temporal part
  starts as the identity.
* `TemporalAttention`: every pixel position attends across the T frames, with a learned relative
  position bias (T5 buckets); zero-initialised output, so it starts as the identity.
* `temporal_attention_mask`: joint image-video training (VDM) - an item that is T independent images
  gets the identity mask, so its frames never see each other.
* `Pseudo3DConv`: a *frozen* 2-D conv of an image model followed by a new temporal conv initialised to
  the identity (Dirac) - Make-A-Video's pseudo-3-D convolution (Singer et al. 2022, arXiv:2209.14792).
* `fold_frames` / `unfold_frames`: (B, C, T, H, W) <-> (B*T, C, H, W).

Every layer here acts on activations with frames folded into the batch, (B*T, C, H, W), is told
`num_frames`, and treats an `image` item (B,) bool as T independent frames.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from minivid.models.blocks import fold_frames, unfold_frames, zero_module
from minivid.ops import FactorizedConv3d, RelativePositionBias, attention

CONV_KINDS = ("factorized", "full", "spatial")


def temporal_attention_mask(image: torch.Tensor | None, T: int) -> torch.Tensor | None:
    """Which frame may attend to which: (B, T, T) bool, True = may attend; None = all (no images).

    image: (B,) bool, True where the item is T independent images. A clip's frames all see each
    other; an image item gets the identity, so frame i sees only frame i.
    """
    if image is None:
        return None
    ### BEGIN SOLUTION  # exercise 3.3: the image-batch mask for temporal attention
    eye = torch.eye(T, dtype=torch.bool, device=image.device)
    return eye | ~image.bool()[:, None, None]                             # (B, T, T)
    ### END SOLUTION


class SpaceTimeConv(nn.Module):
    """A 3x3 conv for video, per `kind`: "factorized" (1,3,3) then (3,1,1) | "full" 3x3x3 | "spatial" (1,3,3).

    For image items the temporal part is left out ("full": only the kernel's centre time slice),
    so independent images never mix.
    """

    def __init__(self, cin: int, cout: int, kind: str = "factorized"):
        super().__init__()
        if kind not in CONV_KINDS:
            raise ValueError(f"kind must be one of {CONV_KINDS}, got {kind!r}")
        self.kind = kind
        if kind == "full":
            self.conv = nn.Conv3d(cin, cout, 3, padding=1)
        elif kind == "spatial":
            self.conv = nn.Conv3d(cin, cout, (1, 3, 3), padding=(0, 1, 1))
        else:  # the temporal conv starts as the identity: the block begins as a per-frame 2-D conv
            self.conv = FactorizedConv3d(cin, cout, 3, identity_init=True)

    def zero_init(self) -> SpaceTimeConv:
        """Zero the output (a residual branch that starts closed); a factorised conv keeps its identity in time."""
        zero_module(self.conv.spatial if self.kind == "factorized" else self.conv)
        return self

    def forward(self, x: torch.Tensor, image: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B, Cin, T, H, W); image: (B,) bool or None -> (B, Cout, T, H, W)."""
        if self.kind == "full":
            w = self.conv.weight
            y = self.conv(x)
            if image is not None and image.any():
                y2d = F.conv3d(x, w[:, :, 1:2], self.conv.bias, padding=(0, 1, 1))   # centre slice only
                y = torch.where(image[:, None, None, None, None], y2d, y)
            return y
        if self.kind == "spatial":
            return self.conv(x)
        ### BEGIN SOLUTION  # exercise 3.1: the factorized space-time conv (no temporal mixing for images)
        y = self.conv.spatial(x)                                          # per frame: (B, Cout, T, H, W)
        if image is None or not image.all():
            yt = self.conv.temporal(y)                                    # across frames, per pixel
            y = yt if image is None else torch.where(image[:, None, None, None, None], y, yt)
        return y
        ### END SOLUTION


def pixel_sequences(x: torch.Tensor, T: int) -> torch.Tensor:
    """Frames folded into the batch -> one sequence of T frames per pixel: (B*T, C, H, W) -> (B*H*W, T, C).

    The reshape temporal attention starts with (exercise 3.2). `TemporalAttention` does it with its own
    line, so every video model of the course keeps working while the exercise is open.
    """
    N, C, H, W = x.shape
    B = N // T
    ### BEGIN SOLUTION  # exercise 3.2: the temporal attention reshape (every pixel, a sequence of T frames)
    return x.reshape(B, T, C, H, W).permute(0, 3, 4, 1, 2).reshape(B * H * W, T, C)
    ### END SOLUTION


class TemporalAttention(nn.Module):
    """Self-attention across frames at every pixel, with a relative position bias; zero-init output.

    emb_dim: also read the block embedding (timestep + pooled text, (B*T, E)), added to the normalised
    tokens through a zero-initialised projection - so the layer still starts as the identity, and a
    layer inserted into a frozen image model (chapter 04) can learn text-dependent motion.
    global_context: also add each frame's mean token over all pixels (through a zero-initialised projection), so
    every pixel's sequence hears what the whole frame does - a path for one decision shared by the whole clip
    (which way the object moves) when the spatial layers around it are frozen.
    """

    def __init__(self, name: str, channels: int, head_dim: int, buckets: int = 16, max_distance: int = 32,
                 emb_dim: int | None = None, context_dim: int | None = None, global_context: bool = False,
                 aligned: bool = False):
        super().__init__()
        self.name, self.channels, self.aligned = name, channels, aligned
        self.heads = max(1, channels // head_dim)
        self.norm = nn.LayerNorm(channels)                                 # per token = per frame and pixel
        self.qkv = nn.Linear(channels, 3 * channels)
        self.rel_pos = RelativePositionBias(self.heads, buckets, max_distance)
        self.proj = zero_module(nn.Linear(channels, channels))
        self.emb = zero_module(nn.Linear(emb_dim, channels)) if emb_dim else None
        self.text = zero_module(nn.Linear(context_dim, channels)) if context_dim else None     # its own text read
        self.glob = zero_module(nn.Linear(channels, channels)) if global_context else None

    def forward(self, x, num_frames: int, image=None, motion=None, **kw):
        """x: (B*T, C, H, W); image: (B,) bool or None; emb: (B*T, E) (read when built with emb_dim); context:
        (B*T, L, Dc) text tokens and context_mask (B*T, L) bool (read when built with context_dim: their mean over
        the real tokens, through a zero-initialised projection; no real token = no text); motion: (B, 2) the
        clip's displacement per frame (x, y) in grid_sample's units (read when built `aligned`: the frames attend
        along that straight path instead of at one pixel, `along_path`) -> x's shape."""
        if not self.aligned or motion is None:
            return self._attend(x, num_frames, image, **kw)
        moved = along_path(x, motion, num_frames)                         # each frame's content on a common grid
        return x + along_path(self._attend(moved, num_frames, image, **kw) - moved, -motion, num_frames)

    def _attend(self, x, num_frames: int, image=None, emb=None, context=None, context_mask=None, **_):
        N, C, H, W = x.shape
        T, B = num_frames, N // num_frames
        tok = x.reshape(B, T, C, H, W).permute(0, 3, 4, 1, 2).reshape(B * H * W, T, C)   # as pixel_sequences (3.2)
        h = self.norm(tok)
        per_frame = []                                                     # (B*T, C) each: added at every pixel
        if self.emb is not None:
            per_frame.append(self.emb(F.silu(emb)))
        if self.text is not None and context is not None:
            real = (torch.ones(context.shape[:2], dtype=torch.bool, device=x.device) if context_mask is None
                    else context_mask.bool()).to(context.dtype)[..., None]                     # (B*T, L, 1)
            per_frame.append(self.text((context * real).sum(1) / real.sum(1).clamp_min(1)))   # mean real token
        if self.glob is not None:                                          # the frame's mean over its pixels
            per_frame.append(self.glob(h.reshape(B, H * W, T, C).mean(1).reshape(B * T, C)))
        if per_frame:
            h = h + sum(per_frame).reshape(B, 1, T, C).expand(B, H * W, T, C).reshape(B * H * W, T, C)
        q, k, v = self.qkv(h).reshape(B * H * W, T, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        mask = temporal_attention_mask(image, T)                           # (B, T, T) or None
        if mask is not None:
            mask = mask[:, None, None].expand(B, H * W, 1, T, T).reshape(B * H * W, 1, T, T)
        a = attention(q, k, v, bias=self.rel_pos(T, T)[None], mask=mask)   # (B*H*W, heads, T, C/heads)
        out = tok + self.proj(a.transpose(1, 2).reshape(B * H * W, T, C))
        return out.reshape(B, H, W, T, C).permute(0, 3, 4, 1, 2).reshape(N, C, H, W)


def along_path(x: torch.Tensor, motion: torch.Tensor, T: int) -> torch.Tensor:
    """Frames folded into the batch, (B*T, C, H, W), each resampled (bilinear, edges repeated) so that what moves
    at `motion` (B, 2) per frame - (x, y) in grid_sample's units, 2 = the frame's width - stays in place:
    frame t is read at p + (t - (T - 1) / 2) * motion. -motion undoes it (up to resampling). Beyond the paper:
    it lets temporal layers that act at one pixel act along a known straight path instead."""
    t = torch.arange(T, dtype=x.dtype, device=x.device) - (T - 1) / 2
    return shifted(x, -(t[None, :, None] * motion.to(x.dtype)[:, None, :]).reshape(len(x), 2))


def shifted(x: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """Images (N, C, H, W) with their content moved by d (N, 2) - (x, y) in grid_sample's units, 2 = the width -
    each read at p - d (bilinear, edges repeated)."""
    N, C, H, W = x.shape
    ys = (torch.arange(H, dtype=x.dtype, device=x.device) * 2 + 1) / H - 1                # pixel centres
    xs = (torch.arange(W, dtype=x.dtype, device=x.device) * 2 + 1) / W - 1
    grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1)                         # (H, W, 2): (x, y)
    return F.grid_sample(x, grid[None] - d.to(x.dtype).reshape(N, 1, 1, 2), mode="bilinear", padding_mode="border",
                         align_corners=False)


def dirac_temporal_conv(channels: int, kernel: int = 3) -> nn.Conv3d:
    """A temporal conv on (B, C, T, H, W): `kernel` taps in time, 1x1 in space, 'same' padding, initialised
    to the identity. (A (k,1,1) Conv3d is the same map as a Conv1d over every pixel's sequence of frames,
    without the reshapes: the ops appendix measured it fastest.)"""
    conv = nn.Conv3d(channels, channels, (kernel, 1, 1), padding=(kernel // 2, 0, 0))
    ### BEGIN SOLUTION  # exercise 4.2: identity (Dirac) initialisation of a temporal conv
    with torch.no_grad():
        nn.init.dirac_(conv.weight)                # weight[o, i, k, 0, 0] = 1 if o == i and k == centre else 0
        conv.bias.zero_()
    ### END SOLUTION
    return conv


class Pseudo3DConv(nn.Module):
    """Make-A-Video's pseudo-3-D conv: a (frozen) 2-D conv per frame, then a 1-D conv across frames.

    spatial: an existing nn.Conv2d (kept as is: it stays frozen if it was). The temporal conv starts
    as the identity, so at initialisation the layer equals `spatial` applied frame by frame. Like
    `SpaceTimeConv` it maps (B, Cin, T, H, W) -> (B, Cout, T, H, W), so a `ResBlock` can hold either.
    """

    def __init__(self, spatial: nn.Conv2d, kernel: int = 3):
        super().__init__()
        self.spatial = spatial
        self.temporal = dirac_temporal_conv(spatial.out_channels, kernel)

    def zero_init(self) -> Pseudo3DConv:
        zero_module(self.spatial)
        return self

    def forward(self, x: torch.Tensor, image: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B, Cin, T, H, W); image: (B,) bool or None (those items skip the temporal conv) -> (B, Cout, T, H, W)."""
        T = x.shape[2]
        ### BEGIN SOLUTION  # exercise 4.1: the pseudo-3-D conv (spatial per frame, then temporal per pixel)
        h = unfold_frames(self.spatial(fold_frames(x)), T)                 # per frame: (B, C, T, H, W)
        out = self.temporal(h)                                             # across frames, at every pixel
        if image is not None:
            out = torch.where(image.bool()[:, None, None, None, None], h, out)
        return out
        ### END SOLUTION


class ShiftedPseudo3DConv(Pseudo3DConv):
    """A pseudo-3-D conv followed by a depthwise space-time conv (`kernel` frames x 3 x 3 pixels, one filter per
    channel), zero-initialised and added to its output: at initialisation exactly a `Pseudo3DConv`.

    Beyond the paper: in a frozen image model the temporal convs act at each pixel on its own, so a trainable layer
    cannot move a feature to the next pixel in the next frame; this one can, each channel its own way, for
    C * kernel * 9 parameters.
    """

    def __init__(self, spatial: nn.Conv2d, kernel: int = 3):
        super().__init__(spatial, kernel)
        C = spatial.out_channels
        self.shift = zero_module(nn.Conv3d(C, C, (kernel, 3, 3), padding=(kernel // 2, 1, 1), groups=C))

    def forward(self, x: torch.Tensor, image: torch.Tensor | None = None) -> torch.Tensor:
        out = super().forward(x, image)                                    # (B, Cout, T, H, W)
        moved = out + self.shift(out)
        return moved if image is None else torch.where(image.bool()[:, None, None, None, None], out, moved)


__all__ = ["CONV_KINDS", "SpaceTimeConv", "TemporalAttention", "along_path", "shifted", "temporal_attention_mask",
           "pixel_sequences", "Pseudo3DConv", "ShiftedPseudo3DConv", "dirac_temporal_conv", "fold_frames", "unfold_frames"]
