"""Tests for text conditioning: cross-attention, its recorder, caption dropout, guidance at scale 1."""
import pytest
import torch
from torch import nn

from minivid.compare import assert_close
from minivid.diffusion import ddim_sample, guided_predict, make_schedule
from minivid.exercises import ch02 as checks
from minivid.exercises.ch02 import naive_cross_attention
from minivid.models import UNet2D, unet2d_config
from minivid.models.blocks import AttentionBlock
from minivid.text import (
    CrossAttentionRecorder,
    TextConditioner,
    TextEncoder,
    Tokenizer,
    caption_dropout,
    cross_attention,
    text_encoder_config,
)


@pytest.mark.exercise("2.2")
def test_cross_attention_matches_naive_reference():
    torch.manual_seed(0)
    N, Lq, C, L, Dc, heads = 2, 5, 8, 4, 6, 2
    q_proj, kv_proj = nn.Linear(C, C), nn.Linear(Dc, 2 * C)
    h, ctx = torch.randn(N, Lq, C), torch.randn(N, L, Dc)
    mask = torch.tensor([[True, True, True, False], [True, False, False, False]])
    with torch.no_grad():
        out, probs = cross_attention(h, ctx, q_proj, kv_proj, heads, mask)
    ref_out, ref_probs = naive_cross_attention(h, ctx, q_proj, kv_proj, heads, mask)
    assert out.shape == (N, Lq, C) and probs.shape == (N, heads, Lq, L)
    assert_close(probs, ref_probs, atol=1e-6, name="attention probabilities")
    assert_close(out, ref_out, atol=1e-5, name="attention output")
    assert float(probs[1, :, :, 1:].abs().max()) == 0.0          # padding gets no weight


@pytest.mark.exercise("2.2")
def test_cross_attention_checker_passes_and_diagnoses_mistakes():
    assert checks.check_cross_attention()

    def unscaled(h, context, q_proj, kv_proj, heads, mask=None):
        return cross_attention(h * (h.shape[-1] // heads) ** 0.5, context, q_proj, kv_proj, heads, mask)

    def unmasked(h, context, q_proj, kv_proj, heads, mask=None):
        return cross_attention(h, context, q_proj, kv_proj, heads, None)

    with pytest.raises(AssertionError, match="not divided by sqrt"):
        checks.check_cross_attention(unscaled)
    with pytest.raises(AssertionError, match="padding tokens got weight"):
        checks.check_cross_attention(unmasked)


@pytest.mark.exercise("2.2")
def test_cross_attention_is_what_the_unet_block_adds():
    """AttentionBlock(x, context) - AttentionBlock(x) == proj_x(cross_attention(norm_x(h), context))."""
    torch.manual_seed(1)
    C, Dc, N, H, W = 16, 12, 3, 4, 4
    blk = AttentionBlock("test_attn", C, head_dim=8, groups=4, context_dim=Dc)
    nn.init.normal_(blk.proj_x.weight, std=0.2)                    # undo the zero init so the branch is visible
    nn.init.normal_(blk.proj.weight, std=0.2)
    x, ctx = torch.randn(N, C, H, W), torch.randn(N, 5, Dc)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]], dtype=torch.bool)
    with torch.no_grad():
        h = blk(x).flatten(2).transpose(1, 2)                      # (N, HW, C): self-attention only
        delta = blk(x, context=ctx, context_mask=mask).flatten(2).transpose(1, 2) - h
        out, probs = cross_attention(blk.norm_x(h), ctx, blk.q, blk.kv, blk.heads, mask)
    assert_close(blk.proj_x(out), delta, atol=1e-5, name="cross-attention branch of the U-Net block")


def _tiny(use_pooled=True, seed=0):
    torch.manual_seed(seed)
    tok = Tokenizer()
    enc = TextEncoder(text_encoder_config("text-tiny", vocab_size=tok.vocab_size))
    cond = TextConditioner(tok, enc, use_pooled=use_pooled)
    unet = UNet2D(unet2d_config("unet2d-tiny", context_dim=enc.dim, pooled_dim=enc.dim if use_pooled else None))
    for m in unet.modules():                                        # break the zero init: a non-trivial net
        if isinstance(m, (nn.Conv2d, nn.Linear)) and float(m.weight.detach().abs().max()) == 0.0:
            nn.init.normal_(m.weight, std=0.05)
    return cond, unet.eval()


def test_recorder_maps_are_distributions_over_real_tokens():
    cond, unet = _tiny()
    prompts = ["a big red circle", "the tiny lime wedge on black"]
    kw = cond(prompts)
    with CrossAttentionRecorder(unet) as rec, torch.no_grad():
        unet(torch.randn(2, 3, 16, 16), torch.tensor([10, 500]), **kw)
    maps = rec.maps()
    assert maps and all(m.shape[0] == 2 and m.shape[-1] == cond.tokenizer.max_len for m in maps.values())
    n = kw["context_mask"].sum(1)
    for m in maps.values():
        assert_close(m.sum(-1), torch.ones(m.shape[:-1]), atol=1e-5, name="rows sum to one")
        assert float(m[0, ..., n[0]:].abs().max()) == 0.0
    mean = rec.mean_map(16)
    assert mean.shape == (2, 16, 16, cond.tokenizer.max_len)
    unet(torch.randn(1, 3, 16, 16), torch.tensor([3]), **cond(["a"]))   # hooks are gone after the block
    assert sum(len(v) for v in rec.records.values()) == len(maps)
    with pytest.raises(ValueError, match="no cross-attention"):
        CrossAttentionRecorder(UNet2D(unet2d_config("unet2d-tiny")))


