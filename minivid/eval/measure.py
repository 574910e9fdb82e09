"""Analytic measurements behind the judge: mask, colour, shape and size per frame, motion per clip.

No learned parameters: the judge reads a frame the way Shapes World draws it.
  * value V = max(r, g, b) is 1 on every object colour and 0 on the black background, so a
    soft mask is a ramp of V (robust to a slightly noisy background);
  * colour: the hue of the object's mean chromaticity (rgb / V), snapped to the nearest of
    the six hues 60 degrees apart;
  * size: the area of the object (all shapes of one size have the same area);
  * shape: analysis by synthesis - render the 3 shape templates of that size at the
    object's centroid with the data renderer and keep the one with the smallest normalised
    squared error (template matching, Brunelli 2009, "Template Matching Techniques");
  * motion: least-squares velocity of the centroid trajectory.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from minivid.data.render import coverage
from minivid.data.world import SHAPES, WorldConfig, centroid_offset

MASK_LO, MASK_HI = 0.25, 0.75  # V below LO is background, above HI is object


def mask_ramp(v: torch.Tensor) -> torch.Tensor:
    """Soft object mask from value (or coverage) v in [0, 1]: a linear ramp from MASK_LO to MASK_HI."""
    return ((v - MASK_LO) / (MASK_HI - MASK_LO)).clamp(0, 1)


def _peak_normalise(v: torch.Tensor) -> torch.Tensor:
    """Divide each (S, S) map of v (N, S, S) by its peak (clamped to [0.5, 1]): a dim object
    reads like a full-value one, and tiny objects (no fully covered pixel) like their templates."""
    return v / v.amax((1, 2), keepdim=True).clamp(0.5, 1)


def _hue_and_color(rgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The judge's colour reading (what `measure_frames` uses): the rule of exercise 0.3, kept apart
    so that the judge never runs a learner's unfinished answer."""
    r, g, b = rgb.unbind(-1)
    hue = torch.rad2deg(torch.atan2(math.sqrt(3) * (g - b), 2 * r - g - b)) % 360
    return hue, torch.round(hue / 60).long() % 6


