"""Chapter 04, Make-A-Video (arXiv:2209.14792): the frozen image model grown into a video model, trained on
unlabelled clips only, and the masked frame-interpolation network (smoke size)."""
import copy
import warnings

import pytest
import torch

from minivid.compare import assert_close
from minivid.data import video_pool
from minivid.diffusion import make_schedule
from minivid.models.pseudo3d import (
    FrameInterpolator,
    Pseudo3DConfig,
    inflate,
    interpolation_input,
    interpolation_mask,
    temporal_parameters,
)
from minivid.models.temporal import TemporalAttention
from minivid.pipelines import ch04
from minivid.pipelines.common import guided_ddim
from tiny_models import text_features, tiny_image_model


@pytest.mark.exercise("4.1")
@pytest.mark.exercise("4.2")
@pytest.mark.parametrize("cfg", [Pseudo3DConfig(), Pseudo3DConfig(attn_levels=(0, 1)),
                                 Pseudo3DConfig(attn_levels=(0,), text_cross_attn=True, global_context=True)],
                         ids=["paper", "attn01", "xattn_global"])
def test_at_init_the_video_model_is_the_image_model_frame_by_frame_exactly(cfg):
    image = tiny_image_model()                                    # every weight random: nothing is trivially zero
    video = inflate(copy.deepcopy(image), cfg)
    x, t, text = torch.randn(2, 3, 5, 8, 8), torch.tensor([10, 700]), text_features(2)
    with torch.no_grad():
        per_frame = image(x, t, **text)                       # the 2-D model on a clip: every frame on its own
        frames = torch.stack([image(x[:, :, i], t, **text) for i in range(5)], 2)
        out = video(x, t, **text)
    assert out.abs().mean() > 0.01, "a meaningful comparison needs a non-zero output"
    assert torch.equal(out, per_frame), "pseudo-3-D layers must start as the identity, exactly"
    assert_close(out, frames, atol=1e-6, rtol=1e-6, name="one call per frame (other batch size, same maths)")


def test_attn_levels_add_temporal_attention_after_every_block_of_those_levels():
    image = tiny_image_model()
    paper = inflate(copy.deepcopy(image))
    more = inflate(copy.deepcopy(image), Pseudo3DConfig(attn_levels=(0,)))
    assert set(paper.temporal) < set(more.temporal)
    extra = set(more.temporal) - set(paper.temporal)
    assert extra == {b.name for b in image.blocks() if b.name.startswith(("down0_", "up0_")) and b.name.endswith("_res")}
    with pytest.raises(ValueError, match="attn_levels"):
        Pseudo3DConfig(attn_levels=(-1,))


def test_mixed_noise_recipe_shares_the_starting_noise_of_a_clip_across_frames():
    """Sampling starts from the noise the model was trained on: frames correlated by a^2 / (1 + a^2)."""
    seen = []

    def model(x, t, **kw):
        seen.append(x.clone())
        return torch.zeros_like(x)
    cond = lambda prompts: {}  # noqa: E731
    cond.null = lambda b: {}
    for alpha in (0.0, 1.0):
        seen.clear()
        guided_ddim(model, make_schedule("cosine", 100), cond, [""] * 400, (1, 4, 4, 4), steps=1,
                    objective="eps", progress=False, noise_alpha=alpha, clip=None, batch_size=400)
        x = seen[0].reshape(400, 4, 16).transpose(1, 2).reshape(-1, 4).double()
        corr = torch.corrcoef(x.T)[0, 1].item()
        assert abs(corr - alpha**2 / (1 + alpha**2)) < 0.05, (alpha, corr)
    assert ch04.VideoRecipe().noise_alpha > 0, "the chapter's recipe trains and samples with shared noise"


