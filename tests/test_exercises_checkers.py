"""The checkers of chapters 00, 03 and the appendix (minivid.exercises.ch00 / ch03 / appendix), and the
teaching copies that keep the judge, the renderer, the tokenizer and the causal conv off the exercises.

Every test here is marked with the exercise it grades: `python -m minivid exercises check N` runs them.
Each checker passes on the package's solution, and names a typical mistake when given one.
"""
import math

import pytest
import torch
import torch.nn.functional as F

from minivid.compare import assert_close
from minivid.data import COLOR_RGB, sample_batch
from minivid.data.render import _triangle_sdf, sdf_triangle
from minivid.data.world import TRIANGLE_BASE
from minivid.eval.frechet import _frechet_d2, frechet_distance, gaussian_frechet, psd_sqrt
from minivid.eval.measure import _hue_and_color, hue_to_color
from minivid.exercises import appendix, ch00, ch02, ch03
from minivid.ops import CausalConv3d, causal_pad
from minivid.text import Tokenizer, pad_and_mask

# ----------------------------------------------------------------------------- chapter 00


@pytest.mark.exercise("0.1")
def test_triangle_sdf_checker_passes_and_catches_the_unnormalised_side():
    assert ch00.check_triangle_sdf()

    def unnormalised(dx, dy, r):
        b = h = TRIANGLE_BASE * r
        return torch.maximum(dy - h / 2, dx.abs() * h - (dy + h / 2) * (b / 2))

    with pytest.raises(AssertionError, match="length of their normal"):
        ch00.check_triangle_sdf(unnormalised)


@pytest.mark.exercise("0.1")
def test_triangle_sdf_is_the_renderers_and_exact_at_the_edges():
    g = torch.Generator().manual_seed(1)
    dx, dy = torch.rand(2, 500, generator=g, dtype=torch.float64) - 0.5
    r = torch.full((500,), 0.3, dtype=torch.float64)
    assert_close(sdf_triangle(dx, dy, r), _triangle_sdf(dx, dy, r), atol=1e-12, rtol=0,
                 name="sdf_triangle vs the renderer's")
    h = TRIANGLE_BASE * 0.3                                  # the midpoint of the right side, pushed out by 0.05
    n = torch.tensor([h, -h / 2], dtype=torch.float64) / math.hypot(h, h / 2)
    p = torch.tensor([h / 4, 0.0], dtype=torch.float64) + 0.05 * n
    assert float(sdf_triangle(p[0], p[1], torch.tensor(0.3, dtype=torch.float64))) == pytest.approx(0.05, abs=1e-12)


@pytest.mark.exercise("0.2")
def test_frechet_checker_and_the_judge_agree_with_the_exercise():
    assert ch00.check_gaussian_frechet()
    g = torch.Generator().manual_seed(3)
    a = torch.randn(300, 6, generator=g, dtype=torch.float64)
    b = 1.3 * torch.randn(200, 6, generator=g, dtype=torch.float64)
    moments = (a.mean(0), torch.cov(a.T), b.mean(0), torch.cov(b.T))
    assert gaussian_frechet(*moments) == pytest.approx(frechet_distance(a, b), rel=1e-12)
    assert _frechet_d2(*moments) == frechet_distance(a, b)

    def no_sqrt(mu_a, cov_a, mu_b, cov_b):
        root = psd_sqrt(cov_a)
        ev = torch.linalg.eigvalsh(root @ cov_b @ root).clamp_min(0)
        return float((mu_a - mu_b).pow(2).sum() + cov_a.trace() + cov_b.trace() - 2 * ev.sum())

    with pytest.raises(AssertionError, match="without the square root"):
        ch00.check_gaussian_frechet(no_sqrt)


