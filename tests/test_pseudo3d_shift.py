"""`Pseudo3DConfig.shift_levels`: a zero-init depthwise space-time conv after each temporal conv of a grown image
model, at the resolution levels chosen (`ShiftedPseudo3DConv`) - the identity at initialisation, trainable alone, and
able to move a feature one pixel per frame, checked against a float64 shift written with torch.roll."""
import copy

import pytest
import torch

from minivid.models.pseudo3d import Pseudo3DConfig, block_level, inflate, temporal_parameters
from minivid.models.temporal import Pseudo3DConv, ShiftedPseudo3DConv
from tiny_models import text_features, tiny_image_model


def test_at_init_a_shifted_model_is_the_image_model_frame_by_frame_and_only_new_layers_train():
    image = tiny_image_model()
    levels = len(image.cfg.channel_mult)
    video = inflate(copy.deepcopy(image), Pseudo3DConfig(shift_levels=tuple(range(levels))))
    convs = [m for m in video.modules() if isinstance(m, Pseudo3DConv)]
    assert convs and all(isinstance(m, ShiftedPseudo3DConv) for m in convs)
    x, t, text = torch.randn(2, 3, 5, 8, 8), torch.tensor([10, 700]), text_features(2)
    with torch.no_grad():
        assert torch.equal(video(x, t, **text), image(x, t, **text))
    new = {id(p) for p in temporal_parameters(video)}
    shifts = [p for m in convs for p in m.shift.parameters()]
    assert shifts and all(id(p) in new and p.requires_grad for p in shifts)
    assert all(not p.requires_grad for n, p in video.named_parameters() if ".spatial." in n)
    plain = inflate(copy.deepcopy(image), Pseudo3DConfig())
    extra = sum(p.numel() for p in shifts)
    grown = sum(p.numel() for p in temporal_parameters(video)) - sum(p.numel() for p in temporal_parameters(plain))
    assert extra == grown


def test_the_shift_conv_moves_a_feature_one_pixel_per_frame_as_a_float64_roll():
    spatial = torch.nn.Conv2d(2, 2, 3, padding=1).double()
    layer = ShiftedPseudo3DConv(spatial, kernel=3).double()
    with torch.no_grad():                                   # channel 0: out[t, y, x] += in[t - 1, y, x - 1]
        layer.shift.weight.zero_()
        layer.shift.weight[0, 0, 0, 1, 0] = 1.0
    x = torch.randn(1, 2, 4, 6, 6, dtype=torch.float64)
    h = layer.temporal(torch.stack([spatial(x[:, :, i]) for i in range(4)], 2))
    want = h.clone()
    moved = torch.roll(h[:, 0], shifts=(1, 1), dims=(1, 3))  # one frame later, one pixel right
    moved[:, 0] = 0                                           # nothing before the first frame (zero padding)
    moved[:, :, :, 0] = 0                                     # nor left of the first column
    want[:, 0] = h[:, 0] + moved
    torch.testing.assert_close(layer(x), want, atol=1e-12, rtol=0)
    image = torch.tensor([True])
    torch.testing.assert_close(layer(x, image), Pseudo3DConv.forward(layer, x, image), atol=0, rtol=0)


def test_shift_levels_choose_which_resolution_levels_get_the_shift_conv():
    image = tiny_image_model()
    video = inflate(copy.deepcopy(image), Pseudo3DConfig(shift_levels=(1,)))
    res = [b for b in video.blocks() if isinstance(getattr(b, "conv1", None), Pseudo3DConv)]
    shifted = {block_level(b.name, video) for b in res if isinstance(b.conv1, ShiftedPseudo3DConv)}
    plain = {block_level(b.name, video) for b in res if not isinstance(b.conv1, ShiftedPseudo3DConv)}
    assert shifted == {1} and 0 in plain
    with pytest.raises(ValueError, match="shift_levels"):
        Pseudo3DConfig(shift_levels=(-1,))
