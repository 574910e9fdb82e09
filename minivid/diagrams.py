"""Architecture diagrams drawn from the real model objects (matplotlib only): nothing here is a hand-kept list.

* `unet_diagram(model, x_shape)`: a U-Net (`UNet2D`, `UNet3D`, or a 2-D one grown by `pseudo3d.inflate`) runs once
  on zeros with forward hooks on its stem, its `blocks()`, resamplers and `temporal` layers: one box per module
  that ran, with its output shape; skip arrows pair as `UNetSkeleton._trunk` pairs them (last in, first out);
  cross-attention, spatial attention and temporal layers get their own colours. `record_unet` returns the data.
* `factorized_block_diagram()`: the space-time factorised block of Video Diffusion Models (Ho et al. 2022,
  arXiv:2204.03458): a real `SpaceTimeConv` / `AttentionBlock` / `TemporalAttention` are run on a clip whose
  sizes are distinct primes, so every shape on an arrow (B*T, C, H, W), (B*H*W, T, C) is read off a tensor.
* `pipeline_diagram(stages)`: a chain of boxes with a tensor shape on each arrow (cascades, the DiT).

Every function returns the matplotlib Figure. `python -m minivid.diagrams OUTDIR` writes the chapters' figures.
"""
from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Patch
from torch import nn

from minivid.models.blocks import AttentionBlock, Downsample, ResBlock, Upsample, fold_frames, unfold_frames
from minivid.models.temporal import Pseudo3DConv, SpaceTimeConv, TemporalAttention

# kind -> (face colour, legend text)
KINDS = {
    "stem": ("#e0e0e0", "input conv (stem)"),
    "res": ("#c6dbef", "ResBlock, 2-D convs (per frame)"),
    "res+tconv": ("#c7e9c0", "ResBlock with temporal convs"),
    "attn": ("#6baed6", "spatial self-attention"),
    "attn+xattn": ("#fd8d3c", "spatial self- + cross-attention to text"),
    "tattn": ("#41ab5d", "temporal attention (along T)"),
    "down": ("#ffffff", "downsample (stride-2 conv)"),
    "up": ("#ffffff", "upsample (nearest + conv)"),
}
TEMPORAL_KINDS = ("res+tconv", "tattn")
TEMPORAL_EDGE = "#006d2c"


@dataclass
class BlockRecord:
    """One module that ran in the forward pass: name, kind (a key of KINDS), part of the U ("stem", "down",
    "mid", "up") and its output shape (N, C, H, W), N = B*T for video."""
    name: str
    kind: str
    part: str
    shape: tuple[int, ...]
    module: nn.Module


def block_kind(m: nn.Module) -> str:
    """The KINDS key of a U-Net module."""
    if isinstance(m, TemporalAttention):
        return "tattn"
    if isinstance(m, AttentionBlock):
        return "attn+xattn" if m.context_dim is not None else "attn"
    if isinstance(m, ResBlock):
        c = m.conv1
        temporal = isinstance(c, Pseudo3DConv) or (isinstance(c, SpaceTimeConv) and c.kind != "spatial")
        return "res+tconv" if temporal else "res"
    return "down" if isinstance(m, Downsample) else "up" if isinstance(m, Upsample) else "stem"


def _walk(model: nn.Module) -> list[tuple[str, str, nn.Module]]:
    """(name, part, module) of every module the trunk runs, in forward order (temporal layers after their block)."""
    out = [("stem", "stem", model.stem)]

    def unit(u, part, i):
        if isinstance(u, (Downsample, Upsample)):
            out.append((f"{part}[{i}]: {type(u).__name__}", part, u))
            return
        for blk in u:
            out.append((blk.name, part, blk))
            if blk.name in model.temporal:
                out.append((getattr(model.temporal[blk.name], "name", blk.name + "_t"), part, model.temporal[blk.name]))

    for i, u in enumerate(model.down):
        unit(u, "down", i)
    unit(model.mid, "mid", 0)
    for i, u in enumerate(model.up):
        unit(u, "up", i)
    return out


