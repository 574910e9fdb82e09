"""Shapes World: the attributes, the geometry, the splits and the random draws.

Everything that *defines* the world lives here (the renderer draws it, the captioner
describes it, the judge measures it). A clip is one object on a black background:
a colour, a shape, a size, and, for video, a direction and a speed of linear motion.

Coordinates are in *frame units*: x to the right, y downward, both in [0, 1] across the
frame, so every length and speed scales with the resolution. A pixel (i, j) of an S x S
frame has its centre at ((j + 0.5) / S, (i + 0.5) / S).

Randomness comes in two flavours that share one mapping `params_from_uniforms`:
  * `sample_params(n, ..., generator=g)`: n draws from a torch.Generator (fast, for
    training loops);
  * `item_uniforms(seed, stream, index)`: a counter-based hash (splitmix64) so item i of a
    dataset depends only on (seed, split, kind, i), never on n or on the order of access.
The held-out combinations follow the compositional splits of CLEVR-style benchmarks
(Johnson et al. 2017, arXiv:1612.06890): attribute values are all seen in training, some
*combinations* never are.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch

COLORS = ("red", "yellow", "green", "cyan", "blue", "magenta")  # hue order: 0, 60, ..., 300 deg
COLOR_RGB = (  # in [0, 1]; every colour has value max(r, g, b) = 1, the background has 0
    (1.0, 0.0, 0.0),
    (1.0, 1.0, 0.0),
    (0.0, 1.0, 0.0),
    (0.0, 1.0, 1.0),
    (0.0, 0.0, 1.0),
    (1.0, 0.0, 1.0),
)
SHAPES = ("circle", "square", "triangle")
SIZES = ("small", "big")
DIRECTIONS = ("left", "right", "up", "down")
SPEEDS = ("slow", "fast")
ATTRIBUTES = ("color", "shape", "size", "direction", "speed")
SPLITS = ("train", "val", "heldout")
KINDS = ("image", "video", "video_text")

# (colour, shape, size) combinations that never appear in "train" or "val" (5 of 36 = 13.9%).
# Each colour but magenta loses one combination, and every shape and size keeps 5 other colours.
HELDOUT_COMBOS = (
    ("red", "square", "big"),
    ("yellow", "triangle", "small"),
    ("green", "circle", "big"),
    ("cyan", "square", "small"),
    ("blue", "triangle", "big"),
)

# Equal-area shapes: a shape of "radius" r has the area of a circle of radius r, so size is area.
SQUARE_HALF = math.sqrt(math.pi) / 2  # square half-side / r      (side^2 = pi r^2)
TRIANGLE_BASE = math.sqrt(2 * math.pi)  # triangle base = height, / r (b^2 / 2 = pi r^2)
HALF_EXTENT = (1.0, SQUARE_HALF, TRIANGLE_BASE / 2)  # bounding-box half-width / r, per shape

N_FIELDS = 11  # uniforms per item: combo, direction, speed, x, y, template, 5 synonym picks


@dataclass(frozen=True)
class WorldConfig:
    """How a Shapes World frame or clip is drawn.

    size: frame side S in pixels (8..64); frames: clip length T (1..32);
    supersample: anti-aliasing sub-samples per pixel side; radii and margin in frame units;
    speeds in frame units per frame (fast must still fit a 16-frame clip: longer clips are
    slowed down by one common factor, see `speed_scale`).
    """

    size: int = 16
    frames: int = 8
    supersample: int = 2
    radius_small: float = 0.12
    radius_big: float = 0.19
    speed_slow: float = 0.016
    speed_fast: float = 0.032
    margin: float = 0.02

    def __post_init__(self):
        check_size(self.size)
        check_frames(self.frames)
        if not 1 <= self.supersample <= 8:
            raise ValueError(f"supersample must be in 1..8, got {self.supersample}")

    def radius(self, size_id: torch.Tensor) -> torch.Tensor:
        """Equal-area radius for size ids (N,) long -> (N,) float64."""
        return torch.where(size_id == 1, self.radius_big, self.radius_small).to(torch.float64)

    def speed_scale(self, frames: int | None = None) -> float:
        """Common slow-down so the fastest, biggest object fits a clip of `frames` frames."""
        t = self.frames if frames is None else frames
        room = 1 - 2 * max(HALF_EXTENT) * self.radius_big - 2 * self.margin
        return min(1.0, room / (self.speed_fast * max(t - 1, 1)))

    def speed(self, speed_id: torch.Tensor, frames: int | None = None) -> torch.Tensor:
        """Speed in frame units per frame for speed ids (N,) -> (N,) float64 (0 where id < 0)."""
        v = torch.where(speed_id == 1, self.speed_fast, self.speed_slow).to(torch.float64)
        return torch.where(speed_id >= 0, v * self.speed_scale(frames), torch.zeros_like(v))

    def key(self) -> dict:
        return asdict(self)


def check_size(size: int) -> int:
    if not isinstance(size, int) or not 8 <= size <= 64:
        raise ValueError(f"size (frame side in pixels) must be an int in 8..64, got {size!r}")
    return size


def check_frames(frames: int) -> int:
    if not isinstance(frames, int) or not 1 <= frames <= 32:
        raise ValueError(f"frames (clip length) must be an int in 1..32, got {frames!r}")
    return frames


def all_combos() -> list[tuple[int, int, int]]:
    """All (colour, shape, size) id triples, colour-major."""
    return [(c, s, z) for c in range(len(COLORS)) for s in range(len(SHAPES)) for z in range(len(SIZES))]


def combos(split: str) -> torch.Tensor:
    """(K, 3) long: the (colour, shape, size) ids a split draws from."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    held = {(COLORS.index(c), SHAPES.index(s), SIZES.index(z)) for c, s, z in HELDOUT_COMBOS}
    keep = [t for t in all_combos() if (t in held) == (split == "heldout")]
    return torch.tensor(keep, dtype=torch.long)


