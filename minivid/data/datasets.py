"""Shapes World as torch Datasets, a fast batch sampler, and a checked on-disk cache.

The three kinds of data of text-to-video training (Make-A-Video, arXiv:2209.14792, builds
on exactly this split): `ImageTextDataset` (plentiful image-caption pairs), `VideoDataset`
(plentiful unlabelled clips), `VideoTextDataset` (scarce captioned clips).

Item i of a dataset is a pure function of (kind, split, seed, i, world): its attributes
come from a counter-based hash, and its pixels are stored as 8-bit values (like real video),
so a lazily rendered item, a materialised one and a cached one are identical.
"""
from __future__ import annotations

import hashlib
import json

import torch
from torch.utils.data import DataLoader, Dataset

from minivid.data.captions import caption, captions_for
from minivid.data.render import render
from minivid.data.world import (
    DIRECTIONS,
    KINDS,
    SPLITS,
    WorldConfig,
    item_uniforms,
    labels_of,
    params_from_uniforms,
    sample_params,
)
from minivid.utils import atomic_save, cache_dir, make_generator

DATA_VERSION = 1  # bump when rendering or captioning changes: stale caches are rebuilt
_CHUNK = 512


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] float -> uint8 0..255 (round to nearest)."""
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def from_uint8(x: torch.Tensor) -> torch.Tensor:
    """uint8 0..255 -> float32 in [-1, 1]."""
    return x.float() / 127.5 - 1


def _check_kind_split(kind: str, split: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")


def sample_batch(n: int, *, kind: str = "image", split: str = "train", size: int = 16, frames: int = 8,
                 generator: torch.Generator | None = None, world: WorldConfig | None = None) -> dict:
    """A fresh random batch, rendered in one vectorised call (no Dataset overhead).

    Returns {"x": (n, 3, S, S) for kind="image" or (n, 3, T, S, S) for "video"/"video_text",
    float32 in [-1, 1]; "captions": n strings ("" for unlabelled video); "labels": {attribute:
    (n,) long}}. `world` overrides size/frames when given.
    """
    _check_kind_split(kind, split)
    world = world or WorldConfig(size=size, frames=frames)
    p = sample_params(n, split, kind, world, generator)
    x = render(p, world, None if kind == "image" else world.frames)
    caps = [""] * n if kind == "video" else captions_for(p, with_motion=kind == "video_text")
    return {"x": x, "captions": caps, "labels": labels_of(p)}


def render_items(kind: str, split: str, seed: int, index, world: WorldConfig) -> dict:
    """Items `index` of a dataset: {"x": uint8 (N, 3, [T,] S, S), "captions": [...], "labels": {...}}."""
    _check_kind_split(kind, split)
    u = item_uniforms(seed, f"{kind}/{split}", index)
    p = params_from_uniforms(u, split, kind, world)
    x = to_uint8(render(p, world, None if kind == "image" else world.frames))
    caps = [""] * len(u) if kind == "video" else captions_for(p, with_motion=kind == "video_text")
    return {"x": x, "captions": caps, "labels": labels_of(p)}


def _checksum(data: dict) -> str:
    h = hashlib.sha256()
    h.update(data["x"].contiguous().numpy().tobytes())
    for k in sorted(data["labels"]):
        h.update(k.encode() + data["labels"][k].contiguous().numpy().tobytes())
    h.update("\n".join(data["captions"]).encode())
    return h.hexdigest()


def _config_hash(config: dict) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]


def materialize_split(kind: str, split: str, n: int, seed: int = 0, world: WorldConfig | None = None,
                cache: bool = True, verbose: bool = True) -> dict:
    """All n items of a dataset at once, loaded from / saved to the cache when `cache`.

    The cache file (under cache_dir("datasets/cache")) stores the generating config, its hash
    and a sha256 of the content; on load both are checked and a corrupt or stale file is
    rebuilt with a message. Returns the `render_items` dict for indices 0..n-1.
    """
    _check_kind_split(kind, split)
    world = world or WorldConfig()
    config = dict(kind=kind, split=split, n=n, seed=seed, world=world.key(), version=DATA_VERSION)
    chash = _config_hash(config)
    path = cache_dir("datasets/cache") / f"{kind}-{split}-n{n}-seed{seed}-{chash}.pt"
    if cache and path.exists():
        problem = None
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
            if not isinstance(blob, dict) or blob.get("config_hash") != chash:
                problem = "stale (its config hash does not match)"
            elif _checksum(blob["data"]) != blob.get("checksum"):
                problem = "corrupt (content checksum mismatch)"
        except Exception as e:  # truncated or garbage file
            problem = f"corrupt ({type(e).__name__})"
        if problem is None:
            return blob["data"]
        if verbose:
            print(f"minivid.data: cache {path.name} is {problem}; rebuilding it.")
    parts = [render_items(kind, split, seed, range(a, min(a + _CHUNK, n)), world) for a in range(0, n, _CHUNK)]
    data = {
        "x": torch.cat([p["x"] for p in parts]),
        "captions": [c for p in parts for c in p["captions"]],
        "labels": {k: torch.cat([p["labels"][k] for p in parts]) for k in parts[0]["labels"]},
    }
    if cache:
        atomic_save({"config": config, "config_hash": chash, "checksum": _checksum(data), "data": data}, path)
    return data


class ShapesDataset(Dataset):
    """Items {"x": float (3, [T,] H, W) in [-1, 1], "caption": str, "labels": {attribute: int}}.

    split: "train" | "val" | "heldout"; n: number of items; seed: which world sample.
    materialize=True renders everything up front (vectorised; with cache=True it is loaded
    from / saved to disk); otherwise each item is rendered when asked for. Either way item i
    is the same.
    """

    kind = "image"

    def __init__(self, split: str = "train", n: int = 10_000, *, size: int = 16, frames: int = 8, seed: int = 0,
                 materialize: bool = False, cache: bool = False, world: WorldConfig | None = None):
        _check_kind_split(self.kind, split)
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        self.split, self.n, self.seed = split, n, seed
        self.world = world or WorldConfig(size=size, frames=frames)
        self.data = None
        if materialize or cache:
            self.data = materialize_split(self.kind, split, n, seed, self.world, cache=cache)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        if not -self.n <= i < self.n:
            raise IndexError(f"index {i} out of range for a dataset of {self.n} items")
        i = i % self.n
        if self.data is not None:
            x, cap = self.data["x"][i], self.data["captions"][i]
            lab = {k: int(v[i]) for k, v in self.data["labels"].items()}
        else:
            d = render_items(self.kind, self.split, self.seed, [i], self.world)
            x, cap = d["x"][0], d["captions"][0]
            lab = {k: int(v[0]) for k, v in d["labels"].items()}
        return {"x": from_uint8(x), "caption": cap, "labels": lab}

    def __getitems__(self, indices: list[int]) -> list[dict]:
        """A whole batch in one vectorised render (DataLoader calls this instead of __getitem__)."""
        if self.data is not None or not indices:
            return [self[i] for i in indices]
        for i in indices:
            if not -self.n <= i < self.n:
                raise IndexError(f"index {i} out of range for a dataset of {self.n} items")
        d = render_items(self.kind, self.split, self.seed, [i % self.n for i in indices], self.world)
        x = from_uint8(d["x"])
        return [{"x": x[j], "caption": d["captions"][j], "labels": {k: int(v[j]) for k, v in d["labels"].items()}}
                for j in range(len(indices))]


class ImageTextDataset(ShapesDataset):
    """Image-caption pairs: x (3, H, W), caption without motion, direction = speed = -1."""

    kind = "image"


class VideoDataset(ShapesDataset):
    """Unlabelled clips: x (3, T, H, W), caption "" (labels kept for evaluation only)."""

    kind = "video"


class VideoTextDataset(ShapesDataset):
    """Captioned clips: x (3, T, H, W), caption with motion and speed."""

    kind = "video_text"


REVERSED_DIRECTION = torch.tensor([DIRECTIONS.index(d) for d in ("right", "left", "down", "up")])


def time_reversed(clips: dict, seed: int = 0) -> dict:
    """The clips played backwards, captioned afresh: same object and speed, the opposite direction.

    Motion in Shapes World is uniform, so a reversed clip is a valid clip of the opposite direction.
    Paired with its original in one batch it is the hardest negative there is: the same appearance,
    only the direction words differ. {"x": (N, 3, T, S, S), "captions", "labels"} like the input.
    """
    labels = dict(clips["labels"])
    labels["direction"] = REVERSED_DIRECTION[labels["direction"]]
    g = make_generator(seed)
    choices = torch.randint(0, 1 << 16, (len(clips["captions"]), 6), generator=g).tolist()
    cols = {k: v.tolist() for k, v in labels.items()}                  # plain ints: per-item tensor indexing is slow
    captions = [caption({k: v[i] for k, v in cols.items()}, choices[i]) for i in range(len(choices))]
    return {"x": clips["x"].flip(2), "captions": captions, "labels": labels}


def collate(items: list[dict]) -> dict:
    """Stack items: {"x": (B, 3, [T,] H, W), "captions": [B strings], "labels": {attr: (B,) long}}."""
    return {
        "x": torch.stack([it["x"] for it in items]),
        "captions": [it["caption"] for it in items],
        "labels": {k: torch.tensor([it["labels"][k] for it in items], dtype=torch.long) for k in items[0]["labels"]},
    }


def make_loader(dataset: Dataset, batch_size: int = 64, shuffle: bool = True, seed: int = 0, **kw) -> DataLoader:
    """A DataLoader with `collate` and a seeded shuffling order."""
    g = torch.Generator()
    g.manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=g, collate_fn=collate, **kw)
