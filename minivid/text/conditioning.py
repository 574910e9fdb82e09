"""Text conditioning for diffusion models: a frozen text encoder and caption dropout.

Stable Diffusion (Rombach et al. 2022, arXiv:2112.10752) and Imagen (Saharia et al. 2022,
arXiv:2205.11487) condition the denoiser on a *frozen* pretrained text encoder. Classifier-free
guidance (Ho & Salimans 2022, arXiv:2207.12598) needs the same network to also predict without
the caption, so training replaces the caption by the null one with probability p ("caption
dropout"); sampling then runs both branches and extrapolates from the unconditional one.

    cond = TextConditioner(tokenizer, encoder)
    kw = cond(["a big red circle"] * 4)      # {"context": (4, L, D), "context_mask": (4, L), "pooled": (4, D)}
    null = cond.null(4)                      # the same for the empty prompt "" (the unconditional branch)
    model(x_t, t, **kw)

Chapters 03-06 reuse this class with the chapter-02 encoder (`minivid.pipelines.ch02.load_text_encoder`).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from minivid.text.encoder import TextEncoder
from minivid.text.tokenizer import Tokenizer


def caption_dropout(cond: dict, null: dict, p: float, generator: torch.Generator | None = None):
    """Replace each item's caption by the null caption with probability p (for CFG training).

    cond: per-item tensors, each (B, ...): token ids and mask ({"ids": (B, L), "mask": (B, L)}) or the text
    features a model reads ({"context": (B, L, D) or (B, T, L, D), "context_mask": ..., "pooled": ...}).
    null: the same keys for the empty prompt "", each broadcastable to one item (e.g. (L,) or (L, D)).
    The coin flips u ~ U(0, 1), one per item, come from `generator` (a CPU generator is fine for tensors
    on any device). Returns (cond with the dropped items replaced, dropped (B,) bool).
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p (caption dropout probability) must be in [0, 1], got {p}")
    if not cond or set(null) < set(cond):
        raise ValueError(f"null must have every key of cond {sorted(cond)}, got {sorted(null)}")
    B = next(iter(cond.values())).shape[0]
    if any(v.shape[0] != B for v in cond.values()):
        raise ValueError(f"every tensor in cond must have the same batch size, got { {k: tuple(v.shape) for k, v in cond.items()} }")
    dev = next(iter(cond.values())).device
    gdev = generator.device if generator is not None else dev
    u = torch.rand(B, generator=generator, device=gdev).to(dev)                     # (B,)
    ### BEGIN SOLUTION  # exercise 2.3: caption dropout for classifier-free guidance
    dropped = u < p
    out = {k: torch.where(dropped.view(B, *[1] * (v.dim() - 1)), null[k].to(v.device), v) for k, v in cond.items()}
    ### END SOLUTION
    return out, dropped


class TextConditioner:
    """Tokenizer + frozen text encoder -> the keyword arguments of a text-conditioned denoiser.

    use_pooled: include "pooled" (B, D) in the output (for models built with pooled_dim).
    """

    def __init__(self, tokenizer: Tokenizer, encoder: TextEncoder, use_pooled: bool = True):
        if encoder.cfg.max_len < tokenizer.max_len or encoder.cfg.vocab_size != tokenizer.vocab_size:
            raise ValueError(f"encoder (vocab {encoder.cfg.vocab_size}, max_len {encoder.cfg.max_len}) does not fit "
                             f"the tokenizer (vocab {tokenizer.vocab_size}, max_len {tokenizer.max_len})")
        self.tokenizer = tokenizer
        self.encoder = encoder.eval().requires_grad_(False)
        self.use_pooled = use_pooled
        null_ids, null_mask = tokenizer.encode([""])
        self.null_ids, self.null_mask = null_ids[0], null_mask[0]                # (L,), (L,)

    @property
    def dim(self) -> int:
        return self.encoder.cfg.dim

    @property
    def device(self) -> torch.device:
        return self.encoder.pos.device

    def to(self, device) -> TextConditioner:
        self.encoder.to(device)
        return self

    @torch.no_grad()
    def encode_ids(self, ids: torch.Tensor, mask: torch.Tensor) -> dict:
        """ids, mask: (B, L) -> {"context": (B, L, D), "context_mask": (B, L) bool[, "pooled": (B, D)]}."""
        ids, mask = ids.to(self.device), mask.to(self.device)
        tokens, pooled = self.encoder(ids, mask)
        out = {"context": tokens, "context_mask": mask}
        if self.use_pooled:
            out["pooled"] = pooled
        return out

    def __call__(self, prompts: str | Sequence[str]) -> dict:
        """B prompts -> the model's keyword arguments (see `encode_ids`); "" is the unconditional prompt."""
        return self.encode_ids(*self.tokenizer.encode(prompts))

    def null(self, n: int) -> dict:
        """The unconditional branch for a batch of n: the encoding of "" repeated n times."""
        return self.encode_ids(self.null_ids.expand(n, -1), self.null_mask.expand(n, -1))

    def null_features(self) -> dict:
        """The features of "" for one item ({"context": (L, D), ...}): the `null` of `caption_dropout`."""
        return {k: v[0] for k, v in self.null(1).items()}

    def dropout(self, feats: dict, p: float, generator: torch.Generator | None = None):
        """`caption_dropout` of encoded features with this encoder's null caption; returns (feats, dropped)."""
        return caption_dropout(feats, self.null_features(), p, generator)


__all__ = ["TextConditioner", "caption_dropout"]
