"""The fixed training pools the chapters share, rendered once and cached (`materialize_split`).

As the field has it: image-text pairs are plentiful (`image_text_pool`, 20,000 in the full recipes),
captioned clips are scarce (`video_text_pool`, 2,000) - chapter 02's mini-CLIP and chapter 03's
video model train on the very same clips. Train split only: held-out combinations never appear.
"""
from __future__ import annotations

from minivid.data.datasets import materialize_split
from minivid.data.world import WorldConfig


def image_text_pool(size: int = 16, pool: int = 20000) -> dict:
    """The image-caption training pairs: {"x": (pool, 3, S, S) uint8, "captions", "labels"} (train split, cached)."""
    return materialize_split("image", "train", pool, seed=0, world=WorldConfig(size=size), cache=True, verbose=False)


def video_text_pool(size: int = 16, frames: int = 8, pool: int = 2000) -> dict:
    """The scarce video-caption pairs: {"x": (pool, 3, T, S, S) uint8, "captions", "labels"} (train split, cached)."""
    return materialize_split("video_text", "train", pool, seed=0, world=WorldConfig(size=size, frames=frames),
                             cache=True, verbose=False)


def video_pool(size: int = 16, frames: int = 8, pool: int = 2000) -> dict:
    """Unlabelled clips (plentiful; no caption is ever read): {"x": (pool, 3, T, S, S) uint8, ...} (train, cached)."""
    return materialize_split("video", "train", pool, seed=0, world=WorldConfig(size=size, frames=frames),
                             cache=True, verbose=False)


__all__ = ["image_text_pool", "video_text_pool", "video_pool"]