def test_t_shift_draws_noisier_timesteps_and_at_one_is_the_uniform_draw():
    """loss_fn_for's t_shift: 1 reproduces the loss drawn inside `diffusion_loss` (earlier models' recipe, draw for
    draw); 2 trains at SNR / 4, so the mean timestep moves towards noise."""
    from minivid.diffusion import diffusion_loss, mixed_noise
    from minivid.text import caption_dropout
    schedule = make_schedule("cosine", 1000)
    seen = []

    def net(x, t, **kw):
        seen.append(t.clone())
        return x * 0.5
    null = {"context": torch.zeros(2, 4), "pooled": torch.zeros(4)}
    batch = {"x": torch.randn(64, 3, 4, 4, 4), "context": torch.randn(64, 2, 4), "pooled": torch.randn(64, 4)}
    loss1 = ch04.loss_fn_for(schedule, "v", null, 0.1, 1.0, t_shift=1.0)(net, batch, torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)                       # the same computation, t drawn by diffusion_loss
    noise = mixed_noise(batch["x"].shape, 1.0, g)
    text, _ = caption_dropout({k: batch[k] for k in null}, null, 0.1, generator=g)
    assert torch.equal(loss1, diffusion_loss(net, batch["x"], schedule, "v", generator=g, cond=text, noise=noise))
    assert torch.equal(seen[0], seen[1])
    ch04.loss_fn_for(schedule, "v", null, 0.1, 1.0, t_shift=2.0)(net, batch, torch.Generator().manual_seed(5))
    assert seen[2].float().mean() > seen[0].float().mean() + 50, (seen[0].float().mean(), seen[2].float().mean())
    assert (seen[2] >= seen[0]).all(), "the same uniform draw, each moved to a noisier timestep"
    with pytest.raises(ValueError, match="t_shift"):
        ch04.VideoRecipe(t_shift=0)


@pytest.mark.parametrize("cfg", [Pseudo3DConfig(), Pseudo3DConfig(text_cross_attn=True, global_context=True)],
                         ids=["paper", "xattn_global"])
def test_only_the_temporal_layers_train_and_the_image_weights_stay_bit_identical(cfg):
    image = tiny_image_model()
    video = inflate(copy.deepcopy(image), cfg)
    params = temporal_parameters(video)
    new_ids = {id(p) for p in params}
    assert all((id(p) in new_ids) == p.requires_grad for p in video.parameters())
    names = [n for n, p in video.named_parameters() if p.requires_grad]
    assert names and all(".temporal." in n or n.startswith("temporal.") for n in names), names
    assert sum(p.numel() for p in params) < sum(p.numel() for p in image.parameters())
    before = {n: p.clone() for n, p in video.named_parameters() if not p.requires_grad}
    opt = torch.optim.AdamW(params, lr=1e-2)
    for _ in range(3):
        loss = video(torch.randn(2, 3, 4, 8, 8), torch.tensor([5, 500]), **text_features(2)).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert all(torch.equal(before[n], p) for n, p in video.named_parameters() if n in before)
    moved = [n for n, p in video.named_parameters() if p.requires_grad]
    assert moved, "the temporal layers did train"
    cross = [p for n, p in video.named_parameters() if ".cross.proj_x" in n]
    n_attn = sum(isinstance(m, TemporalAttention) for m in video.modules())
    assert len(cross) == (n_attn if cfg.text_cross_attn else 0), "one cross-attention after each temporal attention"
    assert all(p.abs().sum() > 0 for p in cross), "the cross-attention starts at zero and trains off it"
    glob = [p for n, p in video.named_parameters() if ".glob." in n]
    assert len(glob) == (2 * n_attn if cfg.global_context else 0)           # weight and bias of each
    assert all(p.requires_grad for p in glob)


def test_temporal_attention_reads_text_through_a_zero_init_projection():
    video = inflate(copy.deepcopy(tiny_image_model()), Pseudo3DConfig(temporal_conv=False))
    tattn = next(iter(video.temporal.values()))
    assert tattn.emb is not None and tattn.emb.weight.abs().sum() == 0
    plain = inflate(copy.deepcopy(tiny_image_model()), Pseudo3DConfig(text_in_time=False))
    assert next(iter(plain.temporal.values())).emb is None


