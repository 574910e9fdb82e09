"""minivid.ops: the hot building blocks, each as a readable reference and a fast form, plain PyTorch.

No Triton, no compiled extension: the same code runs on CPU and CUDA tensors. See
chapters/appendix_ops.md for how they work and `python -m minivid bench ops` for measurements.
"""
from minivid.ops.attention import (
    TiledAttention,
    attention,
    causal_mask,
    naive_attention,
    sdpa_attention,
    tiled_attention,
    tiled_attention_forward,
)
from minivid.ops.causal_conv import (
    CausalConv3d,
    CausalTemporalDownsample,
    CausalTemporalUpsample,
    causal_pad,
    compressed_frames,
)
from minivid.ops.conv import (
    FactorizedConv3d,
    conv3d_flops,
    factorized_conv3d_flops,
    factorized_conv3d_reference,
)
from minivid.ops.embeddings import (
    RelativePositionBias,
    Rope3D,
    default_split_3d,
    relative_position_bucket,
    rotate_half,
    sincos_pos_embed_1d,
    sincos_pos_embed_2d,
    sincos_pos_embed_3d,
    timestep_embedding,
)
from minivid.ops.patches import AdaLNZero, gate, modulate, patchify, unpatchify

__all__ = [
    "attention", "naive_attention", "tiled_attention", "sdpa_attention", "tiled_attention_forward",
    "TiledAttention", "causal_mask",
    "CausalConv3d", "CausalTemporalDownsample", "CausalTemporalUpsample", "causal_pad", "compressed_frames",
    "FactorizedConv3d", "factorized_conv3d_reference", "conv3d_flops", "factorized_conv3d_flops",
    "timestep_embedding", "sincos_pos_embed_1d", "sincos_pos_embed_2d", "sincos_pos_embed_3d",
    "default_split_3d", "Rope3D", "rotate_half", "RelativePositionBias", "relative_position_bucket",
    "patchify", "unpatchify", "modulate", "gate", "AdaLNZero",
]
