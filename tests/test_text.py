"""Tests for minivid.text: tokenizer, text encoder, contrastive loss, cross-attention, caption dropout."""
import math
import warnings

import pytest
import torch
import torch.nn.functional as F

from minivid.compare import assert_close
from minivid.data import VOCAB, all_captions, sample_batch
from minivid.exercises import ch02 as checks
from minivid.exercises.ch02 import naive_clip_loss
from minivid.text import (
    CLIPConfig,
    ImageEncoderConfig,
    MiniCLIP,
    PromptTruncatedWarning,
    TextEncoder,
    Tokenizer,
    UnknownWordWarning,
    VideoEncoder,
    VideoEncoderConfig,
    attribute_match,
    clip_loss,
    normalize,
    retrieval_accuracy,
    similarity,
    text_encoder_config,
)

# ----------------------------------------------------------------------------- tokenizer

def test_normalize_lowercases_and_strips_punctuation():
    assert normalize("A big, RED circle!") == ["a", "big", "red", "circle"]
    assert normalize("  the huge-ball_on black.  ") == ["the", "huge", "ball", "on", "black"]
    assert normalize("") == []


def test_encode_pads_masks_and_roundtrips_every_caption_word():
    tok = Tokenizer()
    assert tok.vocab_size == len(VOCAB) + 3
    caps = all_captions("red", "square", "big") + all_captions("blue", "circle", "small", "left", "fast")[:40]
    with warnings.catch_warnings():
        warnings.simplefilter("error")           # no caption word may be unknown
        ids, mask = tok.encode(caps)
    assert ids.shape == mask.shape == (len(caps), tok.max_len) and ids.dtype == torch.long and mask.dtype == torch.bool
    for b, c in enumerate(caps):
        n = len(c.split()) + 1
        assert mask[b].tolist() == [True] * n + [False] * (tok.max_len - n)      # a prefix of real tokens
        assert ids[b, n - 1] == tok.eos_id and bool((ids[b, n:] == tok.pad_id).all())
        assert tok.decode(ids[b]) == c
    assert tok.encode("A big, RED circle!")[0].tolist() == tok.encode(["a big red circle"])[0].tolist()


@pytest.mark.exercise("2.4")
def test_encode_checker():
    assert checks.check_encode()


def test_empty_prompt_is_the_lone_eos_token():
    tok = Tokenizer(max_len=8)
    ids, mask = tok.encode(["", "   "])
    assert ids.tolist() == [[tok.eos_id] + [tok.pad_id] * 7] * 2
    assert mask.tolist() == [[True] + [False] * 7] * 2


def test_unknown_words_warn_with_suggestions_and_still_encode():
    tok = Tokenizer()
    with pytest.warns(UnknownWordWarning, match=r"'circel' \(did you mean 'circle'") as rec:
        ids, mask = tok.encode(["a big red circel zzzq"])
    assert "'zzzq' (no close known word)" in str(rec[0].message)
    assert ids[0, :6].tolist() == [tok.stoi["a"], tok.stoi["big"], tok.stoi["red"], tok.unk_id, tok.unk_id, tok.eos_id]
    assert int(mask.sum()) == 6


def test_long_prompts_are_truncated_with_a_warning():
    tok = Tokenizer(max_len=4)
    with pytest.warns(PromptTruncatedWarning, match="only the first 3"):
        ids, mask = tok.encode("a big red circle")
    assert tok.decode(ids[0]) == "a big red" and bool(mask.all())


def test_tokenizer_rejects_bad_input_and_state_roundtrips():
    tok = Tokenizer()
    with pytest.raises(TypeError, match="prompt must be a str"):
        tok.encode([3])
    with pytest.raises(ValueError, match="at least one prompt"):
        tok.encode([])
    with pytest.raises(ValueError, match="lower-case single words"):
        Tokenizer(["Red"])
    tok2 = Tokenizer.from_state_dict(tok.state_dict())
    assert tok2.itos == tok.itos and tok2.max_len == tok.max_len


# ----------------------------------------------------------------------------- text encoder

def _encoder(tok, **kw):
    torch.manual_seed(0)
    return TextEncoder(text_encoder_config("text-tiny", vocab_size=tok.vocab_size, max_len=tok.max_len, **kw)).eval()


