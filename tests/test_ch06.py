"""Chapter 06, Video LDM (arXiv:2304.08818): alpha-merged temporal layers on a frozen latent image model, the
temporally fine-tuned decoder, the latent codec, and the four trainings end to end (smoke size)."""
import copy
import math
import warnings
from dataclasses import replace

import pytest
import torch

from minivid.compare import assert_close
from minivid.exercises import ch06 as checks
from minivid.models.alignment import (
    AlignmentConfig,
    AlignmentLayer,
    TemporalDecoder,
    align,
    alignment_parameters,
    alpha_blend,
    alphas,
    set_alpha,
)
from minivid.models.vae import AutoencoderKL, latent_scale_factor, vae_config
from minivid.pipelines import ch06, common
from minivid.pipelines.ch06_latents import decoder_batch_fn, decoder_loss, motion_channels
from minivid.utils import make_generator
from tiny_models import randomize, tiny_image_model

D = 8
F64 = torch.float64


pytestmark = pytest.mark.usefixtures("one_thread")


def _video_model(image, alpha=0.3):
    """The image model aligned, its temporal branch random (it starts as the identity), every alpha `alpha`."""
    video = align(copy.deepcopy(image), AlignmentConfig(head_dim=16, attn_levels=(0,)))
    return set_alpha(randomize(video, seed=5, scale=0.2, params=alignment_parameters(video)), alpha)


def _inputs(B=2, T=5, L=5):
    """A latent clip (B, 4, T, 8, 8), timesteps (B,) and text features."""
    g = torch.Generator().manual_seed(4)
    text = {"context": torch.randn(B, L, D, generator=g), "context_mask": torch.ones(B, L, dtype=torch.bool),
            "pooled": torch.randn(B, D, generator=g)}
    return torch.randn(B, 4, T, 8, 8, generator=g), torch.tensor([10, 700, 300][:B]), text


# ----------------------------------------------------------------------------- exercise 6.3: the alpha blend

@pytest.mark.exercise("6.3")
def test_alpha_blend_is_the_sigmoid_weighted_merge_of_the_two_outputs():
    s, t = torch.randn(6, 3, 4, 5, dtype=F64), torch.randn(6, 3, 4, 5, dtype=F64)
    for logit in (0.4, -1.5, 3.0):
        a = 1 / (1 + math.exp(-logit))
        out = alpha_blend(s, t, torch.tensor(logit, dtype=F64))
        assert_close(out, a * s + (1 - a) * t, atol=1e-12, rtol=1e-12, name=f"blend at logit {logit}")
    lg = torch.tensor(0.2, dtype=F64, requires_grad=True)
    alpha_blend(s, t, lg).sum().backward()
    a = 1 / (1 + math.exp(-0.2))
    assert lg.grad.item() == pytest.approx(a * (1 - a) * float((s - t).sum()), rel=1e-9), "d out / d logit"


@pytest.mark.exercise("6.3")
def test_alpha_blend_is_exact_where_the_temporal_branch_is_the_identity_or_alpha_is_one():
    s, t = torch.randn(8, 4, 6, 6), torch.randn(8, 4, 6, 6)
    assert torch.equal(alpha_blend(s, s.clone(), torch.tensor(0.4)), s), "identity temporal layer: exactly spatial"
    assert torch.equal(alpha_blend(s, t, torch.tensor(math.inf)), s), "alpha = 1: exactly spatial"
    assert_close(alpha_blend(s, t, torch.tensor(-math.inf)), t, atol=1e-6, rtol=0, name="alpha = 0: temporal")


@pytest.mark.exercise("6.3")
def test_alpha_blend_image_items_keep_the_spatial_output_exactly():
    B, T = 3, 4
    s, t = torch.randn(B * T, 2, 3, 5, dtype=F64), torch.randn(B * T, 2, 3, 5, dtype=F64)
    logit = torch.tensor(0.7, dtype=F64)
    blended = alpha_blend(s, t, logit)
    out = alpha_blend(s, t, logit, torch.tensor([True, False, True]), T)
    assert torch.equal(out[:T], s[:T]) and torch.equal(out[2 * T:], s[2 * T:]), "image items: alpha = 1"
    assert torch.equal(out[T:2 * T], blended[T:2 * T]), "the clip is blended"
    assert torch.equal(alpha_blend(s, t, logit, torch.zeros(B, dtype=torch.bool), T), blended)
    with pytest.raises(ValueError, match=r"image must be \(B,\) = \(3,\)"):
        alpha_blend(s, t, logit, torch.tensor([True, False]), T)
    with pytest.raises(ValueError, match="one shape"):
        alpha_blend(s, t[:, :1], logit)
    with pytest.raises(ValueError, match="num_frames=5 does not divide"):
        alpha_blend(s, t, logit, None, 5)


