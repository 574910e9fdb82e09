"""Cross-attention from image positions to text tokens, spelled out, and a recorder for its maps.

In a text-conditioned U-Net (Rombach et al. 2022, arXiv:2112.10752, section 3.3) every image
position asks a question (query, from the image features) and every word answers (keys and values,
from the text encoder's token features):

    Q = h W_q (N, HW, C),  K = c W_k, V = c W_v (N, L, C),  A = softmax(Q K^T / sqrt(d) + mask) (N, heads, HW, L)

and the block adds (A V) W_o back into the image features. A's rows are the *cross-attention maps*:
for each pixel, how much it listened to each word (Hertz et al. 2022, "Prompt-to-Prompt",
arXiv:2208.01626, edit images by editing these maps).

`cross_attention` is the readable version (the U-Net uses the fused `minivid.ops.attention`);
`CrossAttentionRecorder` hooks a `minivid.models.UNet2D` and recomputes, with `cross_attention`,
the maps of every cross-attention block during a forward pass.
"""
from __future__ import annotations

import math

import torch
from torch import nn


def cross_attention(h: torch.Tensor, context: torch.Tensor, q_proj: nn.Module, kv_proj: nn.Module, heads: int,
                    mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Multi-head cross-attention of image tokens to text tokens.

    h: (N, Lq, C) image features (already normalised); context: (N, L, Dc) text token features;
    q_proj: C -> C; kv_proj: Dc -> 2C (first C outputs are keys, last C values); heads divides C;
    mask: (N, L) bool, True = real token (padding gets zero weight).
    Returns out (N, Lq, C) (before the output projection) and probs (N, heads, Lq, L) (rows sum to 1).
    """
    if h.dim() != 3 or context.dim() != 3 or h.shape[0] != context.shape[0]:
        raise ValueError(f"h must be (N, Lq, C) and context (N, L, Dc) with the same N, got {tuple(h.shape)} "
                         f"and {tuple(context.shape)}")
    N, Lq, C = h.shape
    L = context.shape[1]
    if C % heads:
        raise ValueError(f"heads ({heads}) must divide the channels C ({C})")
    if mask is not None and mask.shape != (N, L):
        raise ValueError(f"mask must be (N, L) = ({N}, {L}), got {tuple(mask.shape)}")
    d = C // heads
    ### BEGIN SOLUTION  # exercise 2.2: a cross-attention forward pass
    q = q_proj(h).reshape(N, Lq, heads, d).transpose(1, 2)                       # (N, heads, Lq, d)
    k, v = kv_proj(context).reshape(N, L, 2, heads, d).permute(2, 0, 3, 1, 4)     # 2 x (N, heads, L, d)
    scores = q @ k.transpose(-2, -1) / math.sqrt(d)                              # (N, heads, Lq, L)
    if mask is not None:
        scores = scores.masked_fill(~mask.bool()[:, None, None, :], float("-inf"))
    probs = scores.softmax(dim=-1)
    out = (probs @ v).transpose(1, 2).reshape(N, Lq, C)                          # (N, Lq, C)
    ### END SOLUTION
    return out, probs


class CrossAttentionRecorder:
    """Record the cross-attention maps of a UNet2D while it runs.

        with CrossAttentionRecorder(unet) as rec:
            unet(x_t, t, **cond)
        rec.maps()          # {block name: (N, H, W, L)}, averaged over heads and recorded calls

    It hooks each attention block that has cross-attention (blocks with `context_dim`): a pre-hook
    keeps the block's input size, the context and its mask; a hook on its `norm_x` LayerNorm keeps
    the normalised image features; `cross_attention` then recomputes the probabilities with the
    block's own `q` and `kv` projections. Nothing in the U-Net changes.
    """

    def __init__(self, unet: nn.Module):
        self.unet = unet
        self.blocks = {b.name: b for b in unet.blocks() if getattr(b, "context_dim", None) is not None}
        if not self.blocks:
            raise ValueError("this U-Net has no cross-attention blocks (build it with context_dim)")
        self.records: dict[str, list[torch.Tensor]] = {n: [] for n in self.blocks}
        self._handles: list = []
        self._pending: dict[str, dict] = {}

    def _pre(self, name):
        def hook(module, args, kwargs):
            x = args[0]
            self._pending[name] = {"hw": tuple(x.shape[-2:]), "context": kwargs.get("context"),
                                   "mask": kwargs.get("context_mask")}
        return hook

    def _post_norm(self, name):
        def hook(module, args, output):
            p = self._pending.get(name)
            if p is None or p["context"] is None:
                return
            blk = self.blocks[name]
            with torch.no_grad():
                _, probs = cross_attention(output, p["context"], blk.q, blk.kv, blk.heads, p["mask"])
            H, W = p["hw"]
            self.records[name].append(probs.mean(1).reshape(probs.shape[0], H, W, -1).detach().cpu())
        return hook

    def __enter__(self) -> CrossAttentionRecorder:
        for name, blk in self.blocks.items():
            self._handles.append(blk.register_forward_pre_hook(self._pre(name), with_kwargs=True))
            self._handles.append(blk.norm_x.register_forward_hook(self._post_norm(name)))
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def clear(self) -> None:
        for v in self.records.values():
            v.clear()

    def maps(self, upsample_to: int | None = None) -> dict[str, torch.Tensor]:
        """{block name: (N, H, W, L)} mean over recorded calls (and heads); optionally resized to a common side."""
        out = {}
        for name, recs in self.records.items():
            if not recs:
                continue
            m = torch.stack(recs).mean(0)                                             # (N, H, W, L)
            if upsample_to is not None and m.shape[1] != upsample_to:
                m = nn.functional.interpolate(m.permute(0, 3, 1, 2), size=(upsample_to, upsample_to),
                                              mode="nearest").permute(0, 2, 3, 1)
            out[name] = m
        return out

    def mean_map(self, size: int) -> torch.Tensor:
        """All blocks' maps resized to size x size and averaged: (N, size, size, L)."""
        maps = self.maps(upsample_to=size)
        if not maps:
            raise RuntimeError("no cross-attention was recorded: run the U-Net with context inside the `with` block")
        return torch.stack(list(maps.values())).mean(0)


__all__ = ["cross_attention", "CrossAttentionRecorder"]
