"""Visualisation: inline video grids in Jupyter, GIF/MP4 files, and the course's matplotlib plots.

Tensors follow the course convention: images (B, 3, H, W) or video (B, 3, T, H, W), values in
[-1, 1]. GIFs are written with imageio's pillow plugin, MP4 with imageio-ffmpeg.
"""
from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import torch


def _as_video(x: torch.Tensor) -> torch.Tensor:
    """(B,3,H,W) | (B,3,T,H,W) | (3,T,H,W) | (3,H,W) -> (B, 3, T, H, W) float on CPU."""
    x = torch.as_tensor(x).detach().float().cpu()
    if x.dim() == 3:
        x = x[None, :, None]
    elif x.dim() == 4:
        x = x[:, :, None] if x.shape[1] == 3 else x[None]
    if x.dim() != 5 or x.shape[1] != 3:
        raise ValueError(f"expected images (B,3,H,W) or video (B,3,T,H,W), got shape {tuple(x.shape)}")
    return x


def to_uint8_frames(x: torch.Tensor, scale: int = 1) -> np.ndarray:
    """One clip (3, T, H, W) or (3, H, W) in [-1, 1] -> (T, H*scale, W*scale, 3) uint8 (nearest upscaling)."""
    v = _as_video(x)
    if v.shape[0] != 1:
        raise ValueError(f"to_uint8_frames takes one clip, got a batch of {v.shape[0]}; use video_grid")
    frames = ((v[0].clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 3, 0)  # (T, H, W, 3)
    if scale > 1:
        frames = frames.repeat_interleave(scale, 1).repeat_interleave(scale, 2)
    return frames.numpy()


def video_grid(x: torch.Tensor, ncols: int | None = None, scale: int = 4, pad: int = 2) -> np.ndarray:
    """A batch of clips -> one grid clip (T, H', W', 3) uint8, clips laid out row-major with gaps."""
    v = _as_video(x)
    B, _, T, H, W = v.shape
    pad = 0 if B == 1 else pad
    ncols = ncols or min(B, 8)
    nrows = -(-B // ncols)
    h, w = H * scale, W * scale
    grid = np.full((T, nrows * (h + pad) + pad, ncols * (w + pad) + pad, 3), 255, np.uint8)
    for i in range(B):
        r, c = divmod(i, ncols)
        y0, x0 = pad + r * (h + pad), pad + c * (w + pad)
        grid[:, y0:y0 + h, x0:x0 + w] = to_uint8_frames(v[i], scale)
    return grid


def save_video(x: torch.Tensor, path: str | Path, fps: int = 8, scale: int = 4, ncols: int | None = None) -> Path:
    """Write one clip or a batch (as a grid) to .gif or .mp4, chosen by the file extension."""
    path = Path(path)
    ext = path.suffix.lower()
    if ext not in (".gif", ".mp4"):
        raise ValueError(f"save_video: unsupported extension {ext!r} for {path}; use .gif or .mp4")
    frames = video_grid(x, ncols=ncols, scale=scale)
    path.parent.mkdir(parents=True, exist_ok=True)
    if ext == ".gif":
        iio.imwrite(path, frames, extension=".gif", duration=1000 / fps, loop=0)
    else:
        # H.264 wants even sizes; pad to a multiple of 16 (the encoder's macro block)
        T, H, W, _ = frames.shape
        ph, pw = -H % 16, -W % 16
        frames = np.pad(frames, ((0, 0), (0, ph), (0, pw), (0, 0)), constant_values=255)
        _write_mp4(path, frames, fps)
    return path


def _write_mp4(path: Path, frames: np.ndarray, fps: int) -> None:
    import imageio_ffmpeg

    T, H, W, _ = frames.shape
    writer = imageio_ffmpeg.write_frames(str(path), (W, H), fps=fps, codec="libx264", pix_fmt_out="yuv420p",
                                         macro_block_size=16, quality=8, ffmpeg_log_level="error")
    writer.send(None)
    for f in frames:
        writer.send(np.ascontiguousarray(f))
    writer.close()


def read_video(path: str | Path) -> torch.Tensor:
    """A GIF/MP4 written by save_video (one clip, scale 1) -> (3, T, H, W) in [-1, 1]."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such video file: {path}")
    frames = np.asarray(iio.imread(path, index=None))   # (T, H, W, C)
    if frames.ndim == 3 and frames.shape[-1] in (3, 4):
        frames = frames[None]                            # one RGB(A) image: a 1-frame clip
    if frames.ndim != 4 or frames.shape[-1] not in (3, 4):
        raise ValueError(f"{path} holds {'grayscale ' if frames.ndim in (2, 3) else ''}frames of shape "
                         f"{tuple(frames.shape)}; expected colour frames (T, H, W, 3)")
    frames = frames[..., :3]
    return torch.from_numpy(frames.copy()).permute(3, 0, 1, 2).float() / 127.5 - 1.0


def gif_bytes(x: torch.Tensor, fps: int = 8, scale: int = 4) -> bytes:
    buf = io.BytesIO()
    iio.imwrite(buf, video_grid(x, ncols=1, scale=scale), extension=".gif", duration=1000 / fps, loop=0)
    return buf.getvalue()


def videos_html(x: torch.Tensor, captions: Sequence[str] | None = None, ncols: int = 8, fps: int = 8,
                scale: int = 4) -> str:
    """HTML table of animated GIFs (base64, inline) with a caption under each clip."""
    v = _as_video(x)
    captions = list(captions) if captions is not None else [""] * v.shape[0]
    if len(captions) != v.shape[0]:
        raise ValueError(f"videos_html: {v.shape[0]} clips but {len(captions)} captions")
    cells = []
    for clip, cap in zip(v, captions):
        b64 = base64.b64encode(gif_bytes(clip[None], fps=fps, scale=scale)).decode()
        cells.append(f'<td style="text-align:center;vertical-align:top;padding:4px;max-width:{clip.shape[-1] * scale + 40}px">'
                     f'<img src="data:image/gif;base64,{b64}" style="image-rendering:pixelated"/><br/>'
                     f'<span style="font-size:11px">{html.escape(cap)}</span></td>')
    rows = ["<tr>" + "".join(cells[i:i + ncols]) + "</tr>" for i in range(0, len(cells), ncols)]
    return "<table>" + "".join(rows) + "</table>"


def show_videos(x: torch.Tensor, captions: Sequence[str] | None = None, **kw):
    """Display clips inline in Jupyter (animated, captioned). Returns the IPython HTML object."""
    from IPython.display import HTML, display

    obj = HTML(videos_html(x, captions, **kw))
    display(obj)
    return obj


def flow_to_rgb(flow: torch.Tensor, max_norm: float = 1.0) -> torch.Tensor:
    """Optical flow as colour, the usual colour wheel: hue = direction, brightness = speed.

    flow (B, 2, T, H, W) or (B, 2, H, W) with (x, y) components, y downward (`minivid.data.flow_field`)
    -> the same shape with 3 channels in [-1, 1], ready for show_videos / save_video. A still pixel is
    black; speed `max_norm` and above is full brightness. Right is red, down is yellow-green, left
    cyan, up violet (matplotlib's HSV wheel).
    """
    from matplotlib.colors import hsv_to_rgb

    f = torch.as_tensor(flow).detach().float().cpu()
    if f.dim() not in (4, 5) or f.shape[1] != 2:
        raise ValueError(f"flow must be (B, 2, [T,] H, W), got shape {tuple(f.shape)}")
    hue = (torch.atan2(f[:, 1], f[:, 0]) / (2 * np.pi)) % 1.0
    val = (f.norm(dim=1) / max_norm).clamp(0, 1)
    hsv = torch.stack([hue, torch.ones_like(hue), val], -1).numpy()
    rgb = torch.from_numpy(hsv_to_rgb(hsv)).float().movedim(-1, 1)
    return rgb * 2 - 1


# ----------------------------------------------------------------------------- matplotlib

def show_images(x: torch.Tensor, captions: Sequence[str] | None = None, ncols: int = 8, size: float = 1.4,
                title: str | None = None):
    """A grid of images (B,3,H,W) — or the first frame of clips — with captions. Returns the figure."""
    import matplotlib.pyplot as plt

    v = _as_video(x)[:, :, 0]
    B = v.shape[0]
    ncols = min(ncols, B)
    nrows = -(-B // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, (size + 0.35) * nrows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < B:
            ax.imshow(((v[i].clamp(-1, 1) + 1) / 2).permute(1, 2, 0).numpy(), interpolation="nearest")
            if captions is not None:
                ax.set_title(captions[i], fontsize=7, wrap=True)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def show_frames(clip: torch.Tensor, labels: Sequence[str] | None = None, size: float = 1.4, title: str | None = None):
    """One clip (3, T, H, W) — or a list of images — as a row of frames. Returns the figure."""
    import matplotlib.pyplot as plt

    v = _as_video(clip)
    frames = v[0].permute(1, 0, 2, 3) if v.shape[0] == 1 else v[:, :, 0]     # (N, 3, H, W)
    n = frames.shape[0]
    fig, axes = plt.subplots(1, n, figsize=(size * n, size + 0.4), squeeze=False)
    for i, ax in enumerate(axes[0]):
        ax.imshow(((frames[i].clamp(-1, 1) + 1) / 2).permute(1, 2, 0).numpy(), interpolation="nearest")
        ax.axis("off")
        if labels is not None:
            ax.set_title(labels[i], fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def show_frame_rows(rows: dict[str, torch.Tensor], title: str | None = None, size: float = 0.75):
    """Clips (3, T, H, W), one per labelled row, aligned in time: a clip with fewer frames than the longest sits on
    every (T_max / T)-th column (its frame i on column i * T_max / T), as a temporal upsampler reads it. Returns the figure."""
    import matplotlib.pyplot as plt

    n = max(c.shape[1] for c in rows.values())
    fig, axes = plt.subplots(len(rows), n, figsize=(size * n + 1.2, size * len(rows) + 0.5), squeeze=False)
    for r, (label, clip) in enumerate(rows.items()):
        step = n // clip.shape[1]
        for j, ax in enumerate(axes[r]):
            ax.set_xticks([]), ax.set_yticks([])
            ax.spines[:].set_color("0.6")
            ax.spines[:].set_visible(j % step == 0)                  # a thin frame: white frames stay visible
            if j % step == 0:
                ax.imshow(((clip[:, j // step].clamp(-1, 1) + 1) / 2).permute(1, 2, 0).numpy(), interpolation="nearest")
            if r == 0:
                ax.set_title(str(j), fontsize=7)
        axes[r, 0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def plot_curves(curves: dict[str, tuple[Sequence[float], Sequence[float]]], xlabel: str = "", ylabel: str = "",
                title: str = "", logy: bool = False, ax=None):
    """Several named (x, y) curves on one axis: schedules, loss curves, sweeps."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3.2))
    for name, (xs, ys) in curves.items():
        ax.plot(list(xs), list(ys), label=name, marker="o" if len(xs) <= 12 else None)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    if logy:
        ax.set_yscale("log")
    if len(curves) > 1:
        ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    ax.figure.tight_layout()
    return ax


def plot_loss(history: Sequence[dict], key: str = "loss", smooth: float = 0.9, ax=None, title: str = "training loss"):
    """Loss curve from a TrainState.history (raw, and exponentially smoothed)."""
    steps = [h["step"] for h in history]
    raw = [h[key] for h in history]
    sm, acc = [], None
    for v in raw:
        acc = v if acc is None else smooth * acc + (1 - smooth) * v
        sm.append(acc)
    return plot_curves({"raw": (steps, raw), "smoothed": (steps, sm)}, "step", key, title, logy=True, ax=ax)


def plot_sweep(rows: Sequence[dict], x: str, ys: Sequence[str], title: str = "", ax=None, right: str | None = None):
    """A sweep table (list of dicts) as curves of `ys` against `x`; `right` goes on a second y axis."""
    ax = plot_curves({y: ([r[x] for r in rows], [r[y] for r in rows]) for y in ys}, x, ", ".join(ys), title, ax=ax)
    if right is not None:
        ax2 = ax.twinx()
        ax2.plot([r[x] for r in rows], [r[right] for r in rows], color="k", ls="--", marker="s", label=right)
        ax2.set_ylabel(right)
        ax2.legend(loc="center right", fontsize=8)
    return ax