@pytest.mark.exercise("6.3")
def test_the_checker_passes_and_names_the_usual_mistakes():
    assert checks.check_alpha_blend()
    s_t = lambda s, t, a: s + (1 - a) * (t - s)                                      # noqa: E731
    wrong = {
        "torch.sigmoid": lambda s, t, lg, image=None, T=1: s_t(s, t, lg),
        "swapped": lambda s, t, lg, image=None, T=1: s_t(t, s, torch.sigmoid(lg)),
        "rounds away": lambda s, t, lg, image=None, T=1: torch.sigmoid(lg) * s + (1 - torch.sigmoid(lg)) * t,
        "blended like clips": lambda s, t, lg, image=None, T=1: s_t(s, t, torch.sigmoid(lg)),
        "repeat_interleave": lambda s, t, lg, image=None, T=1: s_t(s, t, torch.sigmoid(lg)) if image is None else
        torch.where(image.repeat(T)[:, None, None, None], s, s_t(s, t, torch.sigmoid(lg))),
        "Python float": lambda s, t, lg, image=None, T=1: s_t(s, t, 1 / (1 + math.exp(-lg.item()))) if image is None
        else torch.where(image.repeat_interleave(T)[:, None, None, None], s, s_t(s, t, 1 / (1 + math.exp(-lg.item())))),
    }
    for hint, fn in wrong.items():
        with pytest.raises(AssertionError, match=hint):
            checks.check_alpha_blend(fn)


@pytest.mark.exercise("6.3")
def test_at_alpha_one_the_video_model_is_the_latent_image_model_frame_by_frame_exactly():
    image = tiny_image_model(channels=4, dim=D)
    video = _video_model(image, alpha=0.3)
    x, t, text = _inputs()
    with torch.no_grad():
        per_frame = image(x, t, **text)                              # the 2-D model on a clip: every frame alone
        assert (video(x, t, **text) - per_frame).abs().max() > 1e-3, "alpha < 1: the temporal layers take part"
        set_alpha(video, 1.0)
        out = video(x, t, **text)
        frames = torch.stack([image(x[:, :, i], t, **text) for i in range(x.shape[2])], 2)
    assert out.abs().mean() > 0.01 and set(alphas(video).values()) == {1.0}
    assert torch.equal(out, per_frame), "alpha = 1 must be the image model, exactly"
    assert_close(out, frames, atol=1e-6, rtol=1e-6, name="one call per frame (other batch size, same maths)")


@pytest.mark.exercise("6.3")
def test_at_initialisation_the_video_model_is_the_image_model_whatever_alpha():
    image = tiny_image_model(channels=4, dim=D)
    x, t, text = _inputs(T=4)
    for a in (0.2, 0.5, 0.9):
        video = align(copy.deepcopy(image), AlignmentConfig(head_dim=16, attn_levels=(0, 1), alpha_init=a))
        assert alphas(video) and all(v == pytest.approx(a) for v in alphas(video).values())
        with torch.no_grad():
            assert torch.equal(video(x, t, **text), image(x, t, **text)), a


@pytest.mark.exercise("6.3")
def test_image_items_force_alpha_one():
    image = tiny_image_model(channels=4, dim=D)
    video = _video_model(image, alpha=0.3)
    x, t, text = _inputs(B=3, T=4)
    flags = torch.tensor([True, False, True])
    with torch.no_grad():
        out = video(x, t, image=flags, **text)
        clips = video(x, t, **text)
        per_frame = image(x, t, **text)
        assert torch.equal(out[flags], per_frame[flags]), "image items are the image model, frame by frame"
        assert torch.equal(out[1], clips[1]), "a clip in the same batch is unaffected"
        assert not torch.equal(out[1], per_frame[1])
        assert torch.equal(video(x, t, image=torch.ones(3, dtype=torch.bool), **text), per_frame)


