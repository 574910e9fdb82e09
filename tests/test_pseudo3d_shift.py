"""`Pseudo3DConfig.spatial_shift`: a zero-init depthwise space-time conv after each temporal conv of a grown image
model (`ShiftedPseudo3DConv`) - the identity at initialisation, trainable alone, and able to move a feature one pixel
per frame, checked against a float64 shift written with torch.roll."""
import copy

import torch

from minivid.models import UNet2D, unet2d_config
from minivid.models.pseudo3d import Pseudo3DConfig, inflate, temporal_parameters
from minivid.models.temporal import Pseudo3DConv, ShiftedPseudo3DConv


def _image_model():
    torch.manual_seed(0)
    unet = UNet2D(unet2d_config("unet2d-tiny", context_dim=8, pooled_dim=8))
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in unet.parameters():
            p.copy_(0.1 * torch.randn(p.shape, generator=g))
    return unet.eval()


def _text(B, L=5, D=8):
    g = torch.Generator().manual_seed(3)
    return {"context": torch.randn(B, L, D, generator=g), "context_mask": torch.ones(B, L, dtype=torch.bool),
            "pooled": torch.randn(B, D, generator=g)}


def test_at_init_a_shifted_model_is_the_image_model_frame_by_frame_and_only_new_layers_train():
    image = _image_model()
    video = inflate(copy.deepcopy(image), Pseudo3DConfig(spatial_shift=True))
    convs = [m for m in video.modules() if isinstance(m, Pseudo3DConv)]
    assert convs and all(isinstance(m, ShiftedPseudo3DConv) for m in convs)
    x, t, text = torch.randn(2, 3, 5, 8, 8), torch.tensor([10, 700]), _text(2)
    with torch.no_grad():
        assert torch.equal(video(x, t, **text), image(x, t, **text))
    new = {id(p) for p in temporal_parameters(video)}
    shifts = [p for m in convs for p in m.shift.parameters()]
    assert shifts and all(id(p) in new and p.requires_grad for p in shifts)
    assert all(not p.requires_grad for n, p in video.named_parameters() if ".spatial." in n)
    plain = inflate(copy.deepcopy(image), Pseudo3DConfig())
    extra = sum(p.numel() for p in shifts)
    assert extra == sum(p.numel() for p in temporal_parameters(video)) - sum(p.numel() for p in temporal_parameters(plain))


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
