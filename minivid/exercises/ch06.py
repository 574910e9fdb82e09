"""Chapter 06 exercises (Video LDM, `minivid/models/vae.py`): hints and known mistakes.

The chapter's author may add checkers here (`CHECKS = {"6.1": check_...}`); the meta-test substitutes every
mistake below and requires a test marked for that exercise to fail on it.
"""
from __future__ import annotations

from minivid.exercises.base import Mistake

CHECKS: dict = {}

HINTS = {
    "6.1": ["For a diagonal Gaussian against N(0, I) the KL has a closed form, one term per latent dimension.",
            "KL = 1/2 (mu^2 + sigma^2 - 1 - log sigma^2) per dimension, summed (not averaged) over an item's "
            "dimensions."],
    "6.2": ["Latent diffusion wants latents of unit variance: scale them by one number.",
            "The scale factor is 1 / std of the latents (all elements together), in float64."],
}

MISTAKES = [
    Mistake("6.1", "the -1 left out of the KL", "- 1.0 - self.logvar", "- self.logvar"),
    Mistake("6.1", "averaged over the latent dimensions instead of summed", ".sum(dim=1)", ".mean(dim=1)"),
    Mistake("6.2", "the std itself instead of its inverse", "float(1.0 / latents.detach().double().flatten().std())",
            "float(latents.detach().double().flatten().std())"),
]

__all__ = ["CHECKS", "HINTS", "MISTAKES"]