def _dummy_inputs(model: nn.Module, x_shape: Sequence[int]) -> dict:
    """Zero conditioning for every input the model's config asks for (text tokens, pooled text, aug level)."""
    cfg, B = model.cfg, x_shape[0]
    kw = {"t": torch.zeros(B, dtype=torch.long)}
    if cfg.context_dim:
        kw["context"] = torch.zeros(B, 2, cfg.context_dim)
        kw["context_mask"] = torch.ones(B, 2, dtype=torch.bool)
    if cfg.pooled_dim:
        kw["pooled"] = torch.zeros(B, cfg.pooled_dim)
    if getattr(cfg, "aug_embedding", False):
        kw["aug_t"] = torch.zeros(B, dtype=torch.long)
    return kw


def record_unet(model: nn.Module, x_shape: Sequence[int], **forward_kw) -> list[BlockRecord]:
    """Run `model` once on zeros of `x_shape` ((B, C, H, W) or (B, C, T, H, W)) and record every trunk module.

    forward_kw override the zero conditioning. The model's train/eval mode is restored afterwards.
    """
    walk = _walk(model)
    shapes: dict[int, tuple[int, ...]] = {}
    hooks = [m.register_forward_hook(lambda mod, args, out: shapes.__setitem__(id(mod), tuple(out.shape)))
             for _, _, m in walk]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(tuple(x_shape)), **{**_dummy_inputs(model, x_shape), **forward_kw})
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    if missing := [name for name, _, m in walk if id(m) not in shapes]:
        raise RuntimeError(f"record_unet: modules {missing} never ran in the forward pass")
    return [BlockRecord(name, block_kind(m), part, shapes[id(m)], m) for name, part, m in walk]


def skip_connections(model: nn.Module, records: list[BlockRecord]) -> list[tuple[int, int]]:
    """(source, destination) record indices of every skip connection, paired as `UNetSkeleton._trunk` pairs them:
    the stem and each encoder unit's last output are pushed, each decoder unit pops one before its first block."""
    at = {id(r.module): i for i, r in enumerate(records)}
    stack = [at[id(model.stem)]]
    for u in model.down:
        last = u if isinstance(u, Downsample) else model.temporal[u[-1].name] if u[-1].name in model.temporal else u[-1]
        stack.append(at[id(last)])
    return [(stack.pop(), at[id(u[0])]) for u in model.up if isinstance(u, nn.ModuleList)]


def _box(ax, x, y, w, h, text, face, gid, edge="#333333", lw=0.8, fontsize=7, ls="-"):
    ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.02,rounding_size=0.08",
                                fc=face, ec=edge, lw=lw, ls=ls, gid=gid))
    ax.text(x, y, text, ha="center", va="center", fontsize=fontsize, family="monospace")


def _arrow(ax, a, b, gid, color="#333333", ls="-", rad=0.0, lw=0.9):
    ax.add_patch(FancyArrowPatch(a, b, arrowstyle="-|>", mutation_scale=9, color=color, lw=lw, ls=ls, gid=gid,
                                 connectionstyle=f"arc3,rad={rad}", shrinkA=1, shrinkB=1))