@pytest.mark.exercise("4.3")
def test_interpolation_input_and_mask():
    clip = torch.randn(2, 3, 5, 4, 4)
    m = interpolation_mask(5, [0, 2, 4])
    assert m.tolist() == [1, 0, 1, 0, 1]
    inp = interpolation_input(clip, m)
    assert inp.shape == (2, 4, 5, 4, 4)
    assert torch.equal(inp[:, :3, ::2], clip[:, :, ::2]), "known frames pass unchanged"
    assert bool((inp[:, :3, 1::2] == 0).all()), "unknown frames are zeroed: the network must not see them"
    assert bool((inp[:, 3, ::2] == 1).all()) and bool((inp[:, 3, 1::2] == 0).all()), "the mask is a channel"
    per_item = torch.tensor([[1, 1, 1, 0, 0], [1, 0, 1, 0, 1]], dtype=torch.float)
    inp2 = interpolation_input(clip, per_item)
    assert bool((inp2[0, :3, 3:] == 0).all()) and torch.equal(inp2[1, :3, 2], clip[1, :, 2])
    with pytest.raises(ValueError, match="mask must be"):
        interpolation_input(clip, torch.ones(4))
    with pytest.raises(ValueError, match="known frame indices"):
        interpolation_mask(5, [5])


@pytest.mark.exercise("4.3")
def test_the_interpolation_network_starts_as_the_video_model():
    video = inflate(copy.deepcopy(tiny_image_model()))
    interp = FrameInterpolator(copy.deepcopy(video))
    x, t, text = torch.randn(2, 3, 5, 8, 8), torch.tensor([10, 700]), text_features(2)
    known, mask = torch.randn(2, 3, 5, 8, 8), interpolation_mask(5, [0, 4]).expand(2, 5)
    with torch.no_grad():
        assert torch.equal(interp(x, t, known=known, mask=mask, **text), video(x, t, **text))
    trainable = {id(p) for p in temporal_parameters(interp)}
    names = [n for n, p in interp.named_parameters() if id(p) in trainable]
    assert "video.stem.extra.weight" in names and "video.stem.stem.weight" not in names
    with torch.no_grad():                                      # once trained, the known frames matter
        interp.video.stem.extra.weight.normal_()
        a = interp(x, t, known=known, mask=mask, **text)
        b = interp(x, t, known=known.flip(0), mask=mask, **text)
    assert not torch.equal(a, b)
    with pytest.raises(ValueError, match="needs known="):
        interp(x, t, **text)


def test_linear_blend():
    clip = torch.arange(3.0).view(1, 1, 3, 1, 1).expand(1, 2, 3, 2, 2)
    out = ch04.linear_blend(clip)
    assert out.shape == (1, 2, 5, 2, 2) and out[0, 0, :, 0, 0].tolist() == [0, 0.5, 1, 1.5, 2]


def test_unlabelled_pool_has_no_captions_and_pseudo_captions_come_from_the_pixels():
    pool = video_pool(16, 4, 32)
    assert all(c == "" for c in pool["captions"]), "the unlabelled pool carries no text"
    r = ch04.get_preset("smoke").video
    caps = ch04.pseudo_captions(pool["x"], r, progress=False)
    bank = set(ch04.appearance_captions())
    assert len(caps) == 32 and set(caps) <= bank and len(bank) == 31, "one caption per training combination"
    flipped = ch04.pseudo_captions(pool["x"].flip(2), r, progress=False)
    assert flipped == ch04.pseudo_captions(pool["x"][:, :, -1:].expand_as(pool["x"]).contiguous(), r,
                                           progress=False), "read off the first frame only"


