"""Shapes World: geometry, splits, determinism, captions, Datasets and the cache."""
import colorsys
import math

import pytest
import torch

from minivid.data import (
    COLOR_RGB,
    COLORS,
    DIRECTIONS,
    REVERSED_DIRECTION,
    SHAPES,
    SIZES,
    SPEEDS,
    VOCAB,
    ImageTextDataset,
    VideoDataset,
    VideoTextDataset,
    WorldConfig,
    all_captions,
    collate,
    combos,
    coverage,
    estimate_flow,
    flow_field,
    from_uint8,
    is_heldout,
    make_loader,
    materialize_split,
    parse_caption,
    render,
    sample_batch,
    sample_params,
    to_uint8,
    velocity,
)
from minivid.data.render import coverage_reference, sdf_triangle
from minivid.data.world import HALF_EXTENT
from minivid.compare import assert_close
from minivid.utils import cache_dir, make_generator

KINDS = ("image", "video", "video_text")


def test_config_rejects_sizes_and_lengths_out_of_range():
    for bad in (7, 65, 16.0):
        with pytest.raises(ValueError, match="size"):
            WorldConfig(size=bad)
    for bad in (0, 33):
        with pytest.raises(ValueError, match="frames"):
            sample_batch(2, kind="video", frames=bad)
    with pytest.raises(ValueError, match="kind"):
        sample_batch(2, kind="audio")
    with pytest.raises(ValueError, match="split"):
        sample_batch(2, split="test")


@pytest.mark.parametrize("kind", KINDS)
def test_sample_batch_shapes_ranges_and_labels(kind):
    b = sample_batch(32, kind=kind, size=12, frames=5, generator=make_generator(0))
    shape = (32, 3, 12, 12) if kind == "image" else (32, 3, 5, 12, 12)
    assert b["x"].shape == shape and b["x"].dtype == torch.float32
    assert b["x"].min() >= -1 and b["x"].max() <= 1
    assert b["x"].amin((1, -2, -1)).max() == -1  # black background in every frame
    assert len(b["captions"]) == 32
    assert all(c == "" for c in b["captions"]) == (kind == "video")
    lab = b["labels"]
    assert set(lab) == {"color", "shape", "size", "direction", "speed"}
    assert all(v.dtype == torch.long and v.shape == (32,) for v in lab.values())
    if kind == "image":
        assert (lab["direction"] == -1).all() and (lab["speed"] == -1).all()
    else:
        assert lab["direction"].min() >= 0 and lab["direction"].max() < len(DIRECTIONS)
    again = sample_batch(32, kind=kind, size=12, frames=5, generator=make_generator(0))
    assert torch.equal(b["x"], again["x"]) and b["captions"] == again["captions"]


def test_colours_are_far_apart_in_rgb_and_hue():
    rgb = torch.tensor(COLOR_RGB)
    d = torch.cdist(rgb, rgb) + 10 * torch.eye(len(COLORS))
    assert d.min() >= 1.0 - 1e-6
    hues = sorted(colorsys.rgb_to_hsv(*c)[0] * 360 for c in COLOR_RGB)
    assert hues == pytest.approx([0, 60, 120, 180, 240, 300])
    assert all(max(c) == 1.0 for c in COLOR_RGB)  # value 1 on every colour: the judge's mask


def test_heldout_combos_are_excluded_from_every_training_kind():
    held, train = combos("heldout"), combos("train")
    assert len(held) == 5 and len(train) == 31 and torch.equal(train, combos("val"))
    assert 0.10 <= len(held) / 36 <= 0.15
    for kind in KINDS:
        for split in ("train", "val"):
            lab = sample_batch(800, kind=kind, split=split, size=8, frames=1, generator=make_generator(1))["labels"]
            assert not is_heldout(lab["color"], lab["shape"], lab["size"]).any(), (kind, split)
        lab = sample_batch(100, kind=kind, split="heldout", size=8, frames=1, generator=make_generator(2))["labels"]
        assert is_heldout(lab["color"], lab["shape"], lab["size"]).all()
    lab = VideoTextDataset("train", 800, size=8, frames=1, materialize=True).data["labels"]
    assert not is_heldout(lab["color"], lab["shape"], lab["size"]).any()
    # every value of every attribute is still seen in training, and all 31 train combos occur
    lab = sample_params(3000, "train", "video", WorldConfig(), make_generator(3))
    seen = {tuple(t) for t in torch.stack([lab["color"], lab["shape"], lab["size"]], 1).tolist()}
    assert seen == {tuple(t) for t in train.tolist()}


