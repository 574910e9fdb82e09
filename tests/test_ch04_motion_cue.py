"""Chapter 04's motion cue (`VideoRecipe.motion_cue`): the temporal layers also read the clip's velocity, read off
its pixels (`estimate_velocity`), through a zero-init embedding (`UNet2D.add_extra_embedding`); at sampling the
velocity comes from the prompt (`prior_motion`)."""
from dataclasses import replace

import pytest
import torch

from minivid.compare import assert_close
from minivid.data import WorldConfig, estimate_flow, estimate_velocity, render, sample_params, to_uint8
from minivid.diffusion import make_schedule
from minivid.pipelines import ch04
from minivid.utils import make_generator
from tiny_models import randomize, text_features, tiny_image_model

pytestmark = pytest.mark.usefixtures("one_thread")


def test_estimate_velocity_is_the_drawn_velocity_and_the_flow_at_every_covered_pixel():
    world = WorldConfig(size=16, frames=8)
    p = sample_params(32, "train", "video", world, make_generator(6))
    x = render(p, world, 8)
    want = torch.stack([p["vx"], p["vy"]], 1) / (world.speed_fast * world.speed_scale(8))
    v = estimate_velocity(x, world)
    assert v.shape == (32, 2)
    assert_close(v, want.float(), atol=0.02, name="velocity")
    assert_close(estimate_velocity(x.flip(2), world), -v, atol=1e-5, name="played backwards")
    flow = estimate_flow(x, world)                                   # the flow is the velocity where the object is
    cov = ((x + 1) / 2).amax(1, keepdim=True)
    assert_close(flow, cov * v[:, :, None, None, None], atol=1e-5, name="flow = coverage x velocity")


def test_the_extra_embedding_starts_at_zero_then_reaches_the_output_and_trains_with_the_temporal_layers():
    image = tiny_image_model()
    r = replace(ch04.VideoRecipe(), pseudo3d={"attn_levels": (0,)}, motion_cue=True)
    video = ch04.build_video_model(r, image)
    x, t, text = torch.randn(2, 3, 4, 8, 8), torch.tensor([10, 700]), text_features(2)
    v = torch.tensor([[1.0, 0.0], [0.0, -0.5]])
    with torch.no_grad():
        assert torch.equal(video(x, t, **text, extra_emb=v), image(x, t, **text)), "identity at initialisation"
        assert torch.equal(video(x, t, **text), video(x, t, **text, extra_emb=torch.zeros(2, 2)))
    trainable = {n for n, q in video.named_parameters() if q.requires_grad}
    assert {n for n in trainable if n.startswith("extra_emb.")} == {n for n, _ in video.extra_emb.named_parameters(
        prefix="extra_emb")}
    randomize(video.extra_emb, seed=2, scale=0.3)
    with torch.no_grad():
        a, b = video(x, t, **text, extra_emb=v), video(x, t, **text, extra_emb=-v)
    assert (a - b).abs().max() > 1e-3, "a trained embedding changes the clip with the velocity"
    with pytest.raises(ValueError, match="extra_emb"):
        video(x, t, **text, extra_emb=torch.zeros(2, 3))
    with pytest.raises(ValueError, match="extra_emb"):
        image(x[:, :, 0], t, **text, extra_emb=v)


def test_batches_carry_the_played_clips_velocity_and_the_loss_drops_it_with_the_caption():
    world = WorldConfig(size=16, frames=8)
    p = sample_params(8, "train", "video", world, make_generator(3))
    r = replace(ch04.VideoRecipe(), motion_cue=True, time_reversal=0.5)
    data = {"x": to_uint8(render(p, world, 8)), "text": None}
    batch = ch04.make_batch_fn(r, data, batch_size=6)(0, torch.Generator().manual_seed(0))
    assert_close(batch["extra_emb"], estimate_velocity(batch["x"], world), atol=0, name="the velocity as played")
    assert "extra_emb" not in ch04.make_batch_fn(ch04.VideoRecipe(), data, batch_size=6)(0, torch.Generator())
    seen = []

    class Spy(torch.nn.Module):
        def forward(self, x, t, **kw):
            seen.append(kw)
            return torch.zeros_like(x)
    null = {k: v[0] for k, v in text_features(1).items()}
    batch.update({k: v for k, v in text_features(6).items()})
    for p_uncond, dropped in ((1.0, True), (0.0, False)):
        loss = ch04.loss_fn_for(make_schedule("cosine", 100), "v", null, p_uncond)
        loss(Spy(), batch, torch.Generator().manual_seed(0))
        got = seen[-1]["extra_emb"]
        assert torch.equal(got, torch.zeros_like(got) if dropped else batch["extra_emb"])


def test_prior_motion_reads_the_prompts_words_and_draws_a_world_motion_where_none_is_named():
    v = ch04.prior_motion(["a big red circle moving to the left slowly", "the small blue square is heading up "
                           "swiftly", "a red circle"] + ["a red circle"] * 200, frames=8, seed=0)
    assert v.shape == (203, 2)
    assert torch.equal(v[:2], torch.tensor([[-0.5, 0.0], [0.0, -1.0]]))
    rest = v[2:]
    assert set(map(tuple, rest.tolist())) == {(s * a, s * b) for s in (0.5, 1.0)
                                              for a, b in ((1, 0), (-1, 0), (0, 1), (0, -1))}
    same = ["a big red circle moving to the left slowly", "the small blue square is heading up swiftly"]
    same += ["a red circle"] * 201
    assert torch.equal(v, ch04.prior_motion(same, frames=8, seed=0)), "the draw is the seed's"
    assert not torch.equal(v, ch04.prior_motion(same, frames=8, seed=1))