def test_temporal_layers_sit_after_the_spatial_blocks_and_only_they_train():
    image = tiny_image_model(channels=4, dim=D)
    video = align(copy.deepcopy(image), AlignmentConfig(head_dim=16, attn_levels=(0,)))
    blocks = {b.name: type(b).__name__ for b in image.blocks()}
    assert set(video.temporal) == set(blocks), "one alignment layer after every ResBlock and attention block"
    kinds = {n: [type(m).__name__ for m in video.temporal[n].layers] for n in video.temporal}
    assert kinds["mid0_attn"] == ["TemporalAttention"] and kinds["mid0_res"] == ["TemporalResBlock"]
    assert kinds["down0_0_res"] == ["TemporalResBlock", "TemporalAttention"], "attn_levels=(0,): both"
    params = alignment_parameters(video)
    names = [n for n, p in video.named_parameters() if p.requires_grad]
    assert names and all(n.startswith("temporal.") for n in names)
    assert sum(n.endswith(".logit") for n in names) == len(video.temporal), "one learned alpha per layer"
    assert {id(p) for p in params} == {id(p) for p in video.parameters() if p.requires_grad}
    plain = align(copy.deepcopy(image), AlignmentConfig(temporal_attn=False))
    assert all(isinstance(m, AlignmentLayer) and m.name.endswith("_res_align") for m in plain.temporal.values())


def test_a_few_steps_move_only_the_temporal_layers_and_alphas():
    image = tiny_image_model(channels=4, dim=D)
    video = align(copy.deepcopy(image), AlignmentConfig(head_dim=16))
    before = {n: p.clone() for n, p in video.named_parameters()}
    opt = torch.optim.AdamW(alignment_parameters(video), lr=1e-2)
    x, t, text = _inputs(T=4)
    for _ in range(3):
        loss = video(x, t, **text).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    moved = {n for n, p in video.named_parameters() if not torch.equal(p, before[n])}
    assert moved and all(n.startswith("temporal.") for n in moved)
    assert any(n.endswith(".logit") for n in moved), "the alphas learn"
    frozen = dict(image.named_parameters())
    assert all(torch.equal(p, frozen[n]) for n, p in video.named_parameters() if n in frozen)


# ----------------------------------------------------------------------------- the temporal decoder

def _vae():
    torch.manual_seed(0)
    return randomize(AutoencoderKL(vae_config("vae-tiny", channels=8, groups=4)), scale=0.2).eval()


@pytest.mark.exercise("6.3")
def test_at_initialisation_the_temporal_decoder_is_the_per_frame_decoder_exactly():
    vae = _vae()
    dec = TemporalDecoder(copy.deepcopy(vae), alpha_init=0.3)
    z = torch.randn(2, 4, 5, 8, 8, generator=make_generator(1))
    with torch.no_grad():
        out, ref = dec(z), vae.decode(z)
    assert out.shape == (2, 3, 5, 32, 32) and out.abs().mean() > 0.01
    assert torch.equal(out, ref), "zero-initialised temporal layers: the per-frame decoder, exactly"
    with torch.no_grad():
        assert torch.equal(dec(z[:, :, 0]), vae.decode(z[:, :, 0])), "an image decodes per frame"


def test_the_temporal_decoder_trains_only_its_temporal_layers_and_mixes_frames():
    vae = _vae()
    dec = TemporalDecoder(copy.deepcopy(vae))
    names = [n for n, p in dec.named_parameters() if p.requires_grad]
    assert names and all(n.startswith("temporal.") for n in names)
    assert sum(n.endswith(".logit") for n in names) == sum(1 for _ in dec.temporal)
    randomize(dec, seed=2, scale=0.2, params=alignment_parameters(dec))
    z = torch.randn(1, 4, 4, 8, 8, generator=make_generator(1))
    z2 = z.clone()
    z2[:, :, 0] += 1.0
    with torch.no_grad():
        moved = (dec(z2) - dec(z)).abs().amax(dim=(0, 1, 3, 4))          # (T,)
        still = (vae.decode(z2) - vae.decode(z)).abs().amax(dim=(0, 1, 3, 4))
    assert moved[1] > 0 and still[1] == 0, "a temporal decoder sees the neighbouring frames; the per-frame one not"
    with pytest.raises(ValueError, match=r"z must be \(B, 4, T, h, w\)"):
        dec(torch.zeros(1, 3, 4, 8, 8))


