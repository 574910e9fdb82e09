"""The judge: near-perfect on real held-out data, near chance on noise, honest metrics."""
import colorsys
import math

import pytest
import torch

from minivid.compare import assert_close
from minivid.data import COLOR_RGB, WorldConfig, render, sample_batch, sample_params
from minivid.eval import Judge, frechet_distance, hue_to_color
from minivid.eval.frechet import gaussian_frechet, psd_sqrt
from minivid.utils import make_generator

ACCS = ("color_acc", "shape_acc", "size_acc", "motion_acc")


@pytest.fixture(scope="module")
def judge():
    return Judge()


@pytest.mark.parametrize("size,frames,n", [(16, 16, 96), (32, 8, 64)])
def test_real_heldout_clips_are_read_near_perfectly(judge, size, frames, n):
    b = sample_batch(n, kind="video_text", split="heldout", size=size, frames=frames, generator=make_generator(size))
    s = judge.score(b["x"], b["labels"])
    for k in ACCS + ("speed_acc", "validity"):
        assert s[k] >= 0.99, (k, s[k])
    assert s["temporal_consistency"] == 1.0 and s["flicker"] < 0.01
    assert s["per_sample"]["color_correct"].shape == (n,)


@pytest.mark.parametrize("size", [16, 32])
def test_real_heldout_images_are_read_near_perfectly(judge, size):
    b = sample_batch(200, kind="image", split="heldout", size=size, generator=make_generator(size + 1))
    s = judge.score(b["x"], b["labels"])
    assert min(s["color_acc"], s["shape_acc"], s["size_acc"], s["validity"]) >= 0.99, s
    assert "motion_acc" not in s and "flicker" not in s


@pytest.mark.parametrize("noise", ["uniform", "gaussian"])
def test_noise_scores_near_chance_and_is_never_valid(judge, noise):
    b = sample_batch(240, kind="video_text", split="train", frames=8, generator=make_generator(3))
    g = make_generator(4)
    x = torch.rand(b["x"].shape, generator=g) * 2 - 1 if noise == "uniform" else torch.randn(b["x"].shape, generator=g)
    s = judge.score(x, b["labels"])
    chance = {"color_acc": 1 / 6, "shape_acc": 1 / 3, "size_acc": 1 / 2, "motion_acc": 1 / 4, "speed_acc": 1 / 2}
    for k, c in chance.items():
        assert abs(s[k] - c) < 0.12, (k, s[k])  # ~4 binomial standard errors at n = 240
    assert s["validity"] <= 0.01 and s["temporal_consistency"] < 0.6 and s["flicker"] > 0.2


def test_frechet_real_vs_real_is_far_below_real_vs_noise(judge):
    real = [sample_batch(300, kind="video", frames=4, generator=make_generator(i))["x"] for i in (5, 6)]
    noise = torch.rand(real[0].shape, generator=make_generator(7)) * 2 - 1
    rr, rn = judge.frechet(real[0], real[1]), judge.frechet(real[0], noise)
    assert rr < 0.05 and rn > 100 * rr, (rr, rn)
    img = sample_batch(300, kind="image", generator=make_generator(8))["x"]
    assert judge.features(img).shape == (300, 17) and judge.features(real[0]).shape == (300, 38)


def test_robust_to_diffusion_like_artefacts(judge):
    b = sample_batch(96, kind="video_text", split="heldout", size=16, frames=8, generator=make_generator(9))
    g = make_generator(10)
    x = b["x"] * 1.08 + 0.1 * torch.randn(b["x"].shape, generator=g)  # overshoot past [-1, 1], noisy
    x = 0.6 * x + 0.4 * torch.nn.functional.avg_pool3d(x, (1, 3, 3), stride=1, padding=(0, 1, 1))  # soft edges
    s = judge.score(x, b["labels"])
    for k in ACCS + ("validity",):
        assert s[k] >= 0.95, (k, s[k])


def _clip(color, shape, size, direction, speed, frames=8, res=16):
    world = WorldConfig(size=res, frames=frames)
    p = sample_params(1, "train", "video", world, make_generator(0))
    for k, v in dict(color=color, shape=shape, size=size, direction=direction, speed=speed).items():
        p[k] = torch.tensor([v])
    p["r"] = world.radius(p["size"])
    v = world.speed(p["speed"])
    sign = -1.0 if direction in (0, 2) else 1.0
    p["x0"], p["y0"] = torch.tensor([0.5 - sign * v.item() * 3.5 * (direction < 2)]).double(), \
        torch.tensor([0.5 - sign * v.item() * 3.5 * (direction >= 2)]).double()
    p["vx"] = sign * v * (direction < 2)
    p["vy"] = sign * v * (direction >= 2)
    return render(p, world, frames)


