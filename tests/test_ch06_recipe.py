"""Chapter 06's recipe beyond the paper's core. Motion channels: the latent video model also denoises the clip's
optical flow at the latents' resolution (VideoJAM, arXiv:2502.02492, as chapter 03 does in pixel space), through
new layers on the frozen latent image model that start at zero. The temporal decoder's padding in time. The
temporal layers' shifted training timesteps, their own text read and their cross-attention to the text."""
import copy

import pytest
import torch
import torch.nn.functional as F

from minivid.data import WorldConfig, flow_field, from_uint8, materialize_split, time_reversed
from minivid.diffusion import make_schedule
from minivid.models import UNet2D, unet2d_config
from minivid.models.blocks import TextCrossAttention
from minivid.models.temporal import TemporalAttention
from minivid.models.vae import AutoencoderKL, vae_config
from minivid.models.alignment import AlignmentConfig, TemporalDecoder, align, alignment_parameters, set_alpha
from minivid.pipelines import ch06
from minivid.pipelines.ch06_latents import (FLOW, VideoRecipe, latent_batch_fn, latent_flow, latent_loss_fn,
                                            motion_channels)
from minivid.utils import make_generator
from tiny_models import tiny_image_model

D = 8

pytestmark = pytest.mark.usefixtures("one_thread")


def _inputs(B=2, T=4, L=5):
    g = torch.Generator().manual_seed(4)
    text = {"context": torch.randn(B, L, D, generator=g), "context_mask": torch.ones(B, L, dtype=torch.bool),
            "pooled": torch.randn(B, D, generator=g)}
    return torch.randn(B, 4 + FLOW, T, 8, 8, generator=g), torch.tensor([10, 700][:B]), text


def test_at_initialisation_the_latent_channels_are_the_image_model_frame_by_frame_whatever_the_flow():
    image = tiny_image_model(channels=4, dim=D)
    video = align(copy.deepcopy(image), AlignmentConfig(head_dim=16, attn_levels=(0,), motion_channels=FLOW))
    x, t, text = _inputs()
    with torch.no_grad():
        out = video(x, t, **text)
        assert out.shape == x.shape, "latents and flow in, latents and flow out"
        assert torch.equal(out[:, :4], image(x[:, :4], t, **text)), "the image model, exactly"
        x2 = x.clone()
        x2[:, 4:] = torch.randn_like(x2[:, 4:])
        assert torch.equal(video(x2, t, **text)[:, :4], out[:, :4]), "the flow input starts at zero"
        for p in alignment_parameters(video):
            p.add_(0.05 * torch.randn_like(p))
        set_alpha(video, 0.5)
        assert not torch.equal(video(x2, t, **text)[:, :4], video(x, t, **text)[:, :4]), "once trained, it reads it"
        assert video(x, t, **text)[:, 4:].abs().mean() > 1e-4, "and writes flow"
        flags = torch.tensor([True, False])
        assert torch.equal(video(x2, t, image=flags, **text)[:1, :4], out[:1, :4]), "image items ignore the flow"
        set_alpha(video, 1.0)
        assert torch.equal(video(x2, t, **text)[:, :4], out[:, :4]), "alpha = 1: the image model, whatever the flow"