def test_decoder_loss_charges_flicker_not_a_steady_error():
    x = torch.rand(2, 3, 4, 8, 8) * 2 - 1
    steady = x + 0.1                                                   # the same error in every frame
    flicker = x + 0.1 * torch.tensor([1.0, -1, 1, -1]).view(1, 1, 4, 1, 1)
    (_, m_s), (l_f, m_f) = decoder_loss(steady, x, 1.0), decoder_loss(flicker, x, 1.0)
    assert float(m_s["rec"]) == pytest.approx(0.01) and float(m_f["rec"]) == pytest.approx(0.01)
    assert float(m_s["temporal"]) == pytest.approx(0, abs=1e-10) and float(m_f["temporal"]) == pytest.approx(0.04)
    assert float(l_f) == pytest.approx(0.05) and float(decoder_loss(flicker, x, 0.0)[0]) == pytest.approx(0.01)
    with pytest.raises(ValueError, match="T >= 2"):
        decoder_loss(x[:, :, :1], x[:, :, :1], 1.0)


def test_decoder_batches_noise_each_clip_to_its_own_level_independently_per_frame():
    n, c, t, h = 6, 4, 5, 3
    data = {"x": torch.randint(0, 256, (n, 3, t, 4 * h, 4 * h), dtype=torch.uint8),
            "latents": {"mean": torch.randn(n, c, t, h, h), "std": torch.full((n, c, t, h, h), 0.1)}}
    clean = decoder_batch_fn(400, data, time_reversal=0.0)(0, make_generator(3))
    noisy = decoder_batch_fn(400, data, time_reversal=0.0, noise=0.5)(0, make_generator(3))
    assert torch.equal(clean["x"], noisy["x"])                       # the same clips and posterior draws
    err = noisy["z"] - clean["z"]                                     # the added noise alone
    std = err.flatten(1).std(1)                                       # one level per clip, uniform in [0, 0.5]
    assert std.max() < 0.5 * 1.15 and std.min() < 0.05 and 0.2 < std.mean() < 0.3
    per_frame = err.transpose(1, 2).flatten(2)                        # (B, T, ...): each frame its own draw
    corr = torch.nn.functional.cosine_similarity(per_frame[:, 0], per_frame[:, 1], dim=-1)
    assert corr.abs().mean() < 0.2


# ----------------------------------------------------------------------------- recipes, keys, arguments

def test_checkpoint_keys_follow_each_recipe_and_the_upstream_models(monkeypatch):
    p = ch06.get_preset("smoke")
    paths = {w: ch06.checkpoint_path(w, p) for w in ch06.STAGES}
    assert len(set(paths.values())) == 4 and all(f"ch06-{w}-smoke-seed0-" in paths[w].name for w in paths)
    assert ch06.checkpoint_path("video", p, seed=1) != paths["video"]
    q = replace(p, vae=replace(p.vae, kl_weight=1e-5))                  # a new autoencoder retrains everything
    assert all(ch06.checkpoint_path(w, q) != paths[w] for w in ch06.STAGES)
    q = replace(p, latent=replace(p.latent, p_uncond=0.2))              # a new image model: it and the video model
    assert [ch06.checkpoint_path(w, q) != paths[w] for w in ch06.STAGES] == [False, True, True, False]
    q = replace(p, decoder=replace(p.decoder, temporal_weight=0.0))
    assert [ch06.checkpoint_path(w, q) != paths[w] for w in ch06.STAGES] == [False, False, False, True]
    monkeypatch.setattr(ch06, "pretrained_path", lambda name, preset, seed: type(paths["vae"])(f"/x/{name}-new.pt"))
    assert ch06.checkpoint_path("latent", p) != paths["latent"] and ch06.checkpoint_path("video", p) != paths["video"]
    assert ch06.checkpoint_path("decoder", p) == paths["decoder"], "the decoder reads no text"