@pytest.mark.exercise("0.3")
def test_hue_checker_and_the_judges_reading_agree_with_the_exercise():
    assert ch00.check_hue_to_color()
    rgb = torch.rand(1000, 3, generator=torch.Generator().manual_seed(5))
    for got, want, name in zip(hue_to_color(rgb), _hue_and_color(rgb), ("hue", "colour id")):
        assert_close(got, want, atol=1e-4, rtol=0, name=f"hue_to_color vs the judge's reading: {name}")

    def in_radians(x):
        r, g, b = x.unbind(-1)
        hue = torch.atan2(math.sqrt(3) * (g - b), 2 * r - g - b) % (2 * math.pi)
        return hue, torch.round(hue / 60).long() % 6

    with pytest.raises(AssertionError, match="radians"):
        ch00.check_hue_to_color(in_radians)
    assert hue_to_color(torch.tensor(COLOR_RGB))[1].tolist() == list(range(6))


# ----------------------------------------------------------------------------- chapter 02 (2.4's teaching copy)

@pytest.mark.exercise("2.4")
def test_pad_and_mask_packs_like_the_tokenizer():
    tok = Tokenizer()
    caps = sample_batch(40, kind="video_text", generator=torch.Generator().manual_seed(0))["captions"] + [""]
    ids, mask = pad_and_mask([tok.tokenize(c) for c in caps], tok.max_len, tok.pad_id)
    want_ids, want_mask = tok.encode(caps)
    assert_close(ids, want_ids, atol=0, rtol=0, name="pad_and_mask ids vs Tokenizer.encode")
    assert_close(mask, want_mask, atol=0, rtol=0, name="pad_and_mask mask vs Tokenizer.encode")
    with pytest.raises(ValueError, match="at most max_len"):
        pad_and_mask([[1, 2, 3]], 2, 0)

    def one_short(rows, max_len, pad_id):
        ids, mask = pad_and_mask(rows, max_len, pad_id)
        return ids, mask & (mask.cumsum(1) < mask.sum(1, keepdim=True))

    with pytest.raises(AssertionError, match="one short"):
        ch02.check_encode(one_short)


# ----------------------------------------------------------------------------- chapter 03

@pytest.mark.exercise("3.1")
def test_space_time_conv_checker():
    assert ch03.check_space_time_conv()


@pytest.mark.exercise("3.2")
def test_temporal_reshape_checker():
    assert ch03.check_temporal_reshape()


@pytest.mark.exercise("3.3")
def test_temporal_mask_checker_catches_swapped_items():
    assert ch03.check_temporal_mask()

    def swapped(image, T):
        return None if image is None else torch.eye(T, dtype=torch.bool) | image[:, None, None]

    with pytest.raises(AssertionError, match="swapped"):
        ch03.check_temporal_mask(swapped)


@pytest.mark.exercise("3.4")
def test_flow_field_checker_catches_frame_units():
    from minivid.data.render import flow_field
    assert ch03.check_flow_field()

    def frame_units(x, direction, speed, world):
        return flow_field(x, direction, speed, world) * world.speed_fast * world.speed_scale(x.shape[2])

    with pytest.raises(AssertionError, match="fast speed"):
        ch03.check_flow_field(frame_units)


# ----------------------------------------------------------------------------- appendix

@pytest.mark.exercise("A.1")
def test_online_softmax_checker():
    assert appendix.check_online_softmax()


@pytest.mark.exercise("A.2")
def test_causal_pad_checker_and_the_conv_pad_alike():
    assert appendix.check_causal_pad()
    conv = CausalConv3d(3, 4).double()
    x = torch.randn(2, 3, 6, 5, 5, dtype=torch.float64)
    y, cache = conv(x)
    assert torch.equal(y, F.conv3d(causal_pad(x, conv.time_pad), conv.conv.weight, conv.conv.bias, padding=(0, 1, 1)))
    y2, _ = conv(x, cache)
    assert torch.equal(y2, F.conv3d(causal_pad(x, conv.time_pad, cache), conv.conv.weight, conv.conv.bias,
                                    padding=(0, 1, 1)))

    def behind(x, time_pad, cache=None):
        return torch.cat([x, x[:, :, :1].expand(-1, -1, time_pad, -1, -1) if cache is None else cache], 2)

    with pytest.raises(AssertionError, match="behind"):
        appendix.check_causal_pad(behind)