def test_the_prior_names_a_prompt_by_the_nearest_appearance_caption_of_any_combination(monkeypatch):
    """prior_captions: cosine similarity in the text tower's space against every combination's caption (held-out
    ones too), normalised both sides; a bag-of-words tower stands in for the mini-CLIP, so the answer is known."""
    from minivid.data import COLORS, SHAPES, SIZES
    from minivid.data.world import all_combos
    from minivid.pipelines import ch04_prior
    bank = ch04.appearance_captions("all")
    assert len(bank) == len(all_combos()) and set(ch04.appearance_captions()) < set(bank)
    assert set(ch04.appearance_captions("heldout")) <= set(bank) and ch04.appearance_captions("heldout")
    words = sorted({w for c in bank for w in c.split()} | {"moving", "to", "the", "left", "quickly"})

    class Tok:
        def encode(self, texts):
            return (torch.tensor([[float(t.split().count(w)) for w in words] for t in texts]),)

    class Clip:
        def encode_text(self, counts):
            return counts * torch.linspace(1, 3, len(words))          # unnormalised: lengths differ per text
    monkeypatch.setattr(ch04_prior, "pretrained", lambda *a, **k: (Tok(), Clip()))
    prompts = [f"the {SIZES[0]} {COLORS[2]} {SHAPES[1]} moving to the left quickly", "a big red circle"]
    want = [f"a {SIZES[0]} {COLORS[2]} {SHAPES[1]}", "a big red circle"]
    assert ch04.prior_captions(prompts, ch04.VideoRecipe(), "clip", progress=False) == want
    assert ch04.prior_captions(prompts, ch04.VideoRecipe(), "parse", progress=False) == want
    # parse: synonyms read by the world's grammar; what it cannot read (an unknown word, a missing attribute) goes to
    # the learned prior, here the bag-of-words tower, which only knows exact words
    said = ["the large scarlet block is heading left swiftly", "a big red circle wobbling", "a red circle"]
    heard = ch04.prior_captions(said, ch04.VideoRecipe(), "parse", progress=False)
    assert heard[0] == "a big red square" and heard[1] == heard[2] == "a big red circle", heard
    with pytest.raises(ValueError, match="prior must be one of"):
        ch04.prior_captions(said, ch04.VideoRecipe(), "oracle")


def test_smoke_train_generate_finetune_interpolate():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, schedule, cond, state = ch04.train_video("smoke", progress=False)
        p = ch04.get_preset("smoke")
        image = ch04.image_model(p.video, progress=False)
        frozen = dict(image.model.named_parameters())
        for n, q in model.named_parameters():            # the image weights inside the video model are untouched
            key = n.replace(".spatial.", ".")
            if key in frozen:
                assert torch.equal(q, frozen[key]), n
        x = ch04.generate(model, schedule, cond, ["a big red circle moving to the left"] * 2, steps=2,
                          frames=p.video.frames, progress=False)
        assert x.shape == (2, 3, p.video.frames, 16, 16) and x.abs().max() <= 1
        again = ch04.cli_generate(["a big red circle moving to the left"] * 2, preset="smoke", steps=2)
        heard = ch04.prior_captions(["a big red circle moving to the left"] * 2, p.video, progress=False)
        moves = ch04.prior_motion(["a big red circle moving to the left"] * 2, p.video.frames, 0)   # the prompt's
        assert p.prior and p.video.motion_cue and torch.equal(again, ch04.generate(
            *ch04.load_video_model("smoke", progress=False), heard, guidance=p.guidance, steps=2,
            frames=p.video.frames, progress=False, motion=moves))
        ft, _, _ = ch04.finetune("smoke", clips=8, progress=False)
        assert any(not torch.equal(a, b) for a, b in zip(ft.parameters(), model.parameters()))
        interp, s2, c2 = ch04.train_interpolator("smoke", progress=False)
        up = ch04.interpolate(interp, s2, c2, x, steps=2)
        assert up.shape == (2, 3, 2 * p.video.frames - 1, 16, 16) and torch.equal(up[:, :, ::2], x)
        ext = ch04.extrapolate(interp, s2, c2, x, extra=2, steps=2)
        assert ext.shape[2] == p.video.frames + 2 and torch.equal(ext[:, :, :p.video.frames], x)


def test_checkpoint_keys_follow_the_frozen_image_model_and_the_conditioning():
    from dataclasses import replace
    p = ch04.get_preset("smoke")
    base = ch04.checkpoint_path("video", p)
    assert ch04.checkpoint_path("video", p, recipe=replace(p.video, conditioning="null")) != base
    assert ch04.checkpoint_path("finetune", p, clips=8) != ch04.checkpoint_path("finetune", p, clips=16)
    with pytest.raises(ValueError, match="conditioning must be"):
        ch04.VideoRecipe(conditioning="text")


