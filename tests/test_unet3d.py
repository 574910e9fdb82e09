"""Chapter 03 model: the factorised space-time 3-D U-Net (VDM, arXiv:2204.03458) and its image masking."""
import pytest
import torch

from minivid.models.blocks import ResBlock
from minivid.models.temporal import SpaceTimeConv, TemporalAttention, temporal_attention_mask
from minivid.models.unet3d import UNet3D, model_flops, unet3d_config
from minivid.ops import conv3d_flops, factorized_conv3d_flops, factorized_conv3d_reference, naive_attention
from minivid.compare import assert_close
from minivid.train import count_params
from tiny_models import randomize


def _tiny(**kw):
    torch.manual_seed(0)
    return UNet3D(unet3d_config("unet3d-tiny", **kw))


def test_shapes_presets_and_errors():
    m = _tiny(context_dim=8)
    x, t = torch.randn(2, 3, 4, 8, 8), torch.tensor([3, 900])
    assert m(x, t).shape == x.shape
    assert m(x, t, context=torch.randn(2, 5, 8)).shape == x.shape
    assert m(x, torch.randint(0, 1000, (2, 4))).shape == x.shape
    for name in ("unet3d-small", "unet3d-base"):
        assert UNet3D(unet3d_config(name)).cfg.extra["preset"] == name
    with pytest.raises(ValueError, match="unknown 3-D U-Net preset"):
        unet3d_config("unet3d-huge")
    with pytest.raises(ValueError, match="conv must be"):
        unet3d_config("unet3d-tiny", conv="dense")
    with pytest.raises(ValueError, match=r"x must be video"):
        m(torch.randn(2, 3, 8, 8), t)
    with pytest.raises(ValueError, match=r"t must be"):
        m(x, torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match=r"image must be"):
        m(x, t, image=torch.tensor([True]))
    with pytest.raises(ValueError, match=r"context must be"):
        m(x, t, context=torch.randn(3, 5, 8))


def test_zero_init_output_and_identity_blocks():
    m = _tiny(context_dim=8)
    x = torch.randn(2, 3, 4, 8, 8)
    assert torch.equal(m(x, torch.tensor([1, 500])), torch.zeros_like(x))
    h, emb = torch.randn(2 * 4, 16, 8, 8), torch.randn(2 * 4, 64)
    res = ResBlock("r", 16, 16, 64, 8, 0.0, conv=lambda a, b: SpaceTimeConv(a, b, "factorized"))
    assert torch.equal(res(h, emb, num_frames=4), h), "a fresh video ResBlock is the identity"
    ta = TemporalAttention("ta", 16, 16, 8, 16)
    assert torch.equal(ta(h, num_frames=4), h), "a fresh TemporalAttention is the identity (zero-init proj)"


@pytest.mark.exercise("3.1")
def test_factorized_conv_matches_reference_float64():
    torch.manual_seed(0)
    conv = randomize(SpaceTimeConv(3, 5, "factorized")).double()
    x = torch.randn(2, 3, 5, 7, 6, dtype=torch.float64)
    c = conv.conv
    ref = factorized_conv3d_reference(x, c.spatial.weight, c.spatial.bias, c.temporal.weight, c.temporal.bias)
    assert_close(conv(x), ref, atol=1e-12, rtol=1e-12, name="factorized conv")
    assert_close(conv(x, torch.tensor([False, False])), ref, atol=1e-12, rtol=1e-12, name="factorized conv, clips")
    # image items: only the per-frame spatial conv, i.e. the reference with an identity temporal kernel
    eye = torch.zeros_like(c.temporal.weight)
    eye[torch.arange(5), torch.arange(5), 1] = 1
    ref_img = factorized_conv3d_reference(x, c.spatial.weight, c.spatial.bias, eye, None)
    out = conv(x, torch.tensor([True, False]))
    assert_close(out[0], ref_img[0], atol=1e-12, rtol=1e-12, name="image item")
    assert_close(out[1], ref[1], atol=1e-12, rtol=1e-12, name="clip item in a mixed batch")