def test_text_encoder_shapes_padding_invariance_and_pooling():
    tok = Tokenizer()
    enc = _encoder(tok)
    ids, mask = tok.encode(["a big red circle", "the tiny lime wedge", ""])
    with torch.no_grad():
        tokens, pooled = enc(ids, mask)
    assert tokens.shape == (3, tok.max_len, enc.dim) and pooled.shape == (3, enc.dim)
    n = mask.sum(1)
    for b in range(3):                                   # pooled = the <eos> feature; padding is zeroed
        assert torch.equal(pooled[b], tokens[b, n[b] - 1])
        assert float(tokens[b, n[b]:].abs().max()) == 0.0
    junk = ids.clone()
    junk[~mask] = 7                                      # what sits in the padding must not matter
    with torch.no_grad():
        tokens2, pooled2 = enc(junk, mask)
        one, _ = enc(*tok.encode(["a big red circle"]))   # nor which other prompts share the batch
    assert_close(tokens2, tokens, atol=1e-6, name="tokens with junk padding")
    assert_close(one[0], tokens[0], atol=1e-6, name="tokens alone vs in a batch")


def test_text_encoder_rejects_bad_ids():
    tok = Tokenizer()
    enc = _encoder(tok)
    with pytest.raises(ValueError, match=r"ids must be \(B, L\) long"):
        enc(torch.zeros(2, 4))
    with pytest.raises(ValueError, match="ids must be in"):
        enc(torch.full((1, 4), 999))
    with pytest.raises(ValueError, match="at least one real token"):
        enc(torch.zeros(1, 4, dtype=torch.long), torch.zeros(1, 4, dtype=torch.bool))


# ----------------------------------------------------------------------------- contrastive loss

@pytest.mark.exercise("2.1")
@pytest.mark.parametrize("multi", [False, True])
def test_clip_loss_matches_a_naive_float64_reference(multi):
    g = torch.Generator().manual_seed(1)
    B, E = 7, 5
    img, txt = torch.randn(B, E, generator=g), torch.randn(B, E, generator=g)
    labels = {"color": torch.tensor([0, 1, 0, 2, 1, 0, 3]), "shape": torch.zeros(B, dtype=torch.long),
              "size": torch.zeros(B, dtype=torch.long)}
    pos = attribute_match(labels) if multi else torch.eye(B, dtype=torch.bool)
    got = clip_loss(img, txt, torch.tensor(3.0), pos if multi else None)
    assert abs(float(got) - naive_clip_loss(img, txt, 3.0, pos)) < 1e-5
    if not multi:                                        # CLIP's pseudo-code, with F.cross_entropy
        logits = 3.0 * F.normalize(img, dim=-1) @ F.normalize(txt, dim=-1).T
        ref = (F.cross_entropy(logits, torch.arange(B)) + F.cross_entropy(logits.T, torch.arange(B))) / 2
        assert_close(got, ref, atol=1e-6, name="clip_loss vs cross_entropy")


@pytest.mark.exercise("2.1")
def test_clip_loss_invariants():
    g = torch.Generator().manual_seed(2)
    img, txt = torch.randn(6, 4, generator=g), torch.randn(6, 4, generator=g)
    base = clip_loss(img, txt, 2.0)
    assert_close(clip_loss(5 * img, 0.1 * txt, 2.0), base, atol=1e-6, name="scale of the embeddings")
    assert_close(clip_loss(txt, img, 2.0), base, atol=1e-6, name="symmetry in the two towers")
    perfect = clip_loss(img, img, 50.0)                 # matched pairs, sharp temperature: loss -> 0
    assert float(perfect) < float(base) and float(perfect) < 0.5
    assert abs(float(clip_loss(img, txt, 0.0)) - math.log(6)) < 1e-6   # temperature -> inf: uniform
    s = torch.tensor(2.0, requires_grad=True)
    clip_loss(img, txt, s).backward()
    assert s.grad is not None and torch.isfinite(s.grad)


@pytest.mark.exercise("2.1")
def test_clip_loss_checker_passes_and_diagnoses_mistakes():
    assert checks.check_clip_loss()

    def one_way(img, txt, scale, positives=None):
        logits = scale * F.normalize(img, dim=-1) @ F.normalize(txt, dim=-1).T
        return F.cross_entropy(logits, torch.arange(len(img)))

    def unnormalised(img, txt, scale, positives=None):
        logits = scale * img @ txt.T
        t = torch.arange(len(img))
        return (F.cross_entropy(logits, t) + F.cross_entropy(logits.T, t)) / 2

    with pytest.raises(AssertionError, match="image->text direction only"):
        checks.check_clip_loss(one_way)
    with pytest.raises(AssertionError, match="without L2-normalising"):
        checks.check_clip_loss(unnormalised)