def is_heldout(color: torch.Tensor, shape: torch.Tensor, size: torch.Tensor) -> torch.Tensor:
    """(N,) bool: which (colour, shape, size) triples are held-out combinations."""
    held = combos("heldout")
    trip = torch.stack([color, shape, size], dim=-1)  # (N, 3)
    return (trip[:, None, :] == held[None]).all(-1).any(-1)


def centroid_offset(shape: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """(N,) float64: centroid y minus bounding-box centre y (the triangle's is h/6 lower)."""
    return torch.where(shape == 2, r * TRIANGLE_BASE / 6, torch.zeros_like(r))


# ---------------------------------------------------------------- randomness
_MASK = np.uint64(0xFFFFFFFFFFFFFFFF)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser (Steele et al. 2014) on uint64 arrays; wraps mod 2**64."""
    with np.errstate(over="ignore"):
        z = (x + np.uint64(0x9E3779B97F4A7C15)) & _MASK
        z = ((z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & _MASK
        z = ((z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & _MASK
        return z ^ (z >> np.uint64(31))


def item_uniforms(seed: int, stream: str, index) -> torch.Tensor:
    """(N, N_FIELDS) float64 uniforms in [0, 1) for items `index` of stream `stream`.

    Counter-based: row i depends only on (seed, stream, index[i]).
    """
    idx = np.asarray(index, dtype=np.int64).reshape(-1)
    if (idx < 0).any():
        raise IndexError("item index must be >= 0")
    tag = sum(ord(ch) * 131**k for k, ch in enumerate(stream)) % 2**63
    base = _splitmix64(_splitmix64(np.array([seed % 2**63], dtype=np.uint64)) ^ np.uint64(tag))
    key = _splitmix64(base ^ idx.astype(np.uint64))  # (N,)
    fields = np.arange(N_FIELDS, dtype=np.uint64)
    z = _splitmix64(key[:, None] * np.uint64(N_FIELDS + 1) + fields[None, :])
    u = (z >> np.uint64(11)).astype(np.float64) * 2.0**-53
    return torch.from_numpy(u)


def params_from_uniforms(u: torch.Tensor, split: str, kind: str, world: WorldConfig) -> dict:
    """Map uniforms (N, N_FIELDS) to the attributes and geometry of N items.

    Returns long tensors color, shape, size, direction, speed (N,) (direction = speed = -1
    for images), float64 r, x0, y0, vx, vy (N,) in frame units, and `choice` (N, 6) long
    indices for the captioner (template and synonym picks).
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    table = combos(split)
    n = u.shape[0]
    combo = table[(u[:, 0] * len(table)).long().clamp_max(len(table) - 1)]
    color, shape, size = combo[:, 0], combo[:, 1], combo[:, 2]
    r = world.radius(size)
    ext = torch.tensor(HALF_EXTENT, dtype=torch.float64)[shape] * r
    lo, hi = ext + world.margin, 1 - ext - world.margin
    if kind == "image":
        direction = torch.full((n,), -1, dtype=torch.long)
        speed = torch.full((n,), -1, dtype=torch.long)
    else:
        direction = (u[:, 1] * 4).long().clamp_max(3)
        speed = (u[:, 2] * 2).long().clamp_max(1)
    vx, vy = velocity(direction, speed, world)
    travel = world.speed(speed) * (world.frames - 1 if kind != "image" else 0)
    # start so that the whole path stays in [lo, hi] on the moving axis
    start_lo_x = lo + torch.where(vx < 0, travel, torch.zeros_like(travel))
    start_hi_x = hi - torch.where(vx > 0, travel, torch.zeros_like(travel))
    start_lo_y = lo + torch.where(vy < 0, travel, torch.zeros_like(travel))
    start_hi_y = hi - torch.where(vy > 0, travel, torch.zeros_like(travel))
    x0 = start_lo_x + u[:, 3] * (start_hi_x - start_lo_x)
    y0 = start_lo_y + u[:, 4] * (start_hi_y - start_lo_y)
    choice = (u[:, 5:11] * 1e6).long()  # reduced modulo the number of options by the captioner
    return dict(color=color, shape=shape, size=size, direction=direction, speed=speed,
                r=r, x0=x0, y0=y0, vx=vx, vy=vy, choice=choice)


def velocity(direction: torch.Tensor, speed: torch.Tensor, world: WorldConfig,
             frames: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Velocity (vx, vy), each (N,) float64 in frame units per frame, of direction and speed ids (N,) long.

    Left/right move along x, up/down along y (y grows downward); id -1 (an image) -> (0, 0).
    """
    v = world.speed(speed, frames)
    sign = torch.where((direction == 0) | (direction == 2), -1.0, 1.0).double()
    horizontal = direction <= 1
    vx = torch.where(horizontal & (direction >= 0), sign * v, torch.zeros_like(v))
    vy = torch.where(~horizontal & (direction >= 0), sign * v, torch.zeros_like(v))
    return vx, vy


def sample_params(n: int, split: str, kind: str, world: WorldConfig,
                  generator: torch.Generator | None = None) -> dict:
    """Draw n items' parameters from a torch.Generator (see `params_from_uniforms`)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    u = torch.rand(n, N_FIELDS, generator=generator, dtype=torch.float64)
    return params_from_uniforms(u, split, kind, world)


def labels_of(params: dict) -> dict:
    """The label dict {attribute: (N,) long} of drawn parameters."""
    return {k: params[k].clone() for k in ATTRIBUTES}