def test_only_the_temporal_and_motion_layers_train_and_bad_channel_counts_are_named():
    image = tiny_image_model(channels=4, dim=D)
    video = align(copy.deepcopy(image), AlignmentConfig(head_dim=16, motion_channels=FLOW))
    names = {n for n, p in video.named_parameters() if p.requires_grad}
    assert {n for n in names if n.startswith("extra_io.")} == {n for n, _ in video.extra_io.named_parameters(
        prefix="extra_io")}, "every motion-channel parameter trains"
    assert all(n.startswith(("temporal.", "extra_io.")) for n in names)
    opt = torch.optim.AdamW(alignment_parameters(video), lr=1e-2)
    x, t, text = _inputs()
    for _ in range(2):
        loss = video(x, t, **text).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    frozen = dict(image.named_parameters())
    assert all(torch.equal(p, frozen[n]) for n, p in video.named_parameters() if n in frozen)
    with pytest.raises(ValueError, match=r"\(B, 6, H, W\) or \(B, 6, T, H, W\)"):
        video(x[:, :4], t, **text)
    with pytest.raises(ValueError, match="already has 2 extra channels"):
        video.add_extra_channels(2)
    with pytest.raises(ValueError, match="motion_channels must be an int >= 0"):
        AlignmentConfig(motion_channels=-1)
    with pytest.raises(ValueError, match="motion_channels must be 0 or 2"):
        ch06.VideoRecipe(alignment={"motion_channels": 3})
    assert motion_channels(ch06.VideoRecipe(alignment={"motion_channels": FLOW})) == FLOW
    full, smoke = ch06.get_preset("full").video, ch06.get_preset("smoke").video
    assert motion_channels(full) == FLOW == motion_channels(smoke), "on in both presets, so CI runs the recipe's path"
    assert full.alignment["text_cross_attn"] and smoke.alignment["text_cross_attn"] and full.t_shift > 1, \
        "alone, motion channels made direction worse; with the cross-attention and the shift they fixed it (comment)"


def _pool(n=12, size=16, frames=4):
    return materialize_split("video_text", "train", n, seed=3, world=WorldConfig(size=size, frames=frames))


def test_latent_flow_is_the_cell_mean_of_the_exact_flow():
    pool = _pool()
    world = WorldConfig(size=16, frames=4)
    flow = flow_field(from_uint8(pool["x"]), pool["labels"]["direction"], pool["labels"]["speed"], world)
    got = latent_flow(pool, factor=4, batch=5)                       # three batches
    assert got.shape == (12, 2, 4, 4, 4)
    want = torch.zeros_like(got)
    for i in range(4):                                                # the naive mean over each 4x4 cell
        for j in range(4):
            want[..., i, j] = flow[..., 4 * i:4 * i + 4, 4 * j:4 * j + 4].mean((-1, -2))
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)
    assert got.abs().amax() > 0.05, "the objects move"
    d = pool["labels"]["direction"]
    sums = got.sum((2, 3, 4))                                         # (N, 2): x and y flow over each clip
    assert ((d == 1) == (sums[:, 0] > 1e-3)).all() and ((d == 0) == (sums[:, 0] < -1e-3)).all(), "right: +x"
    assert ((d >= 2) == (sums[:, 1].abs() > 1e-3)).all(), "up and down move along y only"


def test_a_clip_played_backwards_brings_its_reversed_flow():
    pool = _pool()
    rev = time_reversed(pool)
    flow, flow_rev = latent_flow(pool, 4), latent_flow(rev, 4)
    torch.testing.assert_close(flow_rev, -flow.flip(2), atol=1e-6, rtol=0, msg="reversal negates and flips the flow")
    n = len(pool["captions"])
    lat = {"mean": torch.randn(n, 4, 4, 4, 4), "std": torch.zeros(n, 4, 4, 4, 4)}
    text = {"pooled": torch.arange(n, dtype=torch.float32)[:, None]}
    data = {"latents": lat, "text": text, "text_reversed": {"pooled": -text["pooled"] - 1}, "flow": flow}
    batch = latent_batch_fn(16, data, scale=1.0, time_reversal=0.5)(0, make_generator(0))
    assert batch["x"].shape == (16, 4 + FLOW, 4, 4, 4)
    back = batch["pooled"][:, 0] < 0
    assert back.any() and (~back).any()
    idx = torch.where(back, -batch["pooled"][:, 0] - 1, batch["pooled"][:, 0]).long()
    for b in range(16):
        z, f = lat["mean"][idx[b]], flow[idx[b]]
        want = torch.cat([z.flip(1), -f.flip(1)]) if back[b] else torch.cat([z, f])
        assert torch.equal(batch["x"][b], want), b


