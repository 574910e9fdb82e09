"""Chapter 07 exercises (the causal video VAE, `minivid/models/video_vae.py`): hints and known mistakes.

The chapter's author may add checkers here (`CHECKS = {"7.1": check_...}`); the meta-test substitutes every
mistake below and requires a test marked for that exercise to fail on it.
"""
from __future__ import annotations

from minivid.exercises.base import Mistake

CHECKS: dict = {}

HINTS = {
    "7.1": ["The first frame is encoded on its own; every later group of `factor` frames becomes one latent frame.",
            "T = 1 + factor * k -> 1 + k latent frames; any other T is an error that names the nearest valid counts."],
    "7.2": ["A causal conv in a later chunk must see the previous chunk's last input frames (its cache) instead "
            "of padding.",
            "The first chunk has no cache (None); every chunk stores the conv's new cache under the conv's key."],
    "7.3": ["The first chunk holds the lone first frame plus the frames that do not fill a whole chunk; every "
            "later chunk holds exactly chunk_frames frames.",
            "first = 1 + (T - 1) % chunk_frames; then (a, a + chunk_frames) for a from first to T."],
}

MISTAKES = [
    Mistake("7.1", "the first frame forgotten (k latent frames instead of 1 + k)", "return 1 + k", "return k"),
    Mistake("7.2", "the cache never handed on (every chunk padded like the first)",
            "cache = None if state.first_chunk else state.caches[self.key]", "cache = None"),
    Mistake("7.3", "the first chunk one frame short", "first = 1 + (T - 1) % chunk_frames",
            "first = max(1, (T - 1) % chunk_frames)"),
]

__all__ = ["CHECKS", "HINTS", "MISTAKES"]
