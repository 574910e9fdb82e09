"""Chapter 03 exercises (Video Diffusion Models): checkers shared by the notebook and the tests, hints,
known mistakes.

3.1 the factorised space-time conv, 3.2 the temporal-attention reshape and 3.3 its image mask live in
`minivid/models/temporal.py`; 3.4 the exact flow field in `minivid/data/render.py` (it is chapter 03's
motion channels, never called by the renderer itself). Each checker runs the learner's layer with every
weight random (no zero-init shortcut) in float64 against a reference written another way: per frame and
per pixel loops, `factorized_conv3d_reference`, closed forms, the velocities the world drew. On failure
it names the usual mistake (a transposed reshape, images that mix frames, an inverted mask, a flow not in
units of the fast speed). A pass prints one line and returns True; a failure raises AssertionError.
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from minivid.exercises.base import Mistake, call, failed, passed


def _randomize(module, seed: int = 1, scale: float = 0.3):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return module


# ----------------------------------------------------------------------------- 3.1 factorised conv

@torch.no_grad()
def check_space_time_conv(layer=None) -> bool:
    """Exercise 3.1: `SpaceTimeConv(cin, cout, "factorized")(x, image)`: (1,3,3) per frame, then (3,1,1)
    across frames - except for image items, which get the per-frame conv only."""
    from minivid.models.temporal import SpaceTimeConv
    from minivid.ops import factorized_conv3d_reference
    where = "minivid/models/temporal.py (SpaceTimeConv.forward)"
    torch.manual_seed(0)
    conv = layer if layer is not None else _randomize(SpaceTimeConv(3, 5, "factorized")).double()
    x = torch.randn(2, 3, 5, 7, 6, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    c = conv.conv
    ref = factorized_conv3d_reference(x, c.spatial.weight, c.spatial.bias, c.temporal.weight, c.temporal.bias)
    eye = torch.zeros_like(c.temporal.weight)
    eye[torch.arange(5), torch.arange(5), 1] = 1
    ref_img = factorized_conv3d_reference(x, c.spatial.weight, c.spatial.bias, eye, None)
    cases = [("clips (image=None)", None, ref), ("clips (image all False)", torch.tensor([False, False]), ref),
             ("an image item and a clip", torch.tensor([True, False]), torch.stack([ref_img[0], ref[1]])),
             ("two image items", torch.tensor([True, True]), ref_img)]
    for name, image, want in cases:
        got = call("3.1", where, conv, x, image)
        if tuple(got.shape) != tuple(want.shape):
            raise failed("3.1", "factorised conv", f"{name}: output {tuple(got.shape)}, expected {tuple(want.shape)}")
        err = float((got - want).abs().max())
        if err > 1e-10:
            if want is not ref_img and float((got - ref_img).abs().max()) < 1e-10:
                hint = "only the per-frame (1,3,3) conv ran: apply the temporal (3,1,1) conv to its output (clips)"
            elif want is not ref and float((got - ref).abs().max()) < 1e-10:
                hint = ("image items went through the temporal conv too: keep their per-frame output "
                        "(torch.where on image shaped (B, 1, 1, 1, 1)), so independent images never mix")
            else:
                hint = "spatial first (self.conv.spatial), then temporal (self.conv.temporal)"
            raise failed("3.1", "factorised conv", f"{name}: differs from the reference by {err:.3g}", hint)
    return passed("3.1", "factorised conv")


# ----------------------------------------------------------------------------- 3.2 temporal reshape

@torch.no_grad()
def naive_temporal_attention(ta, x: torch.Tensor, T: int) -> torch.Tensor:
    """TemporalAttention one pixel at a time: x (B*T, C, H, W) -> (B*T, C, H, W), float64 loops."""
    from minivid.ops import naive_attention
    N, C, H, W = x.shape
    B, heads = N // T, ta.heads
    bias = ta.rel_pos(T, T)                                                       # (heads, T, T)
    xv = x.reshape(B, T, C, H, W)
    out = torch.empty_like(xv)
    for b in range(B):
        for i in range(H):
            for j in range(W):
                seq = xv[b, :, :, i, j]                                           # (T, C): one pixel across frames
                q, k, v = ta.qkv(ta.norm(seq)).chunk(3, -1)
                split = lambda z: z.reshape(T, heads, C // heads).transpose(0, 1)[None]  # noqa: E731
                a = naive_attention(split(q), split(k), split(v), bias=bias[None])[0]
                out[b, :, :, i, j] = seq + ta.proj(a.transpose(0, 1).reshape(T, C))
    return out.reshape(N, C, H, W)


def check_temporal_reshape(layer=None) -> bool:
    """Exercise 3.2: the reshape (B*T, C, H, W) -> (B*H*W, T, C) that makes every pixel position a sequence of
    T frames: `pixel_sequences(x, T)` where the package has it, else inside `TemporalAttention.forward`."""
    from minivid.models import temporal
    B, T, C, H, W = 2, 5, 8, 3, 4
    x = torch.randn(B * T, C, H, W, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    hint = ("view x as (B, T, C, H, W), move H and W next to B and T last but one: permute(0, 3, 4, 1, 2) -> "
            "(B, H, W, T, C), then reshape to (B*H*W, T, C). A reshape alone (no permute) mixes frames, channels "
            "and pixels")
    fn = layer if callable(layer) and not isinstance(layer, torch.nn.Module) else getattr(temporal, "pixel_sequences",
                                                                                             None)
    if fn is not None:
        got = call("3.2", "minivid/models/temporal.py (pixel_sequences)", fn, x, T)
        want = torch.empty(B * H * W, T, C, dtype=torch.float64)
        for b in range(B):
            for i in range(H):
                for j in range(W):
                    for t in range(T):
                        want[(b * H + i) * W + j, t] = x[b * T + t, :, i, j]   # pixel (b, i, j) at frame t
        if tuple(got.shape) != tuple(want.shape) or not torch.equal(got, want):
            raise failed("3.2", "temporal attention reshape", f"got shape {tuple(got.shape)}, expected "
                         f"{tuple(want.shape)} with row (b*H + i)*W + j holding pixel (i, j) of item b at every frame",
                         hint)
        return passed("3.2", "temporal attention reshape")
    torch.manual_seed(0)
    ta = layer if layer is not None else _randomize(temporal.TemporalAttention("ta", 8, 4, 8, 16)).double()
    with torch.no_grad():
        got = call("3.2", "minivid/models/temporal.py (TemporalAttention.forward)", ta, x, num_frames=T)
    err = float((got - naive_temporal_attention(ta, x, T)).abs().max())
    if err > 1e-10:
        raise failed("3.2", "temporal attention reshape", f"differs from the per-pixel reference by {err:.3g}", hint)
    return passed("3.2", "temporal attention reshape")


# ----------------------------------------------------------------------------- 3.3 image mask

def check_temporal_mask(fn: Callable | None = None) -> bool:
    """Exercise 3.3: `temporal_attention_mask(image, T)` -> (B, T, T) bool: all True for a clip, the identity
    for an image item."""
    if fn is None:
        from minivid.models.temporal import temporal_attention_mask as fn
    where = "minivid/models/temporal.py (temporal_attention_mask)"
    image = torch.tensor([True, False, True, False])
    m = call("3.3", where, fn, image, 4)
    if m is None or tuple(m.shape) != (4, 4, 4) or m.dtype != torch.bool:
        raise failed("3.3", "image mask", f"expected a (4, 4, 4) bool mask, got "
                     f"{None if m is None else (tuple(m.shape), m.dtype)}")
    eye, full = torch.eye(4, dtype=torch.bool), torch.ones(4, 4, dtype=torch.bool)
    for b, is_img in enumerate(image.tolist()):
        want = eye if is_img else full
        if not torch.equal(m[b], want):
            inverted = torch.equal(m[b], full if is_img else eye)
            raise failed("3.3", "image mask", f"item {b} ({'image' if is_img else 'clip'}) got "
                         f"{m[b].int().tolist()}, expected {want.int().tolist()}",
                         "clips and images are swapped: image=True means T independent images (identity)" if inverted
                         else "True = may attend; every frame of a clip sees every frame")
    if fn(None, 4) is not None:
        raise failed("3.3", "image mask", "image=None must return None (no mask: every item is a clip)")
    return passed("3.3", "image mask")


# ----------------------------------------------------------------------------- 3.4 flow field

def check_flow_field(fn: Callable | None = None) -> bool:
    """Exercise 3.4: `flow_field(x, direction, speed, world)` -> (N, 2, T, S, S): the drawn velocity, in units
    of the fast speed, weighted by each pixel's coverage; zero on the background and for still images."""
    from minivid.data import WorldConfig, render, sample_params
    from minivid.utils import make_generator
    if fn is None:
        from minivid.data.render import flow_field as fn
    where = "minivid/data/render.py (flow_field)"
    world = WorldConfig(size=16, frames=6)
    p = sample_params(24, "train", "video", world, make_generator(5))
    x = render(p, world, 6)                                                       # (N, 3, T, S, S)
    got = call("3.4", where, fn, x, p["direction"], p["speed"], world)
    if tuple(got.shape) != (24, 2, 6, 16, 16):
        raise failed("3.4", "flow field", f"expected (24, 2, 6, 16, 16), got {tuple(got.shape)}")
    unit = world.speed_fast * world.speed_scale(6)
    vel = torch.stack([p["vx"], p["vy"]], 1).double() / unit                     # (N, 2): what the world drew
    cov = ((x.double() + 1) / 2).amax(1).clamp(0, 1)                              # (N, T, S, S)
    want = cov[:, None] * vel[:, :, None, None, None]
    err = float((got.double() - want).abs().max())
    if err > 1e-5:
        hints = []
        if float((got.double() - want * unit).abs().max()) < 1e-5:
            hints.append("the flow is in frame units per frame: divide by the fast speed (world.speed_fast * "
                         "world.speed_scale(frames)) so values stay in [-1, 1]")
        if float(got.double().abs().amax(1)[cov < 1e-6].max()) > 0:
            hints.append("the background moved: weight each pixel by its coverage (0 off the object)")
        if not hints:
            hints.append("coverage = the brightest channel of (x + 1) / 2 (every colour has value 1 on black); "
                         "flow = coverage * velocity / fast speed")
        raise failed("3.4", "flow field", f"differs from the drawn velocity times coverage by {err:.3g}", *hints)
    still = x[:, :, :1].expand_as(x)
    minus = torch.full((24,), -1, dtype=torch.long)
    if float(call("3.4", where, fn, still, minus, minus, world).abs().max()) != 0:
        raise failed("3.4", "flow field", "still images (direction = speed = -1) must have zero flow",
                     "velocity() of direction -1 is zero: use it, do not index a table with -1")
    return passed("3.4", "flow field")