def test_a_replicate_padded_decoder_decodes_a_still_clip_the_same_at_every_frame():
    torch.manual_seed(0)
    vae = AutoencoderKL(vae_config("vae-tiny", channels=8, groups=4)).eval()
    z = torch.randn(2, 4, 1, 4, 4).expand(2, 4, 5, 4, 4)              # a still clip: every frame's latents equal
    outs = {}
    for pad in ("zeros", "replicate"):
        dec = TemporalDecoder(copy.deepcopy(vae), kernel=3, padding=pad)
        with torch.no_grad():
            assert torch.equal(dec(z), vae.decode(z[:, :, 0]).unsqueeze(2).expand(-1, -1, 5, -1, -1)), "identity"
            for p in alignment_parameters(dec):
                p.add_(0.1 * torch.randn_like(p))
            outs[pad] = dec(z)
    ends = (outs["zeros"][:, :, 0] - outs["zeros"][:, :, 2]).abs().amax()
    assert ends > 1e-3, "zero padding: the end frames see a blank neighbour and decode differently"
    assert (outs["replicate"] - outs["replicate"][:, :, :1]).abs().amax() < 1e-5, "replicate: the same everywhere"
    with pytest.raises(ValueError, match="padding must be one of"):
        ch06.DecoderRecipe(padding="reflect")


def test_a_smoke_run_with_motion_channels_trains_on_latents_and_flow_and_samples_latents_only():
    from dataclasses import replace

    from minivid.pipelines import common
    p = ch06.get_preset("smoke")
    q = replace(p, name="smoke-motion", video=replace(p.video, alignment={**p.video.alignment, "motion_channels": FLOW}))
    with common.capture_training() as got:
        ch06.train_video(q, progress=False)
    setup = [s for s in got if s.desc.startswith("ch06 temporal alignment layers")][0]
    b = setup.batch_fn(0, make_generator(0))
    assert b["x"].shape[1:] == (4 + FLOW, p.video.frames, 8, 8), "latents, then their flow"
    assert any(n.startswith("extra_io.") for n in setup.trainable), "the motion channels' layers train"
    clips, z = ch06.generate(["a big red circle moving to the right"], preset=q, steps=2, progress=False,
                             return_latents=True)
    assert z.shape == (1, 4, p.video.frames, 8, 8) and clips.shape == (1, 3, p.video.frames, 32, 32)


def test_the_temporal_layers_loss_draws_shifted_timesteps():
    """t_shift reaches the loss: with shift 3 the model is asked about noisier timesteps than with 1, same draws."""
    with pytest.raises(ValueError, match="t_shift"):
        VideoRecipe(t_shift=0.0)
    seen = {}

    def net(x, t, **_):
        seen.setdefault("t", []).append(t.clone())
        return torch.zeros_like(x)

    null = {"context": torch.zeros(1, 4, 8), "context_mask": torch.ones(1, 4, dtype=torch.bool),
            "pooled": torch.zeros(1, 8)}
    batch = {"x": torch.randn(64, 4, 3, 2, 2), **{k: v.expand(64, *v.shape[1:]) for k, v in null.items()}}
    for shift in (1.0, 3.0):
        latent_loss_fn(make_schedule("cosine", 1000), "v", null, 0.0, t_shift=shift)(net, batch, make_generator(0))
    plain, shifted = seen["t"]
    assert bool((shifted >= plain).all()) and bool((shifted > plain).any())


def _text_layers(video):
    return [m.text for m in video.modules() if getattr(m, "text", None) is not None]


