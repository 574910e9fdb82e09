"""The judge: scores generated Shapes World images and clips against the prompts they came from.

Independent of every generative model and free of learned weights: it reads colour, shape,
size and motion analytically (see `minivid.eval.measure`), and adds the video measures of
the field - temporal consistency and flicker - and judge features for a Fréchet distance
(the FID/FVD analogue of this world, arXiv:1706.08500, arXiv:1812.01717).
"""
from __future__ import annotations

import dataclasses
import math

import torch

from minivid.data.world import WorldConfig
from minivid.eval.frechet import frechet_distance
from minivid.eval.measure import fit_motion, measure_frames, motion_compensated_change

FRAME_KEYS = ("color", "shape", "size", "color_conf", "shape_conf", "size_conf", "valid", "cx", "cy")


class Judge:
    """Analytic judge of Shapes World samples.

    size: expected frame side (None accepts any H = W in 8..64); world: the geometry to read
    (defaults to minivid.data.WorldConfig()); chunk: frames measured at once (memory bound).
    """

    def __init__(self, size: int | None = None, world: WorldConfig | None = None, chunk: int = 1024):
        self.size = size
        self.world = world or WorldConfig()
        self.chunk = chunk
        self._last = None  # (input tensor, its version counter, readings): score + features share one pass

    # ------------------------------------------------------------------ input
    def _check(self, x) -> torch.Tensor:
        x = torch.as_tensor(x)
        if x.dim() not in (4, 5) or x.shape[1] != 3:
            raise ValueError(f"x must be images (B, 3, H, W) or clips (B, 3, T, H, W), got shape {tuple(x.shape)}")
        h, w = x.shape[-2:]
        if h != w or not 8 <= h <= 64:
            raise ValueError(f"x frames must be square with H = W in 8..64, got H={h}, W={w}")
        if self.size is not None and h != self.size:
            raise ValueError(f"this Judge expects {self.size}x{self.size} frames, got {h}x{w}")
        if x.dim() == 5 and not 1 <= x.shape[2] <= 32:
            raise ValueError(f"clip length T must be in 1..32, got T={x.shape[2]}")
        if not x.is_floating_point():
            raise ValueError(f"x must be a float tensor in [-1, 1], got dtype {x.dtype} (uint8 frames: "
                             "minivid.data.from_uint8)")
        if not torch.isfinite(x).all():
            raise ValueError("x contains NaN or inf")
        return x.detach().float()

    def _world(self, x: torch.Tensor) -> WorldConfig:
        frames = x.shape[2] if x.dim() == 5 else 1
        return dataclasses.replace(self.world, size=x.shape[-1], frames=frames)

    def _readings(self, x) -> dict:
        """Check x and measure it, reusing the last result when x is the very same, unmodified tensor."""
        last = self._last
        if last is not None and last[0] is x and last[1] == getattr(x, "_version", None):
            return last[2]
        m = self._measure(self._check(x))
        if torch.is_tensor(x):
            self._last = (x, x._version, m)  # holding x keeps its identity from being reused
        return m

    @torch.no_grad()
    def _measure(self, x: torch.Tensor) -> dict:
        """All readings of a checked batch: per-frame (B, T, ...) plus clip-level (B,)."""
        video = x.dim() == 5
        b, s = x.shape[0], x.shape[-1]
        t = x.shape[2] if video else 1
        world = self._world(x)
        frames = x.permute(0, 2, 1, 3, 4).reshape(b * t, 3, s, s) if video else x
        parts = [measure_frames(frames[i:i + self.chunk], world) for i in range(0, b * t, self.chunk)]
        per = {k: torch.cat([p[k] for p in parts]).view(b, t, *parts[0][k].shape[1:]) for k in parts[0]}
        out = {"video": video, "frames": per, "T": t}
        for k in ("color", "shape", "size"):
            out[k] = per[k].mode(1).values  # majority over frames (the frame itself for images)
        for k in ("color_conf", "shape_conf", "size_conf"):
            out[k] = per[k].mean(1)
        out["valid"] = per["valid"].all(1)
        if video:
            out.update(fit_motion(per["cx"], per["cy"], world))
            agree = per["area"] > 0.3 * math.pi * world.radius_small**2
            for k in ("color", "shape", "size"):
                agree &= per[k] == out[k][:, None]
            out["consistency"] = agree.float().mean(1)
            if t > 1:
                out["flicker"] = motion_compensated_change(x, per["cx"], per["cy"]).mean(1)
            else:
                out["flicker"] = torch.zeros(b)
        else:
            neg = torch.full((b,), -1, dtype=torch.long)
            out.update(direction=neg, speed=neg.clone(), motion_conf=torch.zeros(b))
        # measured on x's device (a GPU batch is read on the GPU); the readings are small: CPU
        out["frames"] = {k: v.cpu() for k, v in per.items()}
        return {k: v.cpu() if torch.is_tensor(v) else v for k, v in out.items()}

    # ------------------------------------------------------------------ API
    def predict(self, x) -> dict:
        """Per-sample predictions for x (B, 3, H, W) or (B, 3, T, H, W) in [-1, 1] (clamped).

        Returns (B,) tensors color, shape, size, direction, speed (long; direction = speed = -1
        for images), color_conf, shape_conf, size_conf, motion_conf (float in [0, 1]) and valid
        (bool: exactly one clean object read with confidence, in every frame). For clips also
        frame_color, frame_shape, frame_size, frame_valid (B, T), centroid (B, T, 2),
        velocity (B, 2) in frame units per frame, consistency and flicker (B,).
        """
        m = self._readings(x)
        keys = ("color", "shape", "size", "direction", "speed", "color_conf", "shape_conf", "size_conf",
                "motion_conf", "valid")
        out = {k: m[k] for k in keys}
        if m["video"]:
            per = m["frames"]
            out.update(frame_color=per["color"], frame_shape=per["shape"], frame_size=per["size"],
                       frame_valid=per["valid"], centroid=torch.stack([per["cx"], per["cy"]], -1),
                       velocity=torch.stack([m["vx"], m["vy"]], -1), consistency=m["consistency"],
                       flicker=m["flicker"])
        return {k: v.clone() for k, v in out.items()}  # callers may edit them; the cache may not change

    def score(self, x, labels: dict | None = None) -> dict:
        """Aggregate scores of a batch, with per-sample arrays for plotting.

        labels: {attribute: (B,) long} as produced by minivid.data (direction -1 = image /
        ignore). Returns floats color_acc, shape_acc, size_acc (with labels), motion_acc and
        speed_acc (clips whose label direction >= 0), motion_axis_acc (moved along the asked axis,
        horizontal or vertical, either way) and motion_sense_acc (of those, the asked way), validity
        (fraction of samples valid in every frame), and for clips frame_validity,
        temporal_consistency, flicker; plus
        "per_sample": {name: (B,) tensor}.
        """
        m = self._readings(x)
        per_sample = {"valid": m["valid"].clone()}
        out: dict = {}
        if labels is not None:
            for k in ("color", "shape", "size"):
                lab = torch.as_tensor(labels[k]).long().cpu()
                if lab.shape != m[k].shape:
                    raise ValueError(f"labels[{k!r}] must have shape {tuple(m[k].shape)}, got {tuple(lab.shape)}")
                per_sample[f"{k}_correct"] = m[k] == lab
                out[f"{k}_acc"] = per_sample[f"{k}_correct"].float().mean().item()
            if m["video"] and m["T"] > 1 and "direction" in labels:
                lab = torch.as_tensor(labels["direction"]).long().cpu()
                use = lab >= 0
                if use.any():
                    per_sample["motion_correct"] = m["direction"] == lab
                    out["motion_acc"] = per_sample["motion_correct"][use].float().mean().item()
                    # direction = axis (left/right: 0, up/down: 1) and sense along it: a clip moving the
                    # opposite way has the right axis and the wrong sense
                    axis_ok = (m["direction"] // 2 == lab // 2) & use
                    out["motion_axis_acc"] = axis_ok[use].float().mean().item()
                    if axis_ok.any():
                        out["motion_sense_acc"] = per_sample["motion_correct"][axis_ok].float().mean().item()
                    if "speed" in labels:
                        per_sample["speed_correct"] = m["speed"] == torch.as_tensor(labels["speed"]).long().cpu()
                        out["speed_acc"] = per_sample["speed_correct"][use].float().mean().item()
        out["validity"] = m["valid"].float().mean().item()
        if m["video"]:
            out["frame_validity"] = m["frames"]["valid"].float().mean().item()
            out["temporal_consistency"] = m["consistency"].mean().item()
            out["flicker"] = m["flicker"].mean().item()
            per_sample.update(consistency=m["consistency"].clone(), flicker=m["flicker"].clone())
            if m["T"] > 1:
                plausible = self.plausible_motion(m, self._world(x))
                per_sample["motion_plausible"] = plausible
                out["motion_plausible"] = plausible.float().mean().item()
                out["valid_motion_plausible"] = (plausible & m["valid"]).float().mean().item()
        out["per_sample"] = per_sample
        return out

    @staticmethod
    def plausible_motion(m: dict, world) -> torch.Tensor:
        """(B,) bool, no labels needed: the object's centroid moves along a straight line (motion confidence
        >= 0.5) at a speed the world has (within half the slow and 1.5x the fast speed).

        A judgement of the motion only: whether every frame is also one clean object is `valid`, reported on its
        own (`score` gives both and their conjunction, "valid_motion_plausible").
        """
        scale = world.speed_scale(m["T"])
        along = torch.stack([m["vx"].abs(), m["vy"].abs()], -1).max(-1).values
        in_range = (along >= 0.5 * world.speed_slow * scale) & (along <= 1.5 * world.speed_fast * scale)
        return (m["motion_conf"] >= 0.5) & in_range

    def features(self, x) -> torch.Tensor:
        """Judge features for the Fréchet distance: (B, 17) for images, (B, 38) for clips.

        Per frame: mean chromaticity (3), saturation and saturation-weighted hue cos/sin (3),
        area in big-object units, rms extents in x and y per sqrt(area) (2), centroid (2),
        background level, mask softness, colour spread (1 each), the 3 template errors
        (clamped to 2). Clips: the frame features' mean and std over time, plus total
        displacement (2), trajectory residual and flicker.
        """
        m = self._readings(x)
        per = m["frames"]
        world = self._world(x)
        f = torch.cat([
            per["chroma"], per["sat"][..., None],
            (per["sat"] * torch.cos(torch.deg2rad(per["hue"])))[..., None],
            (per["sat"] * torch.sin(torch.deg2rad(per["hue"])))[..., None],
            (per["area"] / (math.pi * world.radius_big**2))[..., None],
            per["elong_x"].clamp_max(2)[..., None], per["elong_y"].clamp_max(2)[..., None],
            per["cx"][..., None], per["cy"][..., None], per["background"][..., None], per["binary"][..., None],
            per["spread"][..., None], per["err"].clamp(0, 2),
        ], dim=-1)  # (B, T, 17)
        if not m["video"]:
            return f[:, 0]
        t = m["T"]
        std = f.std(1) if t > 1 else torch.zeros_like(f[:, 0])
        motion = torch.stack([m["vx"] * (t - 1), m["vy"] * (t - 1), m["residual"], m["flicker"]], -1)
        return torch.cat([f.mean(1), std, motion], -1)

    def frechet(self, x_real, x_gen) -> float:
        """Fréchet distance between the judge features of two batches of the same modality."""
        return frechet_distance(self.features(x_real), self.features(x_gen))