def test_val_is_a_different_sample_of_the_same_combos():
    a = ImageTextDataset("train", 50, seed=0, materialize=True).data
    b = ImageTextDataset("val", 50, seed=0, materialize=True).data
    assert not torch.equal(a["x"], b["x"])


def _area_and_centroid(cov, size):
    grid = (torch.arange(size, dtype=torch.float64) + 0.5) / size
    area = cov.sum((-2, -1))
    return area, (cov.sum(-2) * grid).sum(-1) / area, (cov.sum(-1) * grid).sum(-1) / area


@pytest.mark.parametrize("frames", [16, 32])
def test_motion_is_linear_at_the_drawn_speed_and_stays_inside(frames):
    world = WorldConfig(size=24, frames=frames)
    p = sample_params(160, "train", "video", world, make_generator(4))
    x = render(p, world, frames)  # (N, 3, T, S, S)
    t = torch.arange(frames, dtype=torch.float64)
    ext = torch.tensor(HALF_EXTENT, dtype=torch.float64)[p["shape"]] * p["r"]
    for c0, vel in (("x0", "vx"), ("y0", "vy")):  # bounding box inside the frame at every t
        pos = p[c0][:, None] + p[vel][:, None] * t
        assert (pos - ext[:, None]).min() >= 0 and (pos + ext[:, None]).max() <= 1
    v = (x.amax(1) + 1) / 2  # value = coverage; a clipped object would lose area below
    area, cx, cy = _area_and_centroid(v.double(), 24)
    assert_close(area / 24**2, math.pi * p["r"][:, None].expand_as(area) ** 2, rtol=0.02, atol=0, name="area")
    speed = world.speed(p["speed"], frames)
    step = torch.stack([cx.diff(dim=1).mean(1), cy.diff(dim=1).mean(1)], 1)
    sign = torch.tensor([[-1, 0], [1, 0], [0, -1], [0, 1]], dtype=torch.float64)[p["direction"]]
    assert_close(step, sign * speed[:, None], atol=2e-3, name="per-frame displacement")
    assert world.speed_scale(16) == 1.0 and world.speed_scale(32) < 1.0


@pytest.mark.exercise("3.4")
@pytest.mark.parametrize("frames", [8, 32])
def test_flow_field_moves_the_object_pixels_at_the_clip_velocity(frames):
    world = WorldConfig(size=24, frames=frames)
    p = sample_params(64, "train", "video", world, make_generator(5))
    x = render(p, world, frames)                                                # (N, 3, T, S, S)
    flow = flow_field(x, p["direction"], p["speed"], world)                     # (N, 2, T, S, S)
    assert flow.shape == (64, 2, frames, 24, 24) and flow.abs().max() <= 1
    unit = world.speed_fast * world.speed_scale(frames)
    vel = torch.stack([p["vx"], p["vy"]], 1) / unit                            # (N, 2), drawn by the world
    assert_close(torch.stack(velocity(p["direction"], p["speed"], world), 1) / unit, vel, atol=1e-12,
                 name="velocity() = the drawn velocity")
    cov = (x.amax(1) + 1) / 2                                                   # (N, T, S, S)
    full, empty = cov > 0.999, cov < 1e-6
    per_pixel = vel[:, :, None, None, None].expand_as(flow).float()
    assert_close(flow[full[:, None].expand_as(flow)], per_pixel[full[:, None].expand_as(flow)], atol=1e-3,
                 name="flow on fully covered pixels")
    assert flow[empty[:, None].expand_as(flow)].abs().max() == 0                # the background stands still
    # the coverage-weighted mean flow of frame t predicts where the centroid is at t + 1 (measured on pixels)
    _, cx, cy = _area_and_centroid(cov.double(), 24)
    mean_flow = (flow.double() * cov[:, None]).sum((-2, -1)) / (cov[:, None] ** 2).sum((-2, -1)).double()
    step = torch.stack([cx.diff(dim=1), cy.diff(dim=1)], 1) / unit             # (N, 2, T - 1)
    assert_close(step.mean(-1), mean_flow[:, :, :-1].mean(-1), atol=0.03, name="mean centroid step vs flow")
    # played backwards with the direction flipped: the flow reverses in time and in sign
    back = flow_field(x.flip(2), REVERSED_DIRECTION[p["direction"]], p["speed"], world)
    assert_close(back, -flow.flip(2), atol=0, name="reversed flow")