def test_temporal_attention_with_its_own_text_read_starts_as_the_image_model_and_ignores_null_text():
    """text_tokens_in_time: each temporal attention adds a zero-initialised projection of the mean real text token.
    At initialisation the video model is the image model exactly; once the projection is trained it reads the
    caption, and a caption with no real token (classifier-free guidance's null) adds nothing."""
    image = tiny_image_model(channels=4, dim=D)
    x, t, text = _inputs()
    x = x[:, :4]
    cfg = AlignmentConfig(head_dim=16, attn_levels=(0,), text_tokens_in_time=True)
    video = align(copy.deepcopy(image), cfg)
    proj = _text_layers(video)
    assert proj and all(p.in_features == D for p in proj)
    assert all(p.weight.requires_grad for p in proj) and set(map(id, (q for p in proj for q in p.parameters()))) <= \
        set(map(id, alignment_parameters(video)))
    with torch.no_grad():
        assert torch.equal(video(x, t, **text), image(x, t, **text))
        set_alpha(video, 0.3)
        for p in proj:                                  # the text read, trained
            p.weight.normal_(0, 0.5, generator=torch.Generator().manual_seed(7))
        other = {**text, "context": text["context"].flip(1)}
        other["context"][:, 0] += 1.0                   # another caption: another mean token
        assert not torch.allclose(video(x, t, **text), video(x, t, **other))
        null = {**text, "context_mask": torch.zeros_like(text["context_mask"])}
        with_read = video(x, t, **null)
        for p in proj:
            p.weight.zero_()
        assert torch.equal(with_read, video(x, t, **null))
    with pytest.raises(ValueError, match="context_dim"):
        align(UNet2D(unet2d_config("unet2d-tiny", in_channels=4, out_channels=4)), cfg)


def _cross_reference(m, x, context, mask):
    """TextCrossAttention in float64, written out: per frame, queries from every pixel, keys/values from the tokens."""
    d = lambda t: t.double()
    N, C, H, W = x.shape
    h = d(x).flatten(2).transpose(1, 2)                                              # (N, HW, C)
    hn = F.layer_norm(h, (C,), d(m.norm_x.weight), d(m.norm_x.bias), m.norm_x.eps)
    q = hn @ d(m.q.weight).T + d(m.q.bias)
    k, v = (d(context) @ d(m.kv.weight).T + d(m.kv.bias)).chunk(2, dim=-1)
    out = torch.zeros_like(h)
    c = C // m.heads
    for i in range(m.heads):
        s = q[..., i * c:(i + 1) * c] @ k[..., i * c:(i + 1) * c].transpose(1, 2) / c ** 0.5   # (N, HW, Lc)
        s = s.masked_fill(~mask[:, None, :], float("-inf"))
        out[..., i * c:(i + 1) * c] = s.softmax(-1) @ v[..., i * c:(i + 1) * c]
    return (h + out @ d(m.proj_x.weight).T).transpose(1, 2).reshape(N, C, H, W)


def test_temporal_layers_with_cross_attention_to_the_text_start_as_the_image_model_and_match_float64():
    """text_cross_attn: every temporal attention is followed by a cross-attention from each pixel of each frame to
    the caption's tokens (zero-initialised output), as the released Video LDM code's VideoTransformerBlock. At
    initialisation the video model is the image model exactly; only the new layers train; trained, a layer is its
    float64 recomputation, padding tokens change nothing, and another direction word changes the output."""
    image = tiny_image_model(channels=4, dim=D)
    x, t, text = _inputs()
    x = x[:, :4]
    cfg = AlignmentConfig(head_dim=4, attn_levels=(0,), text_cross_attn=True)
    video = align(copy.deepcopy(image), cfg)
    cross = [m for m in video.modules() if isinstance(m, TextCrossAttention)]
    assert len(cross) == sum(isinstance(m, TemporalAttention) for m in video.modules()) > 0
    assert set(map(id, (q for m in cross for q in m.parameters()))) <= set(map(id, alignment_parameters(video)))
    with torch.no_grad():
        assert torch.equal(video(x, t, **text), image(x, t, **text))
        g = torch.Generator().manual_seed(3)
        for m in cross:
            m.proj_x.weight.normal_(0, 0.5, generator=g)
        m = cross[0]
        h = torch.randn(4, m.channels, 8, 8, generator=g)
        ctx, mask = torch.randn(4, 5, D, generator=g), torch.tensor([[1, 1, 1, 0, 0]] * 4, dtype=torch.bool)
        ref = _cross_reference(m, h, ctx, mask)
        assert torch.allclose(m(h, context=ctx, context_mask=mask).double(), ref, atol=1e-5, rtol=1e-5)
        padded = ctx.clone()
        padded[:, 3:] = torch.randn(4, 2, D, generator=g)                         # only the padding differs
        assert torch.allclose(m(h, context=padded, context_mask=mask), m(h, context=ctx, context_mask=mask),
                              atol=1e-6)
        other = ctx.clone()
        other[:, 2] = torch.randn(4, D, generator=g)                               # another word
        assert not torch.allclose(m(h, context=other, context_mask=mask), m(h, context=ctx, context_mask=mask))
        assert torch.equal(m(h), h), "no text: the identity"
        set_alpha(video, 0.5)
        assert not torch.allclose(video(x, t, **text), image(x, t, **text))
    with pytest.raises(ValueError, match="text_cross_attn needs"):
        align(UNet2D(unet2d_config("unet2d-tiny", in_channels=4, out_channels=4)), cfg)