def test_bad_arguments_get_clear_errors():
    with pytest.raises(ValueError, match="unknown ch06 preset"):
        ch06.get_preset("huge")
    with pytest.raises(ValueError, match="what must be one of"):
        ch06.checkpoint_path("clip", "smoke")
    with pytest.raises(ValueError, match="multiple of the autoencoder's 4x"):
        ch06.VAERecipe(size=30)
    with pytest.raises(ValueError, match="scale_batch"):
        ch06.VAERecipe(pool=100, scale_batch=200)
    with pytest.raises(ValueError, match="frames must be >= 2"):
        ch06.VideoRecipe(frames=1)
    with pytest.raises(ValueError, match="kernel must be an odd int"):
        ch06.VideoRecipe(alignment={"kernel": 2})
    with pytest.raises(ValueError, match="alpha_init must lie strictly between 0 and 1"):
        ch06.DecoderRecipe(alpha_init=1.0)
    with pytest.raises(ValueError, match="temporal_weight and latent_noise >= 0"):
        ch06.DecoderRecipe(temporal_weight=-1.0)
    with pytest.raises(ValueError, match="temporal_weight and latent_noise >= 0"):
        ch06.DecoderRecipe(latent_noise=-0.1)
    with pytest.raises(ValueError, match="time_reversal must lie in"):
        ch06.VideoRecipe(time_reversal=2.0)
    with pytest.raises(ValueError, match="needs temporal_conv, temporal_attn or attn_levels"):
        AlignmentConfig(temporal_conv=False, temporal_attn=False)
    with pytest.raises(TypeError, match="align grows a UNet2D"):
        align(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match=r"alpha must lie in \[0, 1\]"):
        set_alpha(tiny_image_model(channels=4, dim=D), 1.5)
    with pytest.raises(ValueError, match="decoder must be one of"):
        ch06.generate(["a red circle"], preset="smoke", decoder="spatial")
    with pytest.raises(ValueError, match="frames must be an int >= 1"):
        ch06.generate(["a red circle"], preset="smoke", frames=0)
    with pytest.raises(ValueError, match="at least one prompt"):
        ch06.generate([], preset="smoke")
    with pytest.raises(ValueError, match="--steps must be >= 1"):
        ch06.with_all_steps("smoke", 0)


# ----------------------------------------------------------------------------- end to end (smoke)