@pytest.mark.parametrize("direction", range(4))
@pytest.mark.parametrize("speed", range(2))
def test_each_direction_and_speed(judge, direction, speed):
    x = _clip(color=direction, shape=direction % 3, size=speed, direction=direction, speed=speed)
    p = judge.predict(x)
    assert (p["direction"].item(), p["speed"].item()) == (direction, speed)
    assert (p["color"].item(), p["shape"].item(), p["size"].item()) == (direction, direction % 3, speed)
    assert p["valid"].item() and p["motion_conf"].item() > 0.9
    assert p["centroid"].shape == (1, 8, 2) and p["frame_color"].shape == (1, 8)


def test_motion_plausibility_needs_a_straight_path_at_a_world_speed(judge):
    b = sample_batch(128, kind="video", split="heldout", size=16, frames=8, generator=make_generator(7))
    x = b["x"]
    assert judge.score(x)["motion_plausible"] == 1.0, "every real clip moves like the world"
    assert judge.score(x.flip(2))["motion_plausible"] == 1.0, "played backwards: still a straight path"
    static = x[:, :, :1].expand_as(x).contiguous()
    assert judge.score(static)["motion_plausible"] == 0.0, "a still object does not move"
    shuffled = x[:, :, torch.tensor([0, 5, 2, 7, 1, 6, 3, 4])]
    assert judge.score(shuffled)["motion_plausible"] < 0.2, "frames out of order: no straight path"
    fast = torch.cat([x[:, :, ::2]] * 2, 2)[:, :, :8]          # twice the world's speed, then a jump back
    assert judge.score(fast)["motion_plausible"] < 0.2
    noise = torch.rand(64, 3, 8, 16, 16, generator=make_generator(8)) * 2 - 1
    assert judge.score(noise)["motion_plausible"] < 0.1
    assert judge.score(noise)["valid_motion_plausible"] == 0.0
    assert "motion_plausible" not in judge.score(x[:, :, :1])   # one frame: no motion to judge


def test_motion_plausibility_judges_the_path_and_validity_is_reported_beside_it(judge):
    """A clean moving object with one smeared frame still moves plausibly, but is not a valid clip."""
    x = sample_batch(64, kind="video", split="heldout", size=16, frames=8, generator=make_generator(9))["x"]
    smeared = x.clone()
    smeared[:, :, 3] = (x[:, :, 3].roll(4, -1) + x[:, :, 3].roll(-4, -1)) / 2   # two ghosts, centroid kept
    s = judge.score(smeared)
    assert s["validity"] < 0.2, "one ghosted frame makes a clip invalid"
    assert s["motion_plausible"] > 0.6, "the centroid still travels a straight path at a world speed"
    assert s["valid_motion_plausible"] <= min(s["validity"], s["motion_plausible"])
    assert judge.score(x)["valid_motion_plausible"] == 1.0


def test_broken_clips_lose_consistency_validity_and_gain_flicker(judge):
    real = _clip(0, 0, 1, 1, 0)
    s_real = judge.score(real)
    # colour switches half-way (red -> blue): identity not kept, flicker up
    switch = real.clone()
    switch[:, :, 4:] = torch.stack([-torch.ones_like(real[:, 0, 4:]), -torch.ones_like(real[:, 0, 4:]),
                                    real[:, 0, 4:]], 1)
    s = judge.score(switch)
    assert s["temporal_consistency"] <= 0.5 + 1e-6 and s["flicker"] > 3 * s_real["flicker"]
    # a second object in the frame: no longer "exactly one clean object"
    two = torch.maximum(real, _clip(4, 1, 1, 0, 0).roll(6, dims=-2))
    assert judge.score(two)["validity"] == 0 and s_real["validity"] == 1
    # the wrong colour is read as the wrong colour
    assert judge.score(real, {"color": torch.tensor([2]), "shape": torch.tensor([0]),
                              "size": torch.tensor([1])})["color_acc"] == 0


def test_input_validation(judge):
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        judge.predict(torch.zeros(2, 4, 16, 16))
    with pytest.raises(ValueError, match="H = W"):
        judge.predict(torch.zeros(2, 3, 16, 12))
    with pytest.raises(ValueError, match="8..64"):
        judge.predict(torch.zeros(2, 3, 4, 4))
    with pytest.raises(ValueError, match="float"):
        judge.predict(torch.zeros(1, 3, 16, 16, dtype=torch.uint8))
    with pytest.raises(ValueError, match="NaN"):
        judge.predict(torch.full((1, 3, 16, 16), float("nan")))
    with pytest.raises(ValueError, match="expects 16x16"):
        Judge(size=16).predict(torch.zeros(1, 3, 32, 32))
    one = judge.predict(sample_batch(2, kind="video", frames=1)["x"])  # a 1-frame clip has no motion
    assert (one["direction"] == -1).all()