@pytest.mark.exercise("2.3")
def test_caption_dropout_extremes_and_rate():
    tok = Tokenizer()
    ids, mask = tok.encode(["a big red circle", "the small blue box"] * 500)
    null_ids, null_mask = (t[0] for t in tok.encode([""]))
    cond, null = {"ids": ids, "mask": mask}, {"ids": null_ids, "mask": null_mask}
    same, none = caption_dropout(cond, null, 0.0)
    assert torch.equal(same["ids"], ids) and torch.equal(same["mask"], mask) and not bool(none.any())
    gone, every = caption_dropout(cond, null, 1.0)
    assert bool((gone["ids"] == null_ids).all()) and bool((gone["mask"] == null_mask).all()) and bool(every.all())
    g = torch.Generator().manual_seed(0)
    out, dropped = caption_dropout(cond, null, 0.1, generator=g)
    rate = float(dropped.float().mean())
    assert abs(rate - 0.1) < 0.03                                   # 1000 coins: sd 0.0095
    assert torch.equal(out["ids"][dropped], null_ids.expand(int(dropped.sum()), -1))
    assert torch.equal(out["ids"][~dropped], ids[~dropped]) and torch.equal(out["mask"][~dropped], mask[~dropped])
    _, again = caption_dropout(cond, null, 0.1, generator=torch.Generator().manual_seed(0))
    assert torch.equal(again, dropped)                              # the generator decides
    # features, one caption per frame: (B, T, L, D) against a null of (L, D)
    feats = {"context": torch.randn(6, 3, 5, 4), "pooled": torch.randn(6, 3, 4)}
    nullf = {"context": torch.zeros(5, 4), "pooled": torch.zeros(4)}
    outf, d = caption_dropout(feats, nullf, 0.5, generator=torch.Generator().manual_seed(1))
    assert 0 < int(d.sum()) < 6
    assert bool((outf["context"][d] == 0).all()) and torch.equal(outf["context"][~d], feats["context"][~d])
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        caption_dropout(cond, null, 1.5)
    with pytest.raises(ValueError, match="every key"):
        caption_dropout(cond, {"ids": null_ids}, 0.1)


@pytest.mark.exercise("2.3")
def test_caption_dropout_checker_passes_and_diagnoses_a_flipped_coin():
    assert checks.check_caption_dropout()

    def flipped(cond, null, p, generator=None):
        u = torch.rand(cond["ids"].shape[0], generator=generator)
        d = u >= p
        return {k: torch.where(d[:, None], null[k], v) for k, v in cond.items()}, d

    with pytest.raises(AssertionError, match="flipped"):
        checks.check_caption_dropout(flipped)


def test_conditioner_outputs_and_null_branch():
    cond, _ = _tiny()
    kw = cond(["a big red circle", ""])
    assert set(kw) == {"context", "context_mask", "pooled"}
    null = cond.null(3)
    assert null["context"].shape == (3, cond.tokenizer.max_len, cond.dim)
    assert_close(null["context"][0], kw["context"][1], atol=1e-6, name="null() is the encoding of ''")
    assert not any(p.requires_grad for p in cond.encoder.parameters())
    cond2, _ = _tiny(use_pooled=False)
    assert "pooled" not in cond2(["a"])


def test_guidance_scale_one_is_exactly_the_conditional_prediction():
    cond, unet = _tiny()
    prompts = ["a big red square", "the small cyan disc", "a tiny lemon wedge"]
    c, u = cond(prompts), cond.null(3)
    x, t = torch.randn(3, 3, 16, 16), torch.tensor([999, 400, 3])
    with torch.no_grad():
        direct = unet(x, t, **c)
        for mode in ("batch", "twice"):
            assert torch.equal(guided_predict(unet, x, t, c, u, 1.0, mode), direct)
        uncond = unet(x, t, **u)
        g3 = guided_predict(unet, x, t, c, u, 3.0, "twice")
        assert_close(g3, uncond + 3.0 * (direct - uncond), atol=1e-5, name="guidance at scale 3")
        assert float((g3 - direct).abs().max()) > 1e-4             # and guidance does change something
    schedule = make_schedule("cosine", 50)
    noise = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    a = ddim_sample(unet, noise.shape, schedule, "v", steps=4, cond=c, uncond=u, guidance_scale=1.0,
                    noise=noise, progress=False)
    b = ddim_sample(unet, noise.shape, schedule, "v", steps=4, cond=c, noise=noise, progress=False)
    assert torch.equal(a, b)
