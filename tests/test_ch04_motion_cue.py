"""Chapter 04's motion cue (`VideoRecipe.motion_cue`): the temporal layers also read the clip's velocity, read off
its pixels (`estimate_velocity`), through a zero-init embedding (`UNet2D.add_extra_embedding`); at sampling the
velocity comes from the prompt (`prior_motion`)."""
from dataclasses import replace

import pytest
import torch

from minivid.compare import assert_close
from minivid.data import WorldConfig, estimate_flow, estimate_velocity, render, sample_params, to_uint8
from minivid.diffusion import make_schedule
from minivid.models.temporal import TemporalAttention, along_path
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
        for k in ("extra_emb", "motion"):
            got = seen[-1][k]
            assert torch.equal(got, torch.zeros_like(got) if dropped else batch[k]), k


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
    typo = ch04.prior_motion(["a big red cirlce moving to the left slowly"] + ["a circle moving up and down"] * 50, 8)
    assert torch.equal(typo[0], v[0]), "a misspelt word does not lose the motion the prompt names"
    assert len(set(map(tuple, typo[1:].tolist()))) > 2, "two directions name none: world motions are drawn"


def test_along_path_holds_still_what_moves_at_the_motion_given_against_a_float64_roll():
    T, S = 5, 12
    g = torch.Generator().manual_seed(0)
    frame = torch.randn(2, 3, S, S, generator=g, dtype=torch.float64)
    clip = torch.stack([torch.roll(frame, shifts=(t, -t), dims=(-1, -2)) for t in range(T)], 1)   # right 1, up 1
    folded = clip.reshape(2 * T, 3, S, S)
    assert_close(along_path(folded, torch.zeros(2, 2, dtype=torch.float64), T), folded, atol=1e-12, name="still")
    motion = torch.tensor([[2 / S, -2 / S]] * 2, dtype=torch.float64)          # one pixel a frame, in grid units
    held = along_path(folded, motion, T).reshape(2, T, 3, S, S)
    mid = torch.roll(frame, shifts=(2, -2), dims=(-1, -2))                     # the middle frame (t = 2)
    inner = (slice(None), slice(None), slice(3, S - 3), slice(3, S - 3))       # away from the repeated edges
    for t in range(T):
        assert_close(held[:, t][inner], mid[inner], atol=1e-12, name=f"frame {t} on the middle frame's grid")
    back = along_path(along_path(folded, motion, T), -motion, T).reshape(2, T, 3, S, S)
    assert_close(back[:, 2], clip[:, 2], atol=1e-12, name="-motion undoes it")


def test_aligned_temporal_attention_starts_as_the_identity_and_attends_along_the_path():
    T, S, C = 5, 12, 8
    layer = TemporalAttention("ta", C, 4, 8, 16, aligned=True).double()
    x = torch.randn(2 * T, C, S, S, dtype=torch.float64)
    motion = torch.tensor([[2 / S, 0.0], [0.0, 2 / S]], dtype=torch.float64)
    with torch.no_grad():
        assert torch.equal(layer(x, T, motion=motion), x), "identity at initialisation"
    randomize(layer, seed=4, scale=0.3)
    plain = TemporalAttention("ta", C, 4, 8, 16).double()
    plain.load_state_dict(layer.state_dict())
    with torch.no_grad():
        assert_close(layer(x, T, motion=torch.zeros(2, 2, dtype=torch.float64)), plain(x, T), atol=1e-12,
                     name="no motion: attention at each pixel")
        # a clip that moves along the path gives the still clip's answer, moved along the path (interior pixels)
        still = torch.randn(2, 1, C, S, S, dtype=torch.float64).expand(2, T, C, S, S)
        moving = torch.stack([torch.stack([torch.roll(still[0, t], t, -1), torch.roll(still[1, t], t, -2)])
                              for t in range(T)], 1)                          # item 0 right, item 1 down
        out_still = plain(still.reshape(2 * T, C, S, S), T).reshape(2, T, C, S, S)
        out_moving = layer(moving.reshape(2 * T, C, S, S), T, motion=motion).reshape(2, T, C, S, S)
        want = torch.stack([torch.stack([torch.roll(out_still[0, t], t, -1), torch.roll(out_still[1, t], t, -2)])
                            for t in range(T)], 1)
        inner = (slice(None), slice(None), slice(None), slice(5, S - 5), slice(5, S - 5))
        assert_close(out_moving[inner], want[inner], atol=1e-10, name="attention along the path")
        assert (plain(moving.reshape(2 * T, C, S, S), T).reshape(2, T, C, S, S) - want)[inner].abs().max() > 1e-3
