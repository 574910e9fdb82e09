"""The checkers of chapter 04's exercises (minivid.exercises.ch04): each passes on the package's solution, fails
with a diagnosis a learner can act on when given a typical wrong answer, and names its exercise while it is a
stub. Their float64 references are themselves checked against a computation written another way.
"""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from minivid.compare import assert_close
from minivid.exercises import ch04 as ex
from minivid.models.blocks import fold_frames, unfold_frames
from minivid.models.pseudo3d import interpolation_input
from minivid.models.temporal import Pseudo3DConv


def _stub(exercise):
    def fn(*args, **kwargs):
        raise NotImplementedError(f"Exercise {exercise}: write me")
    return fn


# ----------------------------------------------------------------------------- 4.1 the pseudo-3-D conv

@pytest.mark.exercise("4.1")
def test_pseudo3d_checker_passes_on_the_solution_and_its_reference_is_a_conv3d():
    assert ex.check_pseudo3d_conv() is True
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 6, 5, 7, generator=g, dtype=torch.float64)           # (B, C, T, H, W)
    w2, b2 = torch.randn(4, 3, 3, 3, generator=g, dtype=torch.float64), torch.randn(4, generator=g, dtype=torch.float64)
    wt, bt = torch.randn(4, 4, 5, 1, 1, generator=g, dtype=torch.float64), torch.randn(4, generator=g, dtype=torch.float64)
    as_conv3d = F.conv3d(F.conv3d(x, w2[:, :, None], b2, padding=(0, 1, 1)), wt, bt, padding=(2, 0, 0))
    assert_close(ex.pseudo3d_reference(x, w2, b2, wt, bt), as_conv3d, atol=1e-10, rtol=0, name="reference vs Conv3d")
    per_frame = F.conv3d(x, w2[:, :, None], b2, padding=(0, 1, 1))
    mixed = ex.pseudo3d_reference(x, w2, b2, wt, bt, image=[True, False])
    assert_close(mixed[0], per_frame[0], atol=1e-10, rtol=0, name="image item: per frame only")
    assert_close(mixed[1], as_conv3d[1], atol=1e-10, rtol=0, name="clip item")
    with pytest.raises(NotImplementedError, match="Exercise 4.1 is not implemented yet"):
        ex.check_pseudo3d_conv(_stub("4.1"))


@pytest.mark.exercise("4.1")
def test_pseudo3d_checker_does_not_need_exercise_4_2(monkeypatch):
    import minivid.models.temporal as temporal
    monkeypatch.setattr(temporal, "dirac_temporal_conv", _stub("4.2"))
    assert ex.check_pseudo3d_conv() is True


def _temporal_first(self, x, image=None):
    return unfold_frames(self.spatial(fold_frames(self.temporal(x))), x.shape[2])


def _plain_reshape(self, x, image=None):
    B, C, T, H, W = x.shape
    h = self.spatial(x.reshape(B * T, C, H, W)).reshape(B, -1, T, H, W)      # frames and channels swapped
    out = self.temporal(h)
    return out if image is None else torch.where(image[:, None, None, None, None], h, out)


def _spatial_only(self, x, image=None):
    return unfold_frames(self.spatial(fold_frames(x)), x.shape[2])


def _images_through_time(self, x, image=None):
    return self.temporal(unfold_frames(self.spatial(fold_frames(x)), x.shape[2]))


def _where_swapped(self, x, image=None):
    h = unfold_frames(self.spatial(fold_frames(x)), x.shape[2])
    out = self.temporal(h)
    return out if image is None else torch.where(image[:, None, None, None, None], out, h)


def _output_not_unfolded(self, x, image=None):
    B, C, T, H, W = x.shape
    return self.spatial(fold_frames(x)).reshape(B, T, -1, H, W)


@pytest.mark.exercise("4.1")
@pytest.mark.parametrize("wrong, says", [
    (_temporal_first, "temporal conv ran before the spatial one"),
    (_plain_reshape, "frames and channels swapped in a reshape"),
    (_spatial_only, "only the per-frame 2-D conv ran"),
    (_images_through_time, "image items went through the temporal conv too"),
    (_where_swapped, "clips and images are swapped"),
    (_output_not_unfolded, "frames and channels are swapped in the output"),
], ids=lambda v: getattr(v, "__name__", "")[1:] if callable(v) else "")
def test_pseudo3d_checker_catches_typical_mistakes(wrong, says):
    assert ex.check_pseudo3d_conv()                  # the solution passes ...
    with pytest.raises(AssertionError, match=f"Exercise 4.1 .*(?s:.*){says}"):
        ex.check_pseudo3d_conv(wrong)                # ... the typical mistake does not


@pytest.mark.exercise("4.1")
def test_pseudo3d_checker_probes_a_mistake_it_has_no_name_for():
    def frames_rolled(self, x, image=None):                                  # frames shuffled before the conv
        return Pseudo3DConv.forward(self, x.roll(1, dims=2), image)

    with pytest.raises(AssertionError, match="moved output frames"):
        ex.check_pseudo3d_conv(frames_rolled)


# ----------------------------------------------------------------------------- 4.2 the Dirac initialisation

