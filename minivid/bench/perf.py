"""What a training step of every chapter's recipe costs: `python -m minivid bench perf --preset full`.

The recipes are found, not listed: each chapter's `CLI.train` runs under `common.capture_training()`, which
records every training run it asks for (upstream ones too, e.g. chapter 02's text encoder, measured once)
and trains nothing new. For each, on its real batches and loss:

* parameters, all and trainable;
* FLOPs per training step, forward + backward, counted by torch's `FlopCounterMode` (matmuls, convolutions,
  attention; element-wise ops are not counted). The counted step runs attention by its naive matmul path
  (`minivid.ops.attention.auto_impl`): the counter does not see the CPU SDPA kernel, whose FLOPs it would miss;
* seconds per step (AdamW over the trainable parameters; median of the timed steps after a warm-up);
* achieved GFLOP/s and its fraction of this machine's fp32 matmul peak, measured in the same run (a square
  matmul, best of several) - how far a small model's step is from what the cores can do;
* the top operations of the step by self CPU time (torch.profiler), as shares of it.

The chapter-03 row is the step issue 19 asks to make faster; chapters/appendix_ops.md shows the table.
"""
from __future__ import annotations

import copy
import importlib
import statistics
import time

import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

from minivid.bench import train_step
from minivid.cli.chapters import chapter_names
from minivid.ops.attention import auto_impl
from minivid.pipelines.common import TrainingSetup, capture_training

SETTINGS = {"smoke": dict(steps=2, profile_steps=1, matmul=256, top=3),
            "full": dict(steps=12, profile_steps=3, matmul=1024, top=5)}


def matmul_peak_gflops(n: int = 1024, reps: int = 10) -> float:
    """fp32 GFLOP/s of an n x n x n matmul on this machine (best of `reps`, after a warm-up)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best / 1e9


def collect_setups(preset: str, seed: int = 0) -> tuple[list[TrainingSetup], list[dict]]:
    """Every distinct training run the chapters' `CLI.train` ask for, and a note per chapter that stopped early."""
    setups, seen, notes = [], set(), []
    for name in chapter_names():
        spec = getattr(importlib.import_module(f"minivid.pipelines.{name}"), "CLI", None)
        if spec is None or spec.train is None:
            continue
        with capture_training() as got:
            try:
                spec.train(preset=preset, seed=seed)
            except Exception as e:                        # a later stage needed a model that is not trained yet
                notes.append({"chapter": name, "stopped": f"{type(e).__name__}: {str(e).splitlines()[0][:120]}"})
        for s in got:
            if s.desc not in seen:
                seen.add(s.desc)
                setups.append(s)
    return setups, notes


def measure(setup: TrainingSetup, steps: int, profile_steps: int, top: int) -> tuple[dict, list[dict]]:
    """({"recipe", "params", "trainable", "GFLOPs/step", "step s", ...}, [top ops]) of one training setup."""
    model = copy.deepcopy(setup.model).train()
    named = dict(model.named_parameters())
    params = [named[n] for n in setup.trainable]
    for q in model.parameters():
        q.requires_grad_(False)
    for q in params:
        q.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=1e-5)
    train_step(model, setup.batch_fn, setup.loss_fn, opt, 0)          # warm-up (allocations, lazy init)
    with auto_impl("naive"), FlopCounterMode(display=False) as fc:      # the counter misses the CPU SDPA kernel
        train_step(model, setup.batch_fn, setup.loss_fn, opt, 1)
    flops = fc.get_total_flops()
    times = []
    for i in range(steps):
        t0 = time.perf_counter()
        train_step(model, setup.batch_fn, setup.loss_fn, opt, 2 + i)
        times.append(time.perf_counter() - t0)
    step_s = statistics.median(times)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for i in range(profile_steps):
            train_step(model, setup.batch_fn, setup.loss_fn, opt, 100 + i)
    ops = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in ops) or 1.0
    top_ops = [{"recipe": setup.desc, "op": e.key, "share of step": e.self_cpu_time_total / total,
                "calls per step": e.count / profile_steps} for e in ops[:top]]
    row = {"recipe": setup.desc, "params": sum(q.numel() for q in model.parameters()),
           "trainable": sum(q.numel() for q in params), "GFLOPs/step": flops / 1e9, "step s": step_s,
           "GFLOP/s": flops / step_s / 1e9}
    return row, top_ops


def run(preset: str = "smoke", seed: int = 0) -> dict:
    cfg = SETTINGS[preset]
    setups, notes = collect_setups(preset, seed)
    peak = matmul_peak_gflops(cfg["matmul"])
    rows, ops = [], []
    for s in setups:
        row, top_ops = measure(s, cfg["steps"], cfg["profile_steps"], cfg["top"])
        rows.append(row)
        ops += top_ops
    peak = max(peak, matmul_peak_gflops(cfg["matmul"]))          # before and after: the less disturbed of the two
    for row in rows:
        row["% of matmul peak"] = 100 * row["GFLOP/s"] / peak
    figures = {"matmul_peak_gflops": peak, "recipes": len(rows)}
    for r in rows:
        if r["recipe"].startswith("ch03 video U-Net"):             # the step issue 19 asks to speed up
            figures.update(ch03_step_s=r["step s"], ch03_gflops_per_step=r["GFLOPs/step"],
                           ch03_peak_fraction=r["% of matmul peak"] / 100)
    tables = {"steps": rows, "top_ops": ops}
    if notes:
        tables["stopped"] = notes
    return {"figures": figures, "tables": tables}