@pytest.mark.exercise("3.2")
def test_temporal_attention_matches_per_pixel_reference():
    torch.manual_seed(0)
    ta = randomize(TemporalAttention("ta", 8, 4, 8, 16), scale=0.3).double()
    B, T, C, H, W = 2, 5, 8, 3, 4
    x = torch.randn(B * T, C, H, W, dtype=torch.float64)
    out = ta(x, num_frames=T)
    bias = ta.rel_pos(T, T)                                              # (heads, T, T)
    assert bias.abs().sum() > 0
    xv = x.reshape(B, T, C, H, W)
    expected = torch.empty_like(xv)
    for b in range(B):
        for i in range(H):
            for j in range(W):
                seq = xv[b, :, :, i, j]                                  # (T, C): one pixel across frames
                q, k, v = ta.qkv(ta.norm(seq)).chunk(3, -1)
                split = lambda z: z.reshape(T, 2, 4).transpose(0, 1)[None]  # noqa: E731  (1, heads, T, 4)
                a = naive_attention(split(q), split(k), split(v), bias=bias[None])[0]
                expected[b, :, :, i, j] = seq + ta.proj(a.transpose(0, 1).reshape(T, C))
    assert_close(out, expected.reshape(B * T, C, H, W), atol=1e-10, rtol=1e-10, name="temporal attention")


def test_temporal_attention_global_context_matches_a_float64_reference_and_reaches_other_pixels():
    """global_context: every pixel's tokens also get glob(the frame's mean normalised token over all pixels)."""
    torch.manual_seed(0)
    ta = randomize(TemporalAttention("ta", 8, 4, 8, 16, global_context=True), scale=0.3).double()
    B, T, C, H, W = 2, 5, 8, 3, 4
    x = torch.randn(B * T, C, H, W, dtype=torch.float64)
    out = ta(x, num_frames=T)
    bias = ta.rel_pos(T, T)
    xv = x.reshape(B, T, C, H, W)
    normed = ta.norm(xv.permute(0, 1, 3, 4, 2))                            # (B, T, H, W, C)
    frame_mean = normed.mean((2, 3))                                       # (B, T, C)
    expected = torch.empty_like(xv)
    for b in range(B):
        for i in range(H):
            for j in range(W):
                seq = xv[b, :, :, i, j]                                    # (T, C): one pixel across frames
                q, k, v = ta.qkv(ta.norm(seq) + ta.glob(frame_mean[b])).chunk(3, -1)
                split = lambda z: z.reshape(T, 2, 4).transpose(0, 1)[None]  # noqa: E731  (1, heads, T, 4)
                a = naive_attention(split(q), split(k), split(v), bias=bias[None])[0]
                expected[b, :, :, i, j] = seq + ta.proj(a.transpose(0, 1).reshape(T, C))
    assert_close(out, expected.reshape(B * T, C, H, W), atol=1e-10, rtol=1e-10, name="temporal attention, global")
    x2 = x.clone()
    x2[0, :, 0, 0] += torch.randn(C, dtype=torch.float64)                 # one pixel of frame 0 of clip 0
    moved = (ta(x2, num_frames=T) - out).abs().reshape(B, T, C, H, W)
    assert moved[0, :, :, 2, 3].amax() > 1e-6, "another pixel of the same clip hears it"
    assert moved[1].amax() == 0, "the other clip does not"
    local = TemporalAttention("ta", 8, 4, 8, 16).double()
    local.load_state_dict({k: v for k, v in ta.state_dict().items() if not k.startswith("glob.")})
    moved = (local(x2, num_frames=T) - local(x, num_frames=T)).abs().reshape(B, T, C, H, W)
    assert moved[0, :, :, 2, 3].amax() == 0, "without it, every pixel is on its own"


@pytest.mark.exercise("3.3")
def test_temporal_attention_mask_closed_form():
    m = temporal_attention_mask(torch.tensor([True, False, True]), 4)
    assert m.shape == (3, 4, 4) and m.dtype == torch.bool
    assert torch.equal(m[0], torch.eye(4, dtype=torch.bool))
    assert torch.equal(m[1], torch.ones(4, 4, dtype=torch.bool))
    assert torch.equal(m[2], torch.eye(4, dtype=torch.bool))
    assert temporal_attention_mask(None, 4) is None