def unet_diagram(model: nn.Module, x_shape: Sequence[int], title: str | None = None, **forward_kw) -> Figure:
    """Encoder column (top down), middle (bottom), decoder column (bottom up); skip connections as dashed arrows.

    Each box: the block's name, and its output C x H x W (the batch dim, B*T for video, left out). Boxes of
    temporal layers get a dark green edge (gid "temporal:<kind>"); the others gid "block:<kind>"; skip arrows gid
    "skip". Returns the Figure.
    """
    recs = record_unet(model, x_shape, **forward_kw)
    cols = {p: [i for i, r in enumerate(recs) if r.part in ((p,) if p != "down" else ("stem", "down"))]
            for p in ("down", "mid", "up")}
    n_enc, n_dec, n_mid = len(cols["down"]), len(cols["up"]), len(cols["mid"])
    span = max(n_enc, n_dec) - 1
    pos = {i: (0.0, -j * span / max(n_enc - 1, 1)) for j, i in enumerate(cols["down"])}
    pos |= {i: (5.0, -span - 1.2 - j) for j, i in enumerate(cols["mid"])}
    pos |= {i: (10.0, -span + j * span / max(n_dec - 1, 1)) for j, i in enumerate(cols["up"])}
    fig = Figure(figsize=(10, 0.42 * (span + n_mid + 4)))
    ax = fig.add_subplot()
    w, h = 3.6, 0.7
    for i, r in enumerate(recs):
        temporal = r.kind in TEMPORAL_KINDS
        _box(ax, *pos[i], w, h, r.name + "\n" + "x".join(map(str, r.shape[1:])), KINDS[r.kind][0],
             f"{'temporal' if temporal else 'block'}:{r.kind}", edge=TEMPORAL_EDGE if temporal else "#333333",
             lw=2.0 if temporal else 0.8, ls="--" if r.kind in ("down", "up") else "-")
    order = cols["down"] + cols["mid"] + cols["up"]
    for a, b in zip(order, order[1:]):                  # within a column vertically, between columns left to right
        (xa, ya), (xb, yb) = pos[a], pos[b]
        d = h / 2 if yb > ya else -h / 2
        _arrow(ax, *(((xa, ya + d), (xb, yb - d)) if xa == xb else ((xa + w / 2, ya), (xb - w / 2, yb))), "flow")
    skips = skip_connections(model, recs)
    for s, d in skips:
        (xs, ys), (xd, yd) = pos[s], pos[d]
        _arrow(ax, (xs + w / 2, ys), (xd - w / 2, yd), "skip", color="#7f7f7f", ls="--", rad=-0.08, lw=0.8)
    kinds = list(dict.fromkeys(r.kind for r in recs))
    handles = [Patch(fc=KINDS[k][0], ec=TEMPORAL_EDGE if k in TEMPORAL_KINDS else "#333333",
                     lw=2.0 if k in TEMPORAL_KINDS else 0.8, label=KINDS[k][1]) for k in kinds]
    handles.append(Line2D([], [], color="#7f7f7f", ls="--", label=f"skip connection (concat), {len(skips)}"))
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=3, fontsize=7, frameon=False)
    ax.set_xlim(-w / 2 - 0.3, 10 + w / 2 + 0.3)
    ax.set_ylim(-span - n_mid - 0.8, 0.6)
    ax.axis("off")
    video = "B*T, " if len(x_shape) == 5 else "B, "
    ax.set_title(title or f"{type(model).__name__}: input {tuple(x_shape)}, boxes show each block's output "
                 f"C x H x W ({video}C, H, W)", fontsize=9)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- chains of boxes