def test_3d_temporal_convs_start_as_the_image_model_and_match_a_float64_conv3d():
    """spatial_kernel=3: the temporal residual blocks become 3x3x3 convolutions (the paper's 3-D conv blocks). At
    initialisation the video model is still the image model exactly (their last conv is zero). Trained, a block is
    its float64 functional recomputation (conv3d with (1, s//2, s//2) padding) and reaches two frames each way, no
    further, and never another clip."""
    from minivid.models.alignment import TemporalResBlock
    image = tiny_image_model(channels=4, dim=D)
    x, t, text = _inputs()
    x = x[:, :4]
    video = align(copy.deepcopy(image), AlignmentConfig(head_dim=16, attn_levels=(0,), spatial_kernel=3))
    convs = [m for m in video.modules() if isinstance(m, TemporalResBlock)]
    assert convs and all(m.conv1.kernel_size == (3, 3, 3) and m.conv2.padding == (1, 1, 1) for m in convs)
    with torch.no_grad():
        assert torch.equal(video(x, t, **text), image(x, t, **text))
    g = torch.Generator().manual_seed(3)
    F, T = torch.nn.functional, 6
    u = lambda z: z.view(2, T, *z.shape[1:]).transpose(1, 2)                        # (B*T, C, H, W) -> (B, C, T, H, W)
    f = lambda z: z.transpose(1, 2).reshape(2 * T, *z.shape[1:2], *z.shape[3:])
    outs = {}
    for s in (1, 3):
        block = TemporalResBlock("b", 8, 4, kernel=3, spatial_kernel=s).double()
        with torch.no_grad():
            block.conv2.weight.copy_(torch.randn(block.conv2.weight.shape, generator=g, dtype=torch.float64))
        h = torch.randn(2 * T, 8, 6, 6, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
        bumped = h.clone()
        bumped[1, :, 2, 2] += 1.0                                                  # clip 0, frame 1, pixel (2, 2)
        with torch.no_grad():
            out = block(h, num_frames=T)
            moved = (block(bumped, num_frames=T) - out).abs().amax((1, 2, 3)).view(2, T)
            pad = (1, s // 2, s // 2)
            a = f(F.conv3d(u(F.silu(block.norm1(h))), block.conv1.weight, block.conv1.bias, padding=pad))
            want = h + f(F.conv3d(u(F.silu(block.norm2(a))), block.conv2.weight, block.conv2.bias, padding=pad))
        torch.testing.assert_close(out, want, rtol=1e-12, atol=1e-12)
        assert (moved[0, :4] > 1e-6).all() and moved[0, 4:].max() == 0 and moved[1].max() == 0, (s, moved)
        outs[s] = out
    assert (outs[1] - outs[3]).abs().max() > 1e-3, "the 3x3x3 block is another function"
    with pytest.raises(ValueError, match="spatial_kernel"):
        AlignmentConfig(spatial_kernel=2)