def hue_to_color(rgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Hue in degrees [0, 360) and nearest Shapes World colour id for rgb (..., 3) in [0, 1].

    Uses the opponent-axis hue atan2(sqrt(3) (g - b), 2r - g - b), which is exact at the six
    primary and secondary colours (0, 60, ..., 300 degrees: red, yellow, green, cyan, blue,
    magenta, the order of minivid.data.COLORS). Returns (hue (...,) float, color (...,) long).
    Exercise 0.3 (the judge reads colours with its own copy of the rule).
    """
    r, g, b = rgb.unbind(-1)
    ### BEGIN SOLUTION  # exercise 0.3: hue -> colour rule
    hue = torch.rad2deg(torch.atan2(math.sqrt(3) * (g - b), 2 * r - g - b)) % 360
    color = torch.round(hue / 60).long() % 6
    ### END SOLUTION
    return hue, color


def saturation(rgb: torch.Tensor) -> torch.Tensor:
    """HSV saturation (max - min) / max of rgb (..., 3) in [0, 1] -> (...,)."""
    mx, mn = rgb.max(-1).values, rgb.min(-1).values
    return (mx - mn) / mx.clamp_min(1e-6)


def measure_frames(frames: torch.Tensor, world: WorldConfig) -> dict:
    """Per-frame readings of N frames (N, 3, S, S) in [-1, 1] (clamped first).

    Returns (N,) tensors: area (frame units^2), cx, cy (centroid), hue, sat, spread (colour
    spread inside the object), background (mean V off the object), binary (mask softness),
    elong_x, elong_y (rms extent of the mask per sqrt(mask area): scale-free), color, shape,
    size (long), err (N, 3) the template errors of the three shapes at the read size,
    err_best, color_conf, shape_conf, size_conf, valid (bool), and chroma (N, 3) the
    object's mean chromaticity.
    """
    n, s = frames.shape[0], frames.shape[-1]
    rgb = (frames.clamp(-1, 1).float() + 1) / 2  # (N, 3, S, S)
    v = rgb.max(1).values  # (N, S, S)
    vn = _peak_normalise(v)
    # the object's support: its core (vn >= 0.5) grown by two pixels; stray specks outside it
    # count as background, not as object
    support = F.max_pool2d((vn >= 0.5).float()[:, None], 5, stride=1, padding=2)[:, 0] > 0
    m = mask_ramp(vn) * support
    mass = m.sum((1, 2)).clamp_min(1e-6)
    off = (~support).float()
    n_off = off.sum((1, 2))
    background = torch.where(n_off > 0, (v * off).sum((1, 2)) / n_off.clamp_min(1), 1.0)
    grid = (torch.arange(s, dtype=torch.float32, device=frames.device) + 0.5) / s
    # centroid from the *linear* value on the support, minus the background level: exact for
    # anti-aliased edges, where the clamped ramp of the mask would bias it
    bg = torch.where(n_off > 0, background, 0.0)  # no background pixel at all: take 0
    wc = (vn - bg[:, None, None]).clamp_min(0) * support
    wmass = wc.sum((1, 2)).clamp_min(1e-6)
    cx = (wc.sum(1) * grid).sum(1) / wmass
    cy = (wc.sum(2) * grid).sum(1) / wmass
    empty = m.sum((1, 2)) < 1e-3
    cx, cy = torch.where(empty, 0.5, cx), torch.where(empty, 0.5, cy)

    # size from area: the shapes are equal-area, small pi r_s^2 and big pi r_b^2
    area = wc.sum((1, 2)) / s**2
    a_small, a_big = math.pi * world.radius_small**2, math.pi * world.radius_big**2
    log_ratio = torch.log(area.clamp_min(1e-6) / math.sqrt(a_small * a_big))
    size = (log_ratio > 0).long()
    size_conf = (log_ratio.abs() / (0.5 * math.log(a_big / a_small))).clamp(0, 1)

    # shape by analysis by synthesis: the 3 templates of that size at the measured centroid
    t_shape = torch.arange(len(SHAPES), device=frames.device).repeat(n)  # (3N,)
    r = world.radius(size).to(frames.device).repeat_interleave(len(SHAPES))
    tcx = cx.double().repeat_interleave(len(SHAPES))
    tcy = cy.double().repeat_interleave(len(SHAPES)) - centroid_offset(t_shape, r)
    tmpl = mask_ramp(_peak_normalise(coverage(t_shape, tcx, tcy, r, s, world.supersample)))
    tmpl = tmpl.view(n, len(SHAPES), s, s)
    err = ((m[:, None] - tmpl) ** 2).sum((2, 3)) / (tmpl**2).sum((2, 3)).clamp_min(1e-6)  # (N, 3)
    two = err.topk(2, dim=1, largest=False)
    shape, err_best = two.indices[:, 0], two.values[:, 0]
    shape_conf = (1 - err_best / two.values[:, 1].clamp_min(1e-6)).clamp(0, 1)

    # colour from the mean chromaticity of the object
    chroma = rgb / v[:, None].clamp_min(1e-3)
    w = m[:, None]
    mean_chroma = (chroma * w).sum((2, 3)) / mass[:, None]  # (N, 3)
    spread = ((chroma - mean_chroma[:, :, None, None]).abs().mean(1) * m).sum((1, 2)) / mass
    hue, color = _hue_and_color(mean_chroma)
    sat = saturation(mean_chroma)
    hue_off = ((hue - 60 * color.float() + 180) % 360 - 180).abs()
    color_conf = (sat * (1 - hue_off / 30)).clamp(0, 1)

    # one clean object: it fits its template, its colour is saturated, close to one of the six
    # hues and uniform across the object, and the rest of the frame is dark
    valid = (~empty) & (err_best < 0.3) & (sat > 0.6) & (hue_off < 20) & (spread < 0.2) & (background < 0.1)
    return dict(
        area=area, cx=cx, cy=cy, hue=hue, sat=sat, spread=spread, background=background,
        color=color, shape=shape, size=size, err=err, err_best=err_best, chroma=mean_chroma,
        color_conf=color_conf, shape_conf=shape_conf, size_conf=size_conf, valid=valid,
        elong_x=((m.sum(1) * (grid - cx[:, None]) ** 2).sum(1) / mass / (mass / s**2)).sqrt(),
        elong_y=((m.sum(2) * (grid - cy[:, None]) ** 2).sum(1) / mass / (mass / s**2)).sqrt(),
        binary=(4 * m * (1 - m)).mean((1, 2)),
    )


def fit_motion(cx: torch.Tensor, cy: torch.Tensor, world: WorldConfig) -> dict:
    """Least-squares linear motion of centroid trajectories cx, cy (B, T) in frame units.

    Returns vx, vy (B,) frame units per frame, residual (B,) rms distance to the line,
    direction (B,) long (left, right, up, down; -1 when T < 2), speed (B,) long (slow, fast;
    -1 when T < 2) and motion_conf (B,) in [0, 1].
    """
    b, t = cx.shape
    if t < 2:
        neg = torch.full((b,), -1, dtype=torch.long, device=cx.device)
        zero = torch.zeros(b, device=cx.device)
        return dict(vx=zero, vy=zero, residual=zero, direction=neg, speed=neg, motion_conf=zero)
    ts = torch.arange(t, dtype=torch.float32, device=cx.device)
    tc = ts - ts.mean()
    vx = ((cx - cx.mean(1, keepdim=True)) * tc).sum(1) / (tc**2).sum()
    vy = ((cy - cy.mean(1, keepdim=True)) * tc).sum(1) / (tc**2).sum()
    fx = cx.mean(1, keepdim=True) + vx[:, None] * tc
    fy = cy.mean(1, keepdim=True) + vy[:, None] * tc
    residual = ((cx - fx) ** 2 + (cy - fy) ** 2).mean(1).sqrt()
    score = torch.stack([-vx, vx, -vy, vy], 1)  # (B, 4) in DIRECTIONS order
    direction = score.argmax(1)
    along = score.max(1).values
    across = torch.where(direction <= 1, vy.abs(), vx.abs())
    scale = world.speed_scale(t)
    threshold = math.sqrt(world.speed_slow * world.speed_fast) * scale
    speed = (along > threshold).long()
    noise = across + residual / (t - 1)
    conf = (1 - noise / along.clamp_min(1e-6)).clamp(0, 1) * (along > 0.25 * world.speed_slow * scale)
    return dict(vx=vx, vy=vy, residual=residual, direction=direction, speed=speed, motion_conf=conf)


def motion_compensated_change(clips: torch.Tensor, cx: torch.Tensor, cy: torch.Tensor) -> torch.Tensor:
    """Mean |frame t+1 - frame t shifted by the centroid displacement|, in [0, 1] units.

    clips (B, 3, T, S, S) in [-1, 1]; cx, cy (B, T) centroids. Returns (B, T-1): the change
    that the object's own translation does not explain (colour, shape, background changes).
    Bilinear shifting, black outside the frame.
    """
    b, _, t, s, _ = clips.shape
    rgb = (clips.clamp(-1, 1).float() + 1) / 2
    prev = rgb[:, :, :-1].permute(0, 2, 1, 3, 4).reshape(b * (t - 1), 3, s, s)
    nxt = rgb[:, :, 1:].permute(0, 2, 1, 3, 4).reshape(b * (t - 1), 3, s, s)
    dx = (cx[:, 1:] - cx[:, :-1]).reshape(-1)
    dy = (cy[:, 1:] - cy[:, :-1]).reshape(-1)
    theta = torch.zeros(b * (t - 1), 2, 3, device=clips.device)
    theta[:, 0, 0] = theta[:, 1, 1] = 1
    theta[:, 0, 2], theta[:, 1, 2] = -2 * dx, -2 * dy  # sample prev at p - d
    grid = F.affine_grid(theta, list(prev.shape), align_corners=False)
    moved = F.grid_sample(prev, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return (nxt - moved).abs().mean((1, 2, 3)).view(b, t - 1)