def pipeline_diagram(stages: Sequence[tuple[str, str | None]], title: str | None = None,
                     input_shape: str | None = None, vertical: bool = False) -> Figure:
    """A chain of boxes, left to right (or top down): stages = [(box text, shape of its output or None), ...].

    The shape of each stage's output is written on the arrow that leaves it (the last one's on an arrow out);
    input_shape, if given, on an arrow into the first box. Boxes have gid "stage", arrows gid "flow".
    One data unit is drawn as one inch.
    """
    if not stages or any(len(s) != 2 or not isinstance(s[0], str) for s in stages):
        raise ValueError("stages must be a non-empty sequence of (box text, output shape or None) pairs")
    n = len(stages)
    w, h, step = (4.4, 0.75, 1.45) if vertical else (2.0, 0.9, 3.3)
    at = [(0.0, -i * step) if vertical else (i * step, 0.0) for i in range(n)]
    arrows = []                                           # (tail, head, label)
    for i, (_, shape) in enumerate(stages):
        if i + 1 == n and shape is None:
            continue
        x, y = at[i]
        last = i + 1 == n
        if vertical:
            arrows.append(((x, y - h / 2), (x, y - step + (h / 2 if not last else 2 * h / 3)), shape))
        else:
            arrows.append(((x + w / 2, y), (x + step - (w / 2 if not last else w / 3), y), shape))
    if input_shape:
        x, y = at[0]
        arrows.insert(0, ((x, y + step - 2 * h / 3), (x, y + h / 2), input_shape) if vertical else
                      ((x - step + w / 3, y), (x - w / 2, y), input_shape))
    xs = [p[0] for a in arrows for p in a[:2]] + [x for x, _ in at]
    ys = [p[1] for a in arrows for p in a[:2]] + [y for _, y in at]
    x0, x1 = min(xs) - (w / 2 if vertical else 0.1) - 0.1, max(xs) + (w / 2 + 1.0 if vertical else 0.1) + 0.1
    y0, y1 = min(ys) - (0.1 if vertical else h / 2 + 0.1), max(ys) + (0.1 if vertical else h / 2 + 0.5)
    fig = Figure(figsize=(x1 - x0, y1 - y0 + (0.5 if title else 0.1)))
    ax = fig.add_axes((0, 0, 1, (y1 - y0) / (y1 - y0 + (0.5 if title else 0.1))))
    for (text, _), p in zip(stages, at):
        _box(ax, *p, w, h, text, "#deebf7", "stage", fontsize=7)
    for a, b, text in arrows:
        _arrow(ax, a, b, "flow")
        if text:
            mx, my = (a[0] + b[0]) / 2, (a[1] + b[1]) / 2
            ax.text(mx + 0.12 if vertical else mx, my if vertical else my + 0.08, text, fontsize=7,
                    ha="left" if vertical else "center", va="center" if vertical else "bottom",
                    family="monospace", color="#08519c")
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=9, y=1 - 0.08 / (y1 - y0 + 0.5))
    return fig


def _symbols(shape: Sequence[int], sizes: dict[str, int]) -> str:
    """(154, 5, 3) with sizes {B: 2, C: 3, T: 5, H: 7, W: 11} (distinct primes) -> '(B*H*W, T, C)'."""
    def name(d):
        parts = [k for k, v in sizes.items() if d % v == 0]
        prod = 1
        for k in parts:
            prod *= sizes[k]
        if prod != d:
            raise ValueError(f"size {d} is not a product of {sizes}")
        return "*".join(parts)
    return "(" + ", ".join(name(d) for d in shape) + ")"


def factorized_block_shapes() -> list[tuple[str, str]]:
    """The factorised space-time block, run for real: [(step, shape of the tensor it produced), ...].

    Runs the parts of a `ResBlock`'s factorised `SpaceTimeConv`, an `AttentionBlock` and a `TemporalAttention` on a
    (B, C, T, H, W) = (2, 3, 5, 7, 11) clip, folding with `fold_frames`/`unfold_frames`, and names each observed
    size by its prime factors. (The conv's two halves are called one by one, as `SpaceTimeConv.forward` does for a
    clip, so this never reaches exercise 3.1's region.)
    """
    sizes = {"B": 2, "C": 3, "T": 5, "H": 7, "W": 11}
    B, C, T, H, W = sizes.values()
    conv = SpaceTimeConv(C, C, "factorized").conv
    attn = AttentionBlock("attn", C, head_dim=C, groups=1, context_dim=None)
    tattn = TemporalAttention("tattn", C, head_dim=C)
    seen = {}

    def tokens(mod, args, out):                              # what temporal attention attends over
        seen["tokens"] = tuple(args[0].shape)

    hook = tattn.norm.register_forward_hook(tokens)
    with torch.no_grad():
        x = torch.zeros(B, C, T, H, W)
        h = fold_frames(x)                                   # what a U-Net block sees
        v = unfold_frames(h, T)
        s = conv.spatial(v)
        t = conv.temporal(s)
        a = attn(fold_frames(t))
        o = tattn(a, num_frames=T)
        y = unfold_frames(o, T)
    hook.remove()
    ks, kt = tuple(conv.spatial.kernel_size), tuple(conv.temporal.kernel_size)
    steps = [("video clip", x), ("fold_frames", h), ("unfold_frames", v), (f"spatial conv {ks}", s),
             (f"temporal conv {kt}", t), ("fold_frames", fold_frames(t)), ("spatial attention", a),
             ("pixel sequences", seen["tokens"]), ("temporal attention", o), ("unfold_frames", y)]
    return [(name, _symbols(z if isinstance(z, tuple) else tuple(z.shape), sizes)) for name, z in steps]


