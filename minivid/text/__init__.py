"""Text for text-to-image and text-to-video: tokenizer, text encoder, mini-CLIP, conditioning.

    from minivid.text import Tokenizer, TextEncoder, MiniCLIP, clip_loss, TextConditioner
    tok = Tokenizer()
    ids, mask = tok.encode(["a big red circle"])          # (1, 16) long, (1, 16) bool
    tokens, pooled = TextEncoder(...)(ids, mask)          # (1, 16, D), (1, D)

The pretrained, frozen encoder every later chapter uses comes from
`minivid.pipelines.ch02.load_text_encoder()`. Papers: CLIP (arXiv:2103.00020), Stable Diffusion
(arXiv:2112.10752), classifier-free guidance (arXiv:2207.12598).
"""
from minivid.text.clip import (
    CLIPConfig,
    ImageEncoder,
    ImageEncoderConfig,
    MiniCLIP,
    VideoEncoder,
    VideoEncoderConfig,
    attribute_match,
    clip_loss,
    retrieval_accuracy,
    similarity,
)
from minivid.text.conditioning import TextConditioner, caption_dropout
from minivid.text.encoder import TEXT_ENCODER_PRESETS, TextEncoder, TextEncoderConfig, text_encoder_config
from minivid.text.tokenizer import (
    EOS,
    PAD,
    SPECIALS,
    UNK,
    PromptTruncatedWarning,
    Tokenizer,
    UnknownWordWarning,
    normalize,
    pad_and_mask,
)
from minivid.text.xattn import CrossAttentionRecorder, cross_attention

__all__ = [
    "CLIPConfig", "ImageEncoder", "ImageEncoderConfig", "MiniCLIP", "VideoEncoder", "VideoEncoderConfig",
    "attribute_match", "clip_loss", "retrieval_accuracy", "similarity", "TextConditioner", "caption_dropout",
    "TEXT_ENCODER_PRESETS", "TextEncoder", "TextEncoderConfig", "text_encoder_config", "EOS", "PAD", "SPECIALS",
    "UNK", "PromptTruncatedWarning", "Tokenizer", "UnknownWordWarning", "normalize", "pad_and_mask",
    "CrossAttentionRecorder", "cross_attention",
]