@pytest.mark.exercise("3.1")
@pytest.mark.exercise("3.2")
@pytest.mark.exercise("3.3")
@pytest.mark.parametrize("conv", ["factorized", "full"])
def test_image_items_never_mix_frames(conv):
    """Changing frame j of an image item changes no other frame; for a clip it does."""
    m = randomize(_tiny(context_dim=8, conv=conv, temporal_attn_levels=(0, 1))).double().eval()
    B, T = 2, 4
    x = torch.randn(B, 3, T, 8, 8, dtype=torch.float64)
    t = torch.tensor([10, 600])
    ctx = torch.randn(B, T, 5, 8, dtype=torch.float64)             # one caption per frame
    image = torch.tensor([True, False])
    y = m(x, t, context=ctx, image=image)
    j = 2
    x2 = x.clone()
    x2[:, :, j] += torch.randn_like(x2[:, :, j])
    y2 = m(x2, t, context=ctx, image=image)
    others = [i for i in range(T) if i != j]
    assert_close(y2[0, :, others], y[0, :, others], atol=1e-12, rtol=0, name="image item, frames i != j")
    assert (y2[0, :, j] - y[0, :, j]).abs().max() > 1e-3, "frame j itself must change"
    assert (y2[1, :, others] - y[1, :, others]).abs().max() > 1e-3, "a clip's frames must see each other"


def test_mixed_batch_items_are_independent_and_per_frame_context():
    m = randomize(_tiny(context_dim=8)).eval()
    x, t = torch.randn(3, 3, 4, 8, 8), torch.tensor([5, 50, 500])
    ctx, cmask = torch.randn(3, 6, 8), torch.tensor([[1, 1, 1, 1, 0, 0]] * 3, dtype=torch.bool)
    image = torch.tensor([False, True, False])
    y = m(x, t, context=ctx, context_mask=cmask, image=image)
    alone = m(x[1:2], t[1:2], context=ctx[1:2], context_mask=cmask[1:2], image=image[1:2])
    assert_close(y[1:2], alone, atol=1e-5, rtol=1e-5, name="image item in a mixed batch vs alone")
    per_frame = m(x, t, context=ctx[:, None].expand(3, 4, 6, 8), context_mask=cmask[:, None].expand(3, 4, 6),
                  image=image)
    assert_close(per_frame, y, atol=1e-6, rtol=1e-6, name="per-frame context repeated == per-item context")
    assert (m(x, t, context=torch.randn(3, 6, 8), context_mask=cmask, image=image) - y).abs().max() > 1e-4


def test_frame_embedding_zero_init_and_image_items_stay_unordered():
    """Absolute frame positions: absent at init; image items never receive them (their frames permute freely)."""
    fresh = _tiny(context_dim=8, frame_embedding=True).double().eval()
    plain = UNet3D(unet3d_config("unet3d-tiny", context_dim=8)).double().eval()
    missing = plain.load_state_dict(fresh.state_dict(), strict=False)
    assert missing.missing_keys == [] and sorted(missing.unexpected_keys) == ["frame_proj.bias", "frame_proj.weight"]
    x, t = torch.randn(2, 3, 4, 8, 8, dtype=torch.float64), torch.tensor([10, 600])
    assert_close(fresh(x, t), plain(x, t), atol=1e-12, rtol=0, name="zero-init frame embedding")
    m = randomize(_tiny(context_dim=8, frame_embedding=True, temporal_attn_levels=(0, 1))).double().eval()
    ctx, perm = torch.randn(2, 4, 5, 8, dtype=torch.float64), torch.tensor([2, 0, 3, 1])
    image = torch.tensor([True, False])
    y = m(x, t, context=ctx, image=image)
    yp = m(x[:, :, perm], t, context=ctx[:, perm], image=image)
    assert_close(yp[0], y[0][:, perm], atol=1e-12, rtol=0, name="image item: frames permute with their input")
    still = x[1:, :, :1].expand(1, 3, 4, 8, 8)
    on = m(still, t[1:], image=torch.tensor([False]))
    m.frame_proj.weight.data.zero_(), m.frame_proj.bias.data.zero_()
    off = m(still, t[1:], image=torch.tensor([False]))
    assert (on - off)[:, :, 1:-1].abs().max() > 1e-4, "a clip's inner frames must learn where they are"


