"""Chapter 08 exercises (diffusion transformers: `minivid/ops/patches.py`, `minivid/models/dit.py`,
`minivid/diffusion/flow.py`): hints and known mistakes.

The chapter's author may add checkers here (`CHECKS = {"8.1": check_...}`); the meta-test substitutes every
mistake below and requires a test marked for that exercise to fail on it.
"""
from __future__ import annotations

from minivid.exercises.base import Mistake

CHECKS: dict = {}

HINTS = {
    "8.1": ["Cut (B, C, T, H, W) into (pt, ph, pw) blocks: reshape to (B, C, nt, pt, nh, ph, nw, pw).",
            "Tokens are ordered time, then height, then width; each token holds C * pt * ph * pw values with the "
            "channel outermost: permute to (B, nt, nh, nw, C, pt, ph, pw), then flatten."],
    "8.2": ["adaLN-Zero: each branch reads modulate(norm(x), shift, scale) and its output is multiplied by a gate "
            "before the residual add.",
            "The gates start at zero, so a fresh block is the identity: x + gate * branch(...)."],
    "8.3": ["Rectified flow walks a straight line from data (t = 0) to noise (t = 1).",
            "x_t = (1 - t) x0 + t noise; the velocity is its time derivative, noise - x0."],
}

MISTAKES = [
    Mistake("8.1", "a transposed permute (channels innermost)", "x.permute(0, 2, 4, 6, 1, 3, 5, 7)",
            "x.permute(0, 2, 4, 6, 3, 5, 7, 1)"),
    Mistake("8.2", "the attention branch without its gate",
            "x = x + gate(self.attn(modulate(self.norm1(x), shift_msa, scale_msa), grid, rope), gate_msa)",
            "x = x + self.attn(modulate(self.norm1(x), shift_msa, scale_msa), grid, rope)"),
    Mistake("8.3", "the velocity's sign flipped", "v = noise - x0", "v = x0 - noise"),
]

__all__ = ["CHECKS", "HINTS", "MISTAKES"]