def test_motion_channels_start_as_the_image_model_train_alone_and_carry_the_pixels_flow():
    """motion_channels: the grown model also denoises the clip's flow, read off its pixels (no label). At
    initialisation its RGB output is the image model's frame by frame whatever the flow; the flow's layers are
    among the only trainable ones; the batches carry the (played) clip's estimated flow; the interpolation network
    keeps the flow channels and still starts as the video model; sampling returns pixels only."""
    from dataclasses import replace
    from minivid.data import WorldConfig, estimate_flow
    image = tiny_image_model()
    r = replace(ch04.VideoRecipe(), pseudo3d={"attn_levels": (0,)}, motion_channels=True)
    video = ch04.build_video_model(r, image)
    assert ch04.channels(video) == 5 and ch04.channels(ch04.build_video_model(ch04.VideoRecipe(), image)) == 3
    x, t, text = torch.randn(2, 5, 4, 8, 8), torch.tensor([10, 700]), text_features(2)
    with torch.no_grad():
        out = video(x, t, **text)
        assert out.shape == x.shape and torch.equal(out[:, :3], image(x[:, :3], t, **text))
        x2 = x.clone()
        x2[:, 3:] = torch.randn_like(x2[:, 3:])
        assert torch.equal(video(x2, t, **text)[:, :3], out[:, :3]), "the flow input starts at zero"
    names = {n for n, p in video.named_parameters() if p.requires_grad}
    assert any(n.startswith("extra_io.") for n in names) and all(".temporal." in n or n.startswith(
        ("temporal.", "extra_io.")) for n in names), names
    from minivid.data import to_uint8
    data = {"x": to_uint8(torch.rand(6, 3, 8, 16, 16) * 2 - 1), "text": None}
    batch = ch04.make_batch_fn(r, data, batch_size=4)(0, torch.Generator().manual_seed(0))
    assert batch["x"].shape == (4, 5, 8, 16, 16)
    assert torch.equal(batch["x"][:, 3:], estimate_flow(batch["x"][:, :3], WorldConfig(size=16, frames=8)))
    assert ch04.make_batch_fn(ch04.VideoRecipe(), data, batch_size=4)(0, torch.Generator())["x"].shape[1] == 3
    interp = FrameInterpolator(copy.deepcopy(video))
    known, mask = torch.randn(2, 3, 4, 8, 8), interpolation_mask(4, [0, 3]).expand(2, 4)
    with torch.no_grad():
        assert torch.equal(interp(x, t, known=known, mask=mask, **text), video(x, t, **text))
    assert ch04.channels(interp) == 5
    cond = lambda prompts: text_features(len(prompts))                                # noqa: E731  a stand-in conditioner
    cond.null = lambda b: text_features(b)
    clips = ch04.generate(video, make_schedule("cosine", 50), cond, ["a"] * 2, guidance=1.0, steps=2, frames=4,
                          size=8, progress=False)
    assert clips.shape == (2, 3, 4, 8, 8) and clips.abs().max() <= 1


def test_smoke_motion_channels_train_generate_and_interpolate():
    from dataclasses import replace
    base = ch04.get_preset("smoke")
    p = replace(base, video=replace(base.video, motion_channels=True))
    assert ch04.checkpoint_path("video", p) != ch04.checkpoint_path("video", base), "its own cache entry"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, schedule, cond, _ = ch04.train_video(p, progress=False)
        assert ch04.channels(model) == 5
        x = ch04.generate(model, schedule, cond, ["a big red circle"] * 2, steps=2, frames=p.video.frames,
                          progress=False)
        interp, s2, c2 = ch04.train_interpolator(p, progress=False)
        up = ch04.interpolate(interp, s2, c2, x, steps=2)
    assert x.shape == (2, 3, p.video.frames, 16, 16)
    assert up.shape == (2, 3, 2 * p.video.frames - 1, 16, 16) and torch.equal(up[:, :, ::2], x)