def test_aug_embedding_is_off_by_default_zero_init_and_tells_the_level():
    """Cascades (ch05): the conditioning-augmentation level enters through a zero-init projection; off = unchanged."""
    plain = _tiny(context_dim=8)
    assert not any("aug" in k for k in plain.state_dict()), "flag off: the state dict of every earlier model holds"
    fresh = _tiny(context_dim=8, aug_embedding=True).double().eval()
    plain = plain.double().eval()
    res = plain.load_state_dict(fresh.state_dict(), strict=False)
    assert res.missing_keys == [] and sorted(res.unexpected_keys) == ["aug_proj.bias", "aug_proj.weight"]
    assert fresh.aug_proj.weight.abs().sum() == 0 and fresh.aug_proj.bias.abs().sum() == 0
    weights = dict(randomize(plain).named_parameters())
    with torch.no_grad():
        for name, q in fresh.named_parameters():                 # every weight random except the new projection
            if name in weights:
                q.copy_(weights[name])
    x, t = torch.randn(2, 3, 4, 8, 8, dtype=torch.float64), torch.tensor([10, 600])
    y = plain(x, t)
    assert y.abs().mean() > 1e-3
    for level in ([0, 0], [300, 999]):
        assert torch.equal(fresh(x, t, aug_t=torch.tensor(level)), y), "zero-init: the level changes nothing yet"
    with torch.no_grad():
        fresh.aug_proj.weight.normal_()
    a, b = fresh(x, t, aug_t=torch.tensor([0, 0])), fresh(x, t, aug_t=torch.tensor([300, 300]))
    assert (a - b).abs().max() > 1e-4, "once trained, the model is told the level"
    assert torch.equal(fresh(x[:1], t[:1], aug_t=torch.tensor([300])), b[:1]), "the level is per item"
    with pytest.raises(ValueError, match="aug_t"):
        fresh(x, t)
    with pytest.raises(ValueError, match="aug_t"):
        plain(x, t, aug_t=torch.tensor([1, 2]))
    with pytest.raises(ValueError, match=r"aug_t must be \(B,\)"):
        fresh(x, t, aug_t=torch.tensor([1, 2, 3]))
    assert model_flops(_tiny(aug_embedding=True), T=2, size=8) > 0


def test_gradients_reach_every_parameter():
    m = randomize(_tiny(context_dim=8, pooled_dim=6, frame_embedding=True))
    out = m(torch.randn(2, 3, 4, 8, 8), torch.tensor([3, 500]), context=torch.randn(2, 5, 8),
            pooled=torch.randn(2, 6), image=torch.tensor([False, True]))
    out.square().mean().backward()
    dead = [n for n, p in m.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not dead, f"no gradient reaches {dead}"


def test_flops_counter_matches_closed_form_and_full_costs_more():
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.randn(1, 16, 8, 16, 16)
    for kind, expected in (("factorized", factorized_conv3d_flops(x.shape, 32)),
                           ("full", conv3d_flops(x.shape, 32, (3, 3, 3)))):
        with FlopCounterMode(display=False) as fc:
            SpaceTimeConv(16, 32, kind)(x)
        assert fc.get_total_flops() == expected, kind
    fact, full = _tiny(context_dim=8), _tiny(context_dim=8, conv="full")
    assert count_params(full) > count_params(fact)
    f_fact, f_full = model_flops(fact, T=4, size=8), model_flops(full, T=4, size=8)
    assert 1.3 < f_full / f_fact < 3.0, (f_full, f_fact)
