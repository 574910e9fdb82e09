"""Shapes World: a procedural, seeded, offline world of captioned shapes and clips.

The three kinds of data of text-to-video training, generated here on demand:
image-text pairs (`ImageTextDataset`, `sample_batch(kind="image")`), unlabelled video
(`VideoDataset`, kind="video") and video-text pairs (`VideoTextDataset`, kind="video_text").
See datasets/README.md for the dataset card.
"""
from minivid.data.captions import (
    IMAGE_TEMPLATES,
    SYNONYMS,
    VIDEO_TEMPLATES,
    VOCAB,
    all_captions,
    caption,
    parse_caption,
    prompt_labels,
    vocabulary,
)
from minivid.data.datasets import (
    DATA_VERSION,
    REVERSED_DIRECTION,
    ImageTextDataset,
    ShapesDataset,
    VideoDataset,
    VideoTextDataset,
    collate,
    from_uint8,
    make_loader,
    materialize_split,
    render_items,
    sample_batch,
    time_reversed,
    to_uint8,
)
from minivid.data.pools import image_text_pool, video_pool, video_text_pool  # noqa: E402
from minivid.data.render import (coverage, estimate_flow, estimate_velocity, flow_field, render, sdf_circle,
                                 sdf_square, sdf_triangle)
from minivid.data.toy import TOY_KINDS, toy_data  # noqa: E402
from minivid.data.world import (
    ATTRIBUTES,
    COLOR_RGB,
    COLORS,
    DIRECTIONS,
    HELDOUT_COMBOS,
    KINDS,
    SHAPES,
    SIZES,
    SPEEDS,
    SPLITS,
    WorldConfig,
    centroid_offset,
    combos,
    is_heldout,
    sample_params,
    velocity,
)

__all__ = [
    "DATA_VERSION", "TOY_KINDS", "toy_data", "image_text_pool", "video_text_pool", "video_pool",
    "ATTRIBUTES", "REVERSED_DIRECTION", "COLORS", "COLOR_RGB", "DIRECTIONS", "HELDOUT_COMBOS",
    "IMAGE_TEMPLATES", "KINDS", "SHAPES", "SIZES", "SPEEDS", "SPLITS", "SYNONYMS", "VIDEO_TEMPLATES", "VOCAB",
    "ImageTextDataset", "ShapesDataset", "VideoDataset", "VideoTextDataset", "WorldConfig", "all_captions",
    "caption", "centroid_offset", "collate", "combos", "coverage", "estimate_flow", "estimate_velocity", "flow_field",
    "from_uint8",
    "is_heldout", "make_loader", "materialize_split", "parse_caption", "prompt_labels", "render", "render_items",
    "sample_batch", "sample_params", "sdf_circle", "sdf_square", "sdf_triangle", "time_reversed", "to_uint8",
    "velocity", "vocabulary",
]