def _conv(c, k):
    return nn.Conv3d(c, c, (k, 1, 1), padding=(k // 2, 0, 0))


def _zeros(c, k):
    conv = _conv(c, k)
    with torch.no_grad():
        conv.weight.zero_()
        conv.bias.zero_()
    return conv


def _first_tap(c, k):
    conv = _zeros(c, k)
    with torch.no_grad():
        conv.weight[:, :, 0, 0, 0] = torch.eye(c)
    return conv


def _bias_kept(c, k):
    conv = _conv(c, k)
    with torch.no_grad():
        nn.init.dirac_(conv.weight)
    return conv


def _no_grad_forgotten(c, k):
    conv = _conv(c, k)
    nn.init.dirac_(conv.weight)
    conv.bias.zero_()                                     # in place on a leaf that requires grad: RuntimeError
    return conv


def _frozen(c, k):
    conv = _bias_kept(c, k)
    with torch.no_grad():
        conv.bias.zero_()
    return conv.requires_grad_(False)


def _all_channels(c, k):
    conv = _zeros(c, k)
    with torch.no_grad():
        conv.weight[:, :, k // 2] = 1.0
    return conv


@pytest.mark.exercise("4.2")
def test_dirac_checker_passes_on_the_solution_and_names_a_stub():
    assert ex.check_dirac_init() is True
    with pytest.raises(NotImplementedError, match="Exercise 4.2 is not implemented yet"):
        ex.check_dirac_init(_stub("4.2"))


@pytest.mark.exercise("4.2")
@pytest.mark.parametrize("wrong, says", [
    (_zeros, "all zeros"),
    (_first_tap, "identity sits on tap 0 of 0..2: output frame t copies input frame t-1"),
    (_bias_kept, "bias is not zero"),
    (_no_grad_forgotten, "torch.no_grad"),
    (_frozen, "trainable"),
    (_all_channels, "sums all input channels"),
], ids=lambda v: getattr(v, "__name__", "")[1:] if callable(v) else "")
def test_dirac_checker_catches_typical_mistakes(wrong, says):
    assert ex.check_dirac_init()                     # the solution passes ...
    with pytest.raises(AssertionError, match=f"Exercise 4.2 .*(?s:.*){says}"):
        ex.check_dirac_init(wrong)                   # ... the typical mistake does not


# ----------------------------------------------------------------------------- 4.3 the interpolation input

def _m(known, mask):
    B, C, T, H, W = known.shape
    return mask.to(known).expand(B, T)[:, None, :, None, None]                # (B, 1, T, 1, 1)


def _not_zeroed(known, mask):
    m = _m(known, mask)
    return torch.cat([known, m.expand(-1, -1, -1, *known.shape[3:])], 1)


def _no_mask_channel(known, mask):
    return known * _m(known, mask)


def _inverted_channel(known, mask):
    m = _m(known, mask)
    return torch.cat([known * m, (1 - m).expand(-1, -1, -1, *known.shape[3:])], 1)


def _mask_first(known, mask):
    m = _m(known, mask)
    return torch.cat([m.expand(-1, -1, -1, *known.shape[3:]), known * m], 1)


def _first_items_mask_for_all(known, mask):
    B, C, T, H, W = known.shape
    m = mask.to(known).reshape(-1, T)[:1].expand(B, T)[:, None, :, None, None]   # item 0's mask for every item
    return torch.cat([known * m, m.expand(B, 1, T, H, W)], 1)


@pytest.mark.exercise("4.3")
def test_interpolation_checker_passes_on_the_solution_and_its_reference_agrees():
    assert ex.check_interpolation_input() is True
    known = torch.randn(3, 2, 4, 3, 5, dtype=torch.float64)
    mask = torch.tensor([[1.0, 0, 0, 1], [1, 1, 0, 0], [0, 1, 1, 1]], dtype=torch.float64)
    want = torch.cat([known * mask[:, None, :, None, None], mask[:, None, :, None, None].expand(3, 1, 4, 3, 5)], 1)
    assert torch.equal(ex.interpolation_input_reference(known, mask), want)
    assert torch.equal(interpolation_input(known, mask), want)
    with pytest.raises(NotImplementedError, match="Exercise 4.3 is not implemented yet"):
        ex.check_interpolation_input(_stub("4.3"))


@pytest.mark.exercise("4.3")
@pytest.mark.parametrize("wrong, says", [
    (_not_zeroed, "frames to fill in still hold their pixels"),
    (_no_mask_channel, "mask channel is missing"),
    (_inverted_channel, "mask channel is inverted"),
    (_mask_first, "mask channel comes first"),
    (_first_items_mask_for_all, r"one per item - came out wrong"),
], ids=lambda v: getattr(v, "__name__", "")[1:] if callable(v) else "")
def test_interpolation_checker_catches_typical_mistakes(wrong, says):
    assert ex.check_interpolation_input()            # the solution passes ...
    with pytest.raises(AssertionError, match=f"Exercise 4.3 .*(?s:.*){says}"):
        ex.check_interpolation_input(wrong)          # ... the typical mistake does not