def test_estimate_flow_reads_the_drawn_velocity_off_the_pixels():
    """The flow of unlabelled clips, from their pixels: on rendered clips (float and uint8) it is the coverage times
    the velocity the world drew (independent of flow_field, an exercise), still clips have none, and a clip played
    backwards has the negated flow reversed in time."""
    world = WorldConfig(size=16, frames=8)
    p = sample_params(64, "train", "video", world, make_generator(6))
    x = render(p, world, 8)                                                     # (N, 3, T, S, S)
    unit = world.speed_fast * world.speed_scale(8)
    vel = torch.stack([p["vx"], p["vy"]], 1) / unit                            # (N, 2)
    cov = ((x + 1) / 2).amax(1, keepdim=True)
    for clips in (x, from_uint8(to_uint8(x))):
        est = estimate_flow(clips, world)
        assert est.shape == (64, 2, 8, 16, 16) and est.dtype == clips.dtype
        assert_close(est, (cov * vel[:, :, None, None, None]).to(est.dtype), atol=0.02, name="estimated flow")
        assert_close(estimate_flow(clips.flip(2), world), -est.flip(2), atol=1e-5, name="played backwards")
    still = x[:, :, :1].expand(-1, -1, 8, -1, -1)
    assert estimate_flow(still, world).abs().max() < 1e-6
    with pytest.raises(ValueError, match="clips"):
        estimate_flow(x[:, :, 0], world)


def test_flow_field_of_still_images_is_zero_and_bad_shapes_are_refused():
    world = WorldConfig(size=16, frames=4)
    x = sample_batch(3, kind="image", size=16)["x"][:, :, None].expand(3, 3, 4, 16, 16)
    minus = torch.full((3,), -1, dtype=torch.long)
    assert flow_field(x, minus, minus, world).abs().max() == 0
    with pytest.raises(ValueError, match="clips"):
        flow_field(x[:, :, 0], minus, minus, world)
    with pytest.raises(ValueError, match="direction and speed"):
        flow_field(x, minus[:2], minus, world)


@pytest.mark.parametrize("shape", [0, 1])
def test_circle_and_square_coverage_match_a_naive_supersampled_reference(shape):
    r, cx, cy = 0.3, 0.47, 0.52
    got = coverage(torch.tensor([shape]), torch.tensor([cx]).double(), torch.tensor([cy]).double(),
                   torch.tensor([r]).double(), 12, supersample=2)[0]
    ref = coverage_reference(shape, cx, cy, r, 12)
    assert (got.double() - ref).abs().mean() < 0.01 and (got.double() - ref).abs().max() < 0.12


@pytest.mark.exercise("0.1")
def test_triangle_sdf_and_coverage():
    r = torch.tensor(0.3)
    h = math.sqrt(2 * math.pi) * 0.3
    # sign: centre and centroid inside, apex and base corners on the boundary, far points outside
    pts = torch.tensor([[0, 0], [0, h / 6], [0, -h / 2], [h / 2, h / 2], [0, h], [h, 0], [0, -h]])
    d = sdf_triangle(pts[:, 0], pts[:, 1], r)
    assert (d[:2] < 0).all() and d[2:4].abs().max() < 1e-6 and (d[4:] > 0).all()
    assert d[4] == pytest.approx(h / 2, abs=1e-6)  # straight below the base: plain distance
    got = coverage(torch.tensor([2]), torch.tensor([0.5]).double(), torch.tensor([0.46]).double(),
                   torch.tensor([0.3]).double(), 12)[0]
    ref = coverage_reference(2, 0.5, 0.46, 0.3, 12)
    assert (got.double() - ref).abs().mean() < 0.01 and (got.double() - ref).abs().max() < 0.15
    assert got.sum() / 144 == pytest.approx(math.pi * 0.09, rel=0.02)  # equal area to the circle


def test_captions_are_closed_parseable_and_match_labels():
    for kind in ("image", "video_text"):
        b = sample_batch(300, kind=kind, frames=3, generator=make_generator(5))
        for cap, i in zip(b["captions"], range(300)):
            assert set(cap.split()) <= set(VOCAB), cap
            got = parse_caption(cap)
            assert got == {k: int(v[i]) for k, v in b["labels"].items()}, cap
    # the vocabulary is exactly the words that some caption uses
    words = set()
    for c, s, z, d, v in zip(COLORS, SHAPES * 2, SIZES * 3, DIRECTIONS + ("up", "down"), SPEEDS * 3):
        words |= {w for cap in all_captions(c, s, z) + all_captions(c, s, z, d, v) for w in cap.split()}
    assert words == set(VOCAB) and list(VOCAB) == sorted(VOCAB)
    assert len(set(all_captions("red", "circle", "big"))) >= 3 ** 3
    with pytest.raises(ValueError, match="vocabulary"):
        parse_caption("a big red hexagon")