def test_smoke_trainings_generate_cache_and_resume(monkeypatch):
    p = ch06.get_preset("smoke")
    prompts = ["a big red circle moving to the right", "a small blue square moving up"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert ch06.cli_train("smoke") == ch06.checkpoint_path("video", p)
        assert all(common.is_finished(ch06.checkpoint_path(w, p), getattr(p, w).steps) for w in ch06.STAGES)
        codec = ch06.load_vae("smoke", progress=False)
        image = ch06.load_latent("smoke", progress=False)
        video = ch06.load_video("smoke", progress=False)
        dec = ch06.load_decoder("smoke", progress=False)
        assert common.pretrained("ch06.video", "smoke", progress=False).model.cfg == video.model.cfg

        # the scale factor is LDM's, from data; latents decode back through it
        from minivid.data import from_uint8, image_text_pool
        x = from_uint8(image_text_pool(32, p.vae.pool)["x"][:p.vae.scale_batch])
        assert codec.scale == latent_scale_factor(codec.vae.encode(x), generator=make_generator(0))
        z = codec.encode(x[:4], sample=False)
        assert z.shape == (4, 4, 8, 8) and torch.equal(z, codec.scale * codec.vae.encode(x[:4]).mean)
        assert_close(codec.decode(z), codec.vae.decode(codec.vae.encode(x[:4]).mean), atol=1e-5, rtol=1e-5,
                     name="decode(scale * z) = the autoencoder's decode(z)")

        # the frozen weights are untouched by the temporal trainings (raw and averaged), the temporal ones moved
        fresh = ch06.build_video_model(p.video, image.model).state_dict()
        for key in ("model", "ema"):
            trained = torch.load(ch06.checkpoint_path("video", p), weights_only=True)[key]
            assert all(torch.equal(trained[n], w) for n, w in image.model.state_dict().items()), key
            assert any(not torch.equal(trained[n], w) for n, w in fresh.items() if n.startswith("temporal.")), key
        vdec = codec.vae.decoder.state_dict()
        assert all(torch.equal(w, vdec[n[len("decoder."):]]) for n, w in dec.state_dict().items()
                   if n.startswith("decoder."))

        clips, z = ch06.generate(prompts, preset="smoke", steps=2, seed=3, progress=False, return_latents=True)
        assert clips.shape == (2, 3, p.video.frames, 32, 32) and clips.abs().max() <= 1
        assert z.shape == (2, 4, p.video.frames, 8, 8)
        frame, z2 = ch06.generate(prompts, preset="smoke", steps=2, seed=3, progress=False, decoder="frame",
                                  return_latents=True)
        assert torch.equal(z, z2) and not torch.equal(frame, clips), "the same latents, another decoder"
        assert torch.equal(frame, codec.decode(z).clamp(-1, 1))
        assert torch.equal(ch06.cli_generate(prompts, preset="smoke", steps=2, seed=3), clips)
        _, z1 = ch06.generate(prompts, preset="smoke", steps=2, seed=3, progress=False, alpha=1.0, return_latents=True)
        m = motion_channels(p.video)               # the flow is drawn and denoised beside the latents: the image
        frames = lambda x, t, **kw: torch.cat([image.model(x[:, :4], t, **kw), 0 * x[:, 4:]], 1)  # model + any flow
        ref = common.guided_ddim(frames, image.schedule, image.cond, prompts, (4 + m, p.video.frames, 8, 8),
                                 guidance=p.guidance, objective=image.objective, steps=2, seed=3, progress=False,
                                 clip=None)[:, :4]
        assert torch.equal(z1, ref), "alpha = 1 samples the latent image model, frame by frame"
        assert ch06.generate(prompts[:1], preset="smoke", steps=2, frames=6, progress=False).shape[2] == 6
        assert ch06.generate_images(prompts, preset="smoke", steps=2, progress=False).shape == (2, 3, 32, 32)

        # cached: loading and sampling never train
        def no_training(*a, **k):
            raise AssertionError("a cached model must not train")
        with monkeypatch.context() as m:
            m.setattr(common, "train", no_training)
            ch06._CODECS.clear()
            assert torch.equal(ch06.cli_generate(prompts, preset="smoke", steps=2, seed=3), clips)

        # an unfinished checkpoint resumes where it stopped
        path = ch06.checkpoint_path("decoder", p)
        ck = torch.load(path, weights_only=False)
        ck["step"] = 1
        torch.save(ck, path)
        assert not common.is_finished(path, p.decoder.steps)
        _, state = ch06.train_decoder("smoke", progress=False)
        assert state.resumed_from == 1 and state.step == p.decoder.steps


def test_capture_sees_four_trainings_and_what_each_optimises():
    with warnings.catch_warnings(), common.capture_training() as got:
        warnings.simplefilter("ignore")
        ch06.cli_train("smoke")
    setups = {s.desc: s for s in got if s.desc.startswith("ch06")}      # (upstream: ch02 when not cached)
    assert sorted(setups) == sorted(f"ch06 {w} (smoke)" for w in ("image autoencoder", "latent text-to-image U-Net",
                                                                  "temporal alignment layers", "temporal decoder"))
    for desc in ("ch06 temporal alignment layers (smoke)", "ch06 temporal decoder (smoke)"):
        s = setups[desc]
        new = ("temporal.", "extra_io.")        # the temporal layers; the video model's flow input and output
        assert s.trainable and all(n.startswith(new) for n in s.trainable), desc
        assert len(s.trainable) < len(list(s.model.parameters()))
    s = setups["ch06 latent text-to-image U-Net (smoke)"]
    assert len(s.trainable) == len(list(s.model.parameters()))
    b = s.batch_fn(0, make_generator(0))
    assert b["x"].shape == (s.recipe.batch_size, 4, 8, 8) and b["context"].shape[0] == s.recipe.batch_size
    b = setups["ch06 temporal alignment layers (smoke)"].batch_fn(0, make_generator(0))
    assert b["x"].shape[1:] == (4 + 2, ch06.get_preset("smoke").video.frames, 8, 8), "latents and flow"
    assert ch06.CLI.generate is ch06.cli_generate and ch06.CLI.demo_rank == 0 and ch06.CLI.frames == (2, 16)
    full = ch06.get_preset("full")                              # the chapter's shapes: 32x32 -> 8x8, 8 frames
    assert ch06.latent_side(full.vae) == 8 and full.video.frames == full.decoder.frames == 8