def test_clip_loss_rejects_bad_input():
    with pytest.raises(ValueError, match="both be"):
        clip_loss(torch.randn(3, 4), torch.randn(4, 4), 1.0)
    with pytest.raises(ValueError, match="diagonal"):
        clip_loss(torch.randn(3, 4), torch.randn(3, 4), 1.0, torch.zeros(3, 3, dtype=torch.bool))


def test_retrieval_accuracy_counts_attribute_matches():
    sim = torch.tensor([[0.9, 0.3, 0.0], [0.8, 0.2, 0.1], [0.0, 0.1, 0.5]])
    match = torch.tensor([[1, 0, 0], [1, 1, 0], [0, 0, 1]], dtype=torch.bool)
    r = retrieval_accuracy(sim, match)
    assert r["i2t"] == 1.0                               # row 1's best caption (0) is a same-attribute match
    assert abs(r["t2i"] - 2 / 3) < 1e-6                  # caption 1's best image (0) is not a match


def test_mini_clip_forward_shapes():
    tok = Tokenizer()
    cfg = CLIPConfig(text=text_encoder_config("text-tiny", vocab_size=tok.vocab_size),
                     image=ImageEncoderConfig(channels=(8, 16), dim=32), embed_dim=16)
    clip = MiniCLIP(cfg)
    b = sample_batch(5, generator=torch.Generator().manual_seed(0))
    img, txt, scale = clip(b["x"], *tok.encode(b["captions"]))
    assert img.shape == txt.shape == (5, 16)
    assert abs(float(scale.detach()) - 1 / 0.07) < 1e-3
    clip.logit_scale.data.fill_(10.0)
    assert abs(float(clip.scale().detach()) - 100.0) < 1e-3       # CLIP's clamp at 100


def _video_clip():
    tok = Tokenizer()
    cfg = CLIPConfig(text=text_encoder_config("text-tiny", vocab_size=tok.vocab_size),
                     image=ImageEncoderConfig(channels=(8, 16), dim=32),
                     video=VideoEncoderConfig(channels=(8, 16), dim=32), embed_dim=16)
    return tok, MiniCLIP(cfg)


def test_video_tower_shapes_and_bad_input():
    tok, clip = _video_clip()
    b = sample_batch(3, kind="video_text", frames=4, generator=torch.Generator().manual_seed(0))
    emb = clip.encode_video(b["x"])
    assert emb.shape == (3, 16)
    sim = similarity(clip, b["x"], *tok.encode(b["captions"]))               # 5-D input goes to the video tower
    ref = F.normalize(emb, dim=-1) @ F.normalize(clip.encode_text(*tok.encode(b["captions"])), dim=-1).T
    assert_close(sim, ref.detach(), atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match=r"clips \(B, 3, T, H, W\)"):
        clip.video(b["x"][:, :, 0])
    with pytest.raises(ValueError, match=r"clips \(B, 3, T, H, W\)"):
        clip.encode_video(b["x"][:, :, 0])
    image_only = MiniCLIP(CLIPConfig(text=clip.cfg.text, image=clip.cfg.image, embed_dim=16))
    assert not hasattr(image_only, "video")
    with pytest.raises(ValueError, match="no video tower"):
        image_only.encode_video(b["x"])


def test_video_tower_sees_the_direction_of_motion():
    """Mean pooling removes *where*, but a 3x3x3 kernel still tells a clip from its time reversal."""
    torch.manual_seed(0)
    enc = VideoEncoder(VideoEncoderConfig(channels=(8, 16), dim=8))
    b = sample_batch(4, kind="video_text", frames=4, generator=torch.Generator().manual_seed(1))
    fwd, rev = enc(b["x"]), enc(b["x"].flip(2))
    assert (fwd - rev).abs().max() > 1e-3
    assert_close(enc(b["x"][:2]), fwd[:2], atol=1e-5, rtol=0)                # items are independent


def test_a_still_clip_embeds_like_its_frame_plus_motion():
    """Clip embedding = image tower averaged over frames (appearance) + the 3-D CNN (motion)."""
    torch.manual_seed(0)
    tok, clip = _video_clip()
    img = sample_batch(3, generator=torch.Generator().manual_seed(2))["x"]           # (3, 3, 16, 16)
    still = img[:, :, None].expand(3, 3, 4, 16, 16)
    with torch.no_grad():
        got = clip.encode_video(still) - clip.video_proj(clip.video(still))
        assert_close(got, clip.encode_image(img), atol=1e-5, rtol=0)
        clip.video_proj.weight.zero_()                                               # no motion part left
        assert_close(clip.encode_video(still), clip.encode_image(img), atol=1e-5, rtol=0)