def test_parse_caption_can_skip_the_words_it_does_not_know():
    """A typed prompt (`unknown="skip"`) keeps the words the world knows; a caption (the default) is strict."""
    want = {"color": COLORS.index("red"), "shape": -1, "size": -1, "direction": DIRECTIONS.index("up"), "speed": -1}
    assert parse_caption("a red elefant moving up", unknown="skip") == want
    with pytest.raises(ValueError, match="not in the Shapes World vocabulary"):
        parse_caption("a red elefant moving up")
    with pytest.raises(ValueError, match="two values of direction"):
        parse_caption("a red elefant moving up and down", unknown="skip")
    with pytest.raises(ValueError, match="unknown must be"):
        parse_caption("a red circle", unknown="ignore")


def test_dataset_items_depend_only_on_split_index_and_seed():
    lazy = VideoTextDataset("train", 40, size=12, frames=4, seed=7)
    big = VideoTextDataset("train", 200, size=12, frames=4, seed=7, materialize=True)
    other = VideoTextDataset("train", 40, size=12, frames=4, seed=8)
    for i in (39, 0, 13):
        a, b = lazy[i], big[i]
        assert torch.equal(a["x"], b["x"]) and a["caption"] == b["caption"] and a["labels"] == b["labels"]
    assert not torch.equal(lazy[0]["x"], other[0]["x"])
    assert lazy[0]["x"].shape == (3, 4, 12, 12) and lazy[-1]["caption"] == big[39]["caption"]
    with pytest.raises(IndexError):
        lazy[40]
    img = ImageTextDataset("heldout", 5)[0]
    assert img["x"].shape == (3, 16, 16) and img["labels"]["direction"] == -1
    assert VideoDataset("train", 5)[1]["caption"] == ""


def test_collate_and_loader():
    ds = ImageTextDataset("train", 10, size=8)
    batch = collate([ds[i] for i in range(4)])
    assert batch["x"].shape == (4, 3, 8, 8) and len(batch["captions"]) == 4
    assert batch["labels"]["color"].dtype == torch.long and batch["labels"]["color"].shape == (4,)
    first = [next(iter(make_loader(ds, batch_size=5, seed=1)))["captions"] for _ in range(2)]
    assert first[0] == first[1]


def test_cache_is_checked_and_rebuilt_when_corrupt_or_stale(capsys):
    world = WorldConfig(size=8, frames=3)
    fresh = materialize_split("video_text", "val", 20, seed=11, world=world)
    files = list(cache_dir("datasets/cache").glob("video_text-val-n20-seed11-*.pt"))
    assert len(files) == 1
    again = materialize_split("video_text", "val", 20, seed=11, world=world)
    assert "rebuilding" not in capsys.readouterr().out and torch.equal(again["x"], fresh["x"])
    # corrupt: flip bytes in the middle of the file
    raw = bytearray(files[0].read_bytes())
    raw[len(raw) // 2: len(raw) // 2 + 64] = bytes(64)
    files[0].write_bytes(bytes(raw))
    rebuilt = materialize_split("video_text", "val", 20, seed=11, world=world)
    assert "corrupt" in capsys.readouterr().out
    assert torch.equal(rebuilt["x"], fresh["x"]) and rebuilt["captions"] == fresh["captions"]
    # stale: a file whose recorded config hash does not match
    blob = torch.load(files[0], weights_only=True)
    blob["config_hash"] = "0" * 16
    torch.save(blob, files[0])
    materialize_split("video_text", "val", 20, seed=11, world=world)
    assert "stale" in capsys.readouterr().out
    assert materialize_split("video_text", "val", 20, seed=11, world=world)["captions"] == fresh["captions"]
    assert "rebuilding" not in capsys.readouterr().out


def test_dataloader_renders_batches_in_one_call_with_the_same_items():
    ds = VideoTextDataset("val", n=40, frames=4)
    batch = next(iter(make_loader(ds, batch_size=16, shuffle=False)))
    assert batch["x"].shape == (16, 3, 4, 16, 16)
    for i in (0, 7, 15):
        assert torch.equal(batch["x"][i], ds[i]["x"]) and batch["captions"][i] == ds[i]["caption"]
        assert all(int(batch["labels"][k][i]) == v for k, v in ds[i]["labels"].items())
    with pytest.raises(IndexError, match="out of range"):
        ds.__getitems__([0, 40])