def factorized_block_diagram() -> Figure:
    """The factorised space-time block, top down, with every reshape written on its arrow (shapes measured)."""
    (_, x), (_, bt), (_, v), (ks, _), (kt, _), (_, bt2), (_, a), (_, tok), (_, o), (_, y) = factorized_block_shapes()
    stages = [
        ("ResBlock: GroupNorm per frame\n(statistics never mix frames)", f"unfold_frames\n{bt} -> {v}"),
        (f"{ks}:\nevery frame on its own", v),
        (f"{kt}: every pixel across\nframes (skipped for image items)", f"fold_frames\n{v} -> {bt2}"),
        ("spatial self-attention over H*W per frame\n(+ cross-attention to the text tokens)",
         f"reshape: one sequence per pixel\n{a} -> {tok}"),
        ("temporal attention along T\n(relative position bias)", f"reshape back -> {o}\nunfold_frames -> {y}"),
    ]
    return pipeline_diagram(stages, title="The factorised space-time block (Ho et al. 2022)\nshapes measured on a "
                            "real SpaceTimeConv, AttentionBlock and TemporalAttention",
                            input_shape=f"video clip {x}\nfold_frames -> {bt}", vertical=True)


# ----------------------------------------------------------------------------- the chapters' figures

def chapter_figures() -> dict[str, Figure]:
    """{file name: Figure} of the diagrams the chapters show, drawn from the chapters' own (untrained) models."""
    from minivid.pipelines import ch02, ch03
    from minivid.text.encoder import text_encoder_config

    p2, p3 = ch02.get_preset("full"), ch03.get_preset("full")
    d2 = text_encoder_config(p2.clip.text).dim
    d3 = text_encoder_config(ch02.get_preset(p3.video.text_preset).clip.text).dim
    unet2, unet3, s = ch02.build_unet(p2.t2i, d2), ch03.build_model(p3.video, d3), p3.video.size
    c3 = unet3.cfg
    return {
        "02_unet_xattn.png": unet_diagram(unet2, (1, 3, p2.t2i.size, p2.t2i.size),
                                          title=f"Chapter 02's U-Net ({p2.t2i.unet}, cross-attention to {d2}-wide text "
                                                "tokens): each block's output C x H x W"),
        "03_factorized_block.png": factorized_block_diagram(),
        "03_unet3d.png": unet_diagram(unet3, (1, c3.in_channels, p3.video.frames, s, s),
                                      title=f"Chapter 03's 3-D U-Net ({p3.video.unet}, {c3.conv} convs, temporal "
                                            f"attention at levels {c3.temporal_attn_levels}, {c3.in_channels} channels "
                                            "in): each block's output C x H x W"),
    }


def main(argv: Sequence[str] | None = None) -> list[Path]:
    """`python -m minivid.diagrams OUTDIR`: write the chapters' architecture diagrams as PNG files."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        raise SystemExit("usage: python -m minivid.diagrams OUTDIR  (e.g. chapters/figures)")
    (out := Path(args[0])).mkdir(parents=True, exist_ok=True)
    for name, fig in (figs := chapter_figures()).items():
        fig.savefig(out / name, dpi=110)
        print(out / name)
    return [out / name for name in figs]


if __name__ == "__main__":
    main()
