"""Shapes World generation speed: how many images and clips per second this machine renders.

    python -m minivid bench data --preset full --out chapters/results/data.json

For each kind (image, unlabelled video, captioned video) and resolution, one batch is
rendered `repeats` times with `sample_batch` (attributes + anti-aliased frames + captions)
and the best time is kept (other processes share the CPU; the best run is the least
disturbed one), with torch's default thread count and with one thread (on a loaded machine
the single-thread figure is the steadier one). Also measured: rendering a dataset split into
memory (`materialize_split`, with 8-bit quantisation and checksum) and reading a lazy
Dataset item by item through a DataLoader.
"""
from __future__ import annotations

import os
import time

import torch

from minivid.data import ImageTextDataset, WorldConfig, make_loader, materialize_split, sample_batch
from minivid.utils import make_generator

PRESETS = {
    # (kind, size, frames, batch)
    "smoke": dict(cases=[("image", 16, 1, 64), ("video", 16, 16, 8), ("video", 32, 16, 4),
                         ("video_text", 16, 16, 8)], repeats=1, split_n=32, loader_n=32),
    "full": dict(cases=[("image", 16, 1, 4096), ("image", 32, 1, 4096), ("video", 16, 8, 1024),
                        ("video", 16, 16, 1024), ("video", 32, 16, 512), ("video_text", 16, 16, 1024),
                        ("video_text", 32, 16, 512)], repeats=3, split_n=4096, loader_n=4096),
}


def _best_time(repeats: int, fn, *args, **kwargs) -> float:
    """Smallest wall time of `repeats` calls fn(*args, **kwargs)."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(*args, **kwargs)
        best = min(best, time.perf_counter() - t0)
    return best


def run(preset: str = "smoke", seed: int = 0) -> dict:
    """Measure generation speed; see the module docstring."""
    cfg = PRESETS[preset]
    load_before = os.getloadavg()[0]
    g = make_generator(seed)
    sample_batch(8, kind="video", frames=2, generator=g)  # warm-up
    rows, figs = [], {}
    default_threads = torch.get_num_threads()
    for threads in sorted({default_threads, 1}, reverse=True):
        torch.set_num_threads(threads)
        try:
            for kind, size, frames, batch in cfg["cases"]:
                dt = _best_time(cfg["repeats"], sample_batch, batch, kind=kind, size=size, frames=frames,
                                generator=g)
                per_s = batch / dt
                shape = f"{size}x{size}" + ("" if kind == "image" else f"x{frames}")
                rows.append({"kind": kind, "shape": shape, "threads": threads, "batch": batch,
                             "ms_per_batch": 1000 * dt, "items_per_s": per_s, "frames_per_s": per_s * frames})
                figs[f"{kind}_per_s_{shape}" + ("" if threads == default_threads else f"_{threads}thread")] = per_s
        finally:
            torch.set_num_threads(default_threads)
    n = cfg["split_n"]
    world = WorldConfig(size=16, frames=16)
    dt = _best_time(1, materialize_split, "video_text", "train", n, seed, world, cache=False)
    rows.append({"kind": "video_text (materialize_split)", "shape": "16x16x16", "threads": default_threads, "batch": n,
                 "ms_per_batch": 1000 * dt, "items_per_s": n / dt, "frames_per_s": 16 * n / dt})
    figs["materialize_video_text_per_s_16x16x16"] = n / dt
    ds = ImageTextDataset("train", cfg["loader_n"], size=16, seed=seed)
    dt = _best_time(1, lambda: [None for _ in make_loader(ds, batch_size=64)])
    rows.append({"kind": "image (lazy Dataset + DataLoader)", "shape": "16x16", "threads": default_threads,
                 "batch": len(ds),
                 "ms_per_batch": 1000 * dt, "items_per_s": len(ds) / dt, "frames_per_s": len(ds) / dt})
    figs["lazy_dataset_images_per_s_16x16"] = len(ds) / dt
    figs["cpu_load_1min_before"], figs["cpu_load_1min_after"] = load_before, os.getloadavg()[0]
    return {"figures": figs, "tables": {"speed": rows}}