CHECKS = {"3.1": check_space_time_conv, "3.2": check_temporal_reshape, "3.3": check_temporal_mask,
          "3.4": check_flow_field}

HINTS = {
    "3.1": ["A factorised conv is two convs: self.conv.spatial, a (1,3,3) conv on each frame, then "
            "self.conv.temporal, a (3,1,1) conv across frames at each pixel.",
            "Image items (image[b] True) are T independent pictures: they must keep the spatial output, "
            "without the temporal conv, so their frames never mix.",
            "y = spatial(x); yt = temporal(y); return torch.where(image[:, None, None, None, None], y, yt) "
            "(and just yt when image is None)."],
    "3.2": ["Attention runs over the middle axis of (batch, sequence, channels): here the sequence is the T "
            "frames of ONE pixel, so the batch is B*H*W.",
            "x is (B*T, C, H, W): view it as (B, T, C, H, W), then move H and W next to B.",
            "x.reshape(B, T, C, H, W).permute(0, 3, 4, 1, 2).reshape(B * H * W, T, C)"],
    "3.3": ["True means 'may attend'. A clip's frames all see each other; an image item's frame i sees only "
            "frame i.",
            "Start from torch.eye(T) (B broadcast) and open it fully for the clips: eye | ~image[:, None, None]."],
    "3.4": ["Every pixel of the object moves with the clip's velocity; the background stands still. velocity() "
            "gives (vx, vy) per clip in frame units per frame.",
            "Divide by the fast speed (world.speed_fast * world.speed_scale(frames)), so the flow stays in "
            "[-1, 1]; weight each pixel by its coverage, the brightest channel of (x + 1) / 2.",
            "return coverage (N, 1, T, S, S) * v[:, :, None, None, None] with v (N, 2)."],
}