@pytest.mark.exercise("0.3")
def test_hue_to_color_rule():
    hue, color = hue_to_color(torch.tensor(COLOR_RGB))
    assert_close(hue, torch.tensor([0.0, 60, 120, 180, 240, 300]), atol=1e-4, name="hue")
    assert color.tolist() == list(range(6))
    # bins agree with the HSV hue of colorsys (the 30-degree boundaries coincide)
    rgb = torch.rand(500, 3, generator=make_generator(11))
    ref = [round(colorsys.rgb_to_hsv(*c)[0] * 6) % 6 for c in rgb.tolist()]
    hsv_hue = torch.tensor([colorsys.rgb_to_hsv(*c)[0] * 360 for c in rgb.tolist()])
    clear = ((hsv_hue + 30) % 60 - 30).abs() < 29  # away from a bin boundary
    assert hue_to_color(rgb)[1][clear].tolist() == torch.tensor(ref)[clear].tolist()


@pytest.mark.exercise("0.2")
def test_frechet_distance_closed_forms():
    g = make_generator(12)
    mu_a, mu_b = torch.randn(5, generator=g, dtype=torch.float64), torch.randn(5, generator=g, dtype=torch.float64)
    var_a, var_b = torch.rand(5, generator=g, dtype=torch.float64) + 0.1, torch.rand(5, generator=g, dtype=torch.float64)
    want = ((mu_a - mu_b) ** 2).sum() + ((var_a.sqrt() - var_b.sqrt()) ** 2).sum()  # diagonal: closed form
    assert gaussian_frechet(mu_a, torch.diag(var_a), mu_b, torch.diag(var_b)) == pytest.approx(want.item(), rel=1e-9)
    # full covariances: against the product form tr((A B)^1/2) computed with a general eig
    m = torch.randn(6, 6, generator=g, dtype=torch.float64)
    a, b = m @ m.T + 0.1 * torch.eye(6, dtype=torch.float64), torch.cov(torch.randn(6, 40, generator=g, dtype=torch.float64))
    tr = torch.linalg.eigvals(a @ b).real.clamp_min(0).sqrt().sum()
    want = a.trace() + b.trace() - 2 * tr
    assert gaussian_frechet(torch.zeros(6), a, torch.zeros(6), b) == pytest.approx(want.item(), rel=1e-8)
    assert gaussian_frechet(mu_a, a[:5, :5], mu_a, a[:5, :5]) == pytest.approx(0, abs=1e-8)
    root = psd_sqrt(a)
    assert_close(root @ root, a, atol=1e-10, name="psd_sqrt")
    f = torch.randn(200, 4, generator=g, dtype=torch.float64)
    assert frechet_distance(f, f + 1) == pytest.approx(4.0, rel=1e-9)  # shift by 1 in 4 dims
    with pytest.raises(ValueError, match="feature widths"):
        frechet_distance(f, f[:, :3])


def test_frechet_matches_scipy_sqrtm():
    linalg = pytest.importorskip("scipy.linalg")
    g = make_generator(13)
    fa, fb = torch.randn(300, 8, generator=g, dtype=torch.float64), torch.randn(200, 8, generator=g, dtype=torch.float64) * 1.5
    ca, cb = torch.cov(fa.T).numpy(), torch.cov(fb.T).numpy()
    want = ((fa.mean(0) - fb.mean(0)) ** 2).sum().item() + ca.trace() + cb.trace() - 2 * linalg.sqrtm(ca @ cb).real.trace()
    assert frechet_distance(fa, fb) == pytest.approx(want, rel=1e-7)
    assert math.isfinite(frechet_distance(fa.float(), fb.float()))


def test_score_and_features_share_one_measurement_but_see_edits():
    judge = Judge()
    x = sample_batch(8, kind="video_text", frames=4, generator=make_generator(14))["x"]
    before = judge.predict(x)
    before["color"].fill_(0)  # editing a returned tensor must not touch the judge's memory
    assert judge.predict(x)["color"].tolist() == judge.predict(x.clone())["color"].tolist()
    x.mul_(0).sub_(1)  # in place: now all black, no object
    assert not judge.predict(x)["valid"].any()


def test_direction_splits_into_axis_and_sense(judge):
    """motion_acc = axis accuracy x sense accuracy (given the axis): real clips score 1 on both; the same clips
    played backwards move along the asked axis the opposite way (axis 1, sense 0); rotated a quarter turn, the
    axis is wrong for every clip."""
    b = sample_batch(64, kind="video_text", split="heldout", size=32, frames=8, generator=make_generator(11))
    fwd = judge.score(b["x"], b["labels"])
    back = judge.score(b["x"].flip(2), b["labels"])
    turned = judge.score(b["x"].transpose(-1, -2), b["labels"])   # left/right <-> up/down
    assert fwd["motion_axis_acc"] == 1.0 and fwd["motion_sense_acc"] == 1.0
    assert back["motion_acc"] == 0.0 and back["motion_axis_acc"] == 1.0 and back["motion_sense_acc"] == 0.0
    assert turned["motion_axis_acc"] == 0.0 and "motion_sense_acc" not in turned
    for s in (fwd, back):
        assert s["motion_acc"] == pytest.approx(s["motion_axis_acc"] * s["motion_sense_acc"])
