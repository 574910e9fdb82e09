"""GIF/MP4 writing and reading, grids, inline HTML."""
import imageio.v3 as iio
import numpy as np
import pytest
import torch

from minivid import viz
from minivid.data import sample_batch


@pytest.fixture(scope="module")
def clips():
    return sample_batch(3, kind="video_text", size=16, frames=6, generator=torch.Generator().manual_seed(0))


def test_gif_round_trip_is_exact_to_8_bits(clips, tmp_path):
    path = viz.save_video(clips["x"][0], tmp_path / "c.gif", scale=1)
    back = viz.read_video(path)
    assert back.shape == (3, 6, 16, 16)
    assert (back - clips["x"][0]).abs().max() <= 1 / 127.5 + 1e-6


def test_mp4_has_all_frames_and_padded_size(clips, tmp_path):
    path = viz.save_video(clips["x"], tmp_path / "c.mp4", scale=4)
    frames = iio.imread(path, index=None)
    grid = viz.video_grid(clips["x"], scale=4)
    assert frames.shape[0] == 6
    assert frames.shape[1] % 16 == 0 and frames.shape[2] % 16 == 0
    assert frames.shape[1] >= grid.shape[1] and frames.shape[2] >= grid.shape[2]


def test_grid_layout_and_bad_input(clips):
    g = viz.video_grid(clips["x"], ncols=2, scale=2, pad=1)
    assert g.shape == (6, 2 * 33 + 1, 2 * 33 + 1, 3) and g.dtype == np.uint8
    assert (g[:, 34:, 34:] == 255).all()                 # the 4th cell of a 3-clip grid is empty
    with pytest.raises(ValueError, match=r"\(B,3,T,H,W\)"):
        viz.video_grid(torch.zeros(2, 4, 8, 8))
    with pytest.raises(ValueError, match="unsupported extension"):
        viz.save_video(clips["x"], "x.avi")


def test_html_has_one_gif_and_caption_per_clip(clips):
    html = viz.videos_html(clips["x"], clips["captions"], ncols=2)
    assert html.count("data:image/gif;base64,") == 3 and html.count("<tr>") == 2
    assert clips["captions"][1] in html
    with pytest.raises(ValueError, match="3 clips but 1 captions"):
        viz.videos_html(clips["x"], ["one"])


def test_flow_colours_follow_the_wheel_and_still_pixels_are_black():
    import colorsys

    unit = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0], [0.6, 0.8], [0.0, 0.0], [0.25, 0.0]])
    flow = unit[:, :, None, None].expand(7, 2, 3, 3)                      # (B, 2, H, W): one vector per image
    rgb = (viz.flow_to_rgb(flow)[:, :, 0, 0] + 1) / 2                     # (B, 3) in [0, 1]
    for (fx, fy), got in zip(unit.tolist(), rgb):                          # oracle: the HSV wheel, one pixel at a time
        hue = (np.arctan2(fy, fx) / (2 * np.pi)) % 1.0
        want = colorsys.hsv_to_rgb(hue, 1.0, min(1.0, float(np.hypot(fx, fy))))
        assert np.allclose(got.numpy(), want, atol=1e-6), (fx, fy, got, want)
    assert torch.equal(rgb[5], torch.zeros(3)) and rgb[6].max() == pytest.approx(0.25)
    assert viz.flow_to_rgb(flow[:, :, None].expand(7, 2, 4, 3, 3)).shape == (7, 3, 4, 3, 3)
    with pytest.raises(ValueError, match=r"\(B, 2"):
        viz.flow_to_rgb(torch.zeros(2, 3, 4, 4))


def test_show_frame_rows_aligns_a_shorter_clip_on_every_other_column():
    import matplotlib
    matplotlib.use("Agg")
    from minivid.viz import show_frame_rows
    long, short = torch.rand(3, 8, 4, 4) * 2 - 1, torch.rand(3, 4, 4, 4) * 2 - 1
    fig = show_frame_rows({"16": long, "8": short}, title="t")
    axes = fig.axes
    assert len(axes) == 2 * 8
    drawn = [bool(ax.images) for ax in axes[8:]]
    assert drawn == [True, False] * 4, "the short clip's frame i sits on column 2i"
    img = axes[8 + 2].images[0].get_array()
    assert torch.allclose(torch.as_tensor(img), ((short[:, 1] + 1) / 2).permute(1, 2, 0).float(), atol=1e-6)
