"""The judge checked: near-perfect on held-out real clips, at chance on noise.

    python -m minivid bench judge --preset full --out chapters/results/judge.json

At 16x16 and 32x32 (16-frame clips, held-out attribute combinations): per-attribute
accuracy, validity, temporal consistency and flicker on real clips, on uniform noise and on
Gaussian noise in [-1, 1] (scored against labels of the training distribution; two chance
rows: a uniform guess - 1/6, 1/3, 1/2, 1/4, 1/2 - and always guessing the most frequent
label). Real images too. Robustness: the same real clips with diffusion-like artefacts
(Gaussian noise, overshoot past [-1, 1], soft edges). Fréchet distance in judge features:
two independent real sets (the floor), real vs held-out combinations, real vs noise.
"""
from __future__ import annotations

import os
import time

import torch
import torch.nn.functional as F

from minivid.data import sample_batch
from minivid.eval import Judge
from minivid.utils import make_generator

PRESETS = {
    "smoke": dict(sizes=(16,), n=32, frames=4, robust_n=16),
    "full": dict(sizes=(16, 32), n=1024, frames=16, robust_n=256),
}
CHANCE = {"color_acc": ("color", 6), "shape_acc": ("shape", 3), "size_acc": ("size", 2),
          "motion_acc": ("direction", 4), "speed_acc": ("speed", 2)}  # score key: (label, classes)
COLS = ("color_acc", "shape_acc", "size_acc", "motion_acc", "speed_acc", "validity", "temporal_consistency",
        "flicker")


def _row(name: str, size: int, s: dict, n: int, seconds: float | None = None) -> dict:
    row = {"data": name, "size": size, "n": n}
    row.update({k: s[k] for k in COLS if k in s})
    if seconds is not None:
        row["clips_per_s"] = n / seconds
    return row


def _artefacts(x: torch.Tensor, kind: str, g: torch.Generator) -> torch.Tensor:
    if kind == "gaussian noise 0.1":
        return x + 0.1 * torch.randn(x.shape, generator=g)
    if kind == "overshoot x1.1":
        return x * 1.1
    if kind == "soft edges (3x3 blur, 50%)":
        return 0.5 * x + 0.5 * F.avg_pool3d(x, (1, 3, 3), stride=1, padding=(0, 1, 1), count_include_pad=False)
    raise ValueError(kind)


def run(preset: str = "smoke", seed: int = 0) -> dict:
    """Score the judge on real data and on noise; see the module docstring."""
    cfg = PRESETS[preset]
    load_before = os.getloadavg()[0]
    judge = Judge()
    n, t = cfg["n"], cfg["frames"]
    rows, robust, frechet, figs = [], [], [], {}
    for size in cfg["sizes"]:
        g = make_generator(seed * 1000 + size)
        real = sample_batch(n, kind="video_text", split="heldout", size=size, frames=t, generator=g)
        t0 = time.perf_counter()
        s = judge.score(real["x"], real["labels"])
        rows.append(_row("held-out real clips", size, s, n, time.perf_counter() - t0))
        for k in COLS:
            figs[f"real_{size}_{k}"] = s[k]
        img = sample_batch(n, kind="image", split="heldout", size=size, generator=g)
        rows.append(_row("held-out real images", size, judge.score(img["x"], img["labels"]), n))
        noises = {"uniform noise": torch.rand(real["x"].shape, generator=g) * 2 - 1,
                  "gaussian noise": torch.randn(real["x"].shape, generator=g).clamp(-1, 1)}
        # noise is scored against labels of the (nearly balanced) training distribution
        lab = sample_batch(n, kind="video_text", split="val", size=8, frames=1, generator=g)["labels"]
        for name, x in noises.items():
            s = judge.score(x, lab)
            rows.append(_row(name, size, s, n))
            for k in COLS:
                figs[f"{name.split()[0]}_{size}_{k}"] = s[k]
        rows.append({"data": "chance: uniform guess", "size": size, "n": n,
                     **{k: 1 / m for k, (_, m) in CHANCE.items()}})
        rows.append({"data": "chance: majority-class guess", "size": size, "n": n,
                     **{k: lab[name].bincount().max().item() / n for k, (name, _) in CHANCE.items()}})
        sub = {k: v[: cfg["robust_n"]] for k, v in real["labels"].items()}
        for kind in ("gaussian noise 0.1", "overshoot x1.1", "soft edges (3x3 blur, 50%)"):
            x = _artefacts(real["x"][: cfg["robust_n"]], kind, g)
            robust.append(_row(kind, size, judge.score(x, sub), cfg["robust_n"]))
        # Fréchet distance: two independent real sets of the training distribution set the floor
        val_a = sample_batch(n, kind="video", split="val", size=size, frames=t, generator=g)["x"]
        val_b = sample_batch(n, kind="video", split="val", size=size, frames=t, generator=g)["x"]
        pairs = {"real vs real (independent)": val_b, "real vs held-out combinations": real["x"],
                 "real vs uniform noise": noises["uniform noise"], "real vs gaussian noise": noises["gaussian noise"]}
        for name, other in pairs.items():
            d = judge.frechet(val_a, other)
            frechet.append({"pair": name, "size": size, "n": n, "frechet": d})
            figs[f"frechet_{size}_" + name.replace(" ", "_").replace("(", "").replace(")", "")] = d
    figs["cpu_load_1min_before"], figs["cpu_load_1min_after"] = load_before, os.getloadavg()[0]
    return {"figures": figs, "tables": {"judge": rows, "robustness": robust, "frechet": frechet}}