MISTAKES = [
    Mistake("3.1", "the temporal conv forgotten (spatial only)", "yt = self.conv.temporal(y)", "yt = y"),
    Mistake("3.1", "image items sent through the temporal conv too",
            "y = yt if image is None else torch.where(image[:, None, None, None, None], y, yt)", "y = yt"),
    Mistake("3.2", "a transposed reshape (frames and channels swapped)", ".permute(0, 3, 4, 1, 2)",
            ".permute(0, 3, 4, 2, 1)"),
    Mistake("3.2", "a reshape without the permute", "x.reshape(B, T, C, H, W).permute(0, 3, 4, 1, 2).reshape(",
            "x.reshape("),
    Mistake("3.3", "clips and images swapped", "eye | ~image.bool()[:, None, None]",
            "eye | image.bool()[:, None, None]"),
    Mistake("3.4", "the velocity not divided by the fast speed", "/ unit", ""),
    Mistake("3.4", "the background moves too (no coverage weight)", "return cov * v[:, :, None, None, None]",
            "return v[:, :, None, None, None].expand(-1, -1, *cov.shape[2:]).clone()"),
]

__all__ = ["check_space_time_conv", "check_temporal_reshape", "check_temporal_mask", "check_flow_field",
           "naive_temporal_attention", "CHECKS", "HINTS", "MISTAKES"]
