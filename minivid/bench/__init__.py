"""Benchmarks: `python -m minivid bench NAME [--preset smoke|full] [--out FILE.json]`.

Each benchmark is a module `minivid.bench.<name>` with a function

    run(preset: str, seed: int) -> dict   # {"figures": {...}, "tables": {name: [row, ...]}}

and, where its headline figures come from a trained model, `HEADLINE` (their names) and
`headline(preset, seed) -> {name: value}` (train that seed's model, judge it). `--seeds N` then runs
`run` at the first seed and `headline` at the N - 1 others, and records per seed plus, for each
headline figure, `<name>_mean`, `<name>_min` and `<name>_max` and the list `seeds`: a chapter's
targets are stated at the worst seed.

`figures` is a flat dict of named numbers (the targets an issue names); `tables` are lists of
row dicts, printed here and rendered into the chapters by `minivid.results`. The runner adds
the metadata every recorded figure carries: preset, seed, wall time, machine, versions.

What the chapter benches share lives here: `time_train_step` (a training step, timed), `judged` (the judge's figures
of a batch), `mean_psnr`, `recorded_minutes` (a checkpoint's recorded training time) and `seed_summary`.
"""
from __future__ import annotations

import importlib
import json
import os
import platform
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from minivid.eval import psnr
from minivid.pipelines.common import training_record
from minivid.results import table_markdown
from minivid.utils import atomic_write, make_generator

PRESETS = ("smoke", "full")


def available() -> list[str]:
    """Names of the benchmark modules in this package."""
    here = Path(__file__).parent
    return sorted(p.stem for p in here.glob("*.py") if not p.stem.startswith("_"))


def cpu_model() -> str:
    """The CPU's model name ("Intel(R) Xeon(R) ..."), read from /proc/cpuinfo where there is one."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_id() -> str | None:
    """The CPU's family/model numbers from /proc/cpuinfo ("25/1": AMD Zen 3), or None. A virtual machine may name
    every AMD server CPU "AMD EPYC"; these numbers (and torch's vector ISA, `cpu_capability`) tell them apart."""
    try:
        fields = dict(line.split(":", 1) for line in Path("/proc/cpuinfo").read_text().split("\n\n")[0].splitlines()
                      if ":" in line)
    except OSError:
        return None
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    return f"{fields['cpu family']}/{fields['model']}" if {"cpu family", "model"} <= set(fields) else None


def machine_info() -> dict:
    """Where a figure was measured: CPU model (family/model numbers and torch's vector ISA: two machines both
    called "AMD EPYC" ran chapter 06's autoencoder 2x apart, AVX-512 against AVX2) and count, torch threads and
    build, GPU if any."""
    info = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_model": cpu_model(),
        "cpu_id": cpu_id(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": "cuda" if torch.cuda.is_available() else "cpu",
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def run_bench(name: str, preset: str = "smoke", seed: int = 0, out: str | os.PathLike | None = None,
              seeds: int = 1) -> dict:
    """Run benchmark `name` (at `seeds` training seeds from `seed`), return its record (and write it to `out`)."""
    if name not in available():
        raise SystemExit(f"unknown benchmark {name!r}; available: {', '.join(available())}")
    if preset not in PRESETS:
        raise SystemExit(f"unknown preset {preset!r}; choose one of {PRESETS}")
    if seeds < 1:
        raise SystemExit(f"--seeds must be at least 1, got {seeds}")
    module = importlib.import_module(f"minivid.bench.{name}")
    if seeds > 1 and not hasattr(module, "headline"):
        raise SystemExit(f"bench {name} has no per-seed headline figures; run it without --seeds")
    t0 = time.perf_counter()
    result = module.run(preset=preset, seed=seed)
    if seeds > 1:
        first = {k: v for k, v in result["figures"].items() if k in module.HEADLINE}
        per_seed = [first] + [module.headline(preset=preset, seed=seed + i) for i in range(1, seeds)]
        result["figures"].update(seed_summary(per_seed, module.HEADLINE, seed))
        result.setdefault("tables", {})["seeds"] = [{"seed": seed + i, **f} for i, f in enumerate(per_seed)]
    wall = time.perf_counter() - t0
    record = {
        "bench": name,
        "preset": preset,
        "seed": seed,
        "seeds": seeds,
        "wall_time_s": round(wall, 3),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "figures": result.get("figures", {}),
        "tables": result.get("tables", {}),
    }
    if out is not None:
        atomic_write(out, lambda f: f.write(json.dumps(record, indent=2, sort_keys=False) + "\n"), binary=False)
    return record


def train_step(model, batch_fn, loss_fn, opt, i: int) -> None:
    """One optimiser step on batch i (its generator seeded by i), as a benchmark times it."""
    g = make_generator(i)
    loss = loss_fn(model, batch_fn(i, g), g)
    loss = loss[0] if isinstance(loss, tuple) else loss
    opt.zero_grad()
    loss.backward()
    opt.step()


def time_train_step(model, batch_fn, loss_fn, steps: int = 6, lr: float = 1e-4) -> float:
    """Seconds per training step (AdamW on the parameters that require grad, real batches), after one warm-up."""
    opt = torch.optim.AdamW([q for q in model.parameters() if q.requires_grad], lr=lr)
    for i in range(steps + 1):
        if i == 1:
            t0 = time.perf_counter()
        train_step(model, batch_fn, loss_fn, opt, i)
    return (time.perf_counter() - t0) / steps


# ----------------------------------------------------------------------------- helpers the chapter benches share

JUDGED = ("color_acc", "shape_acc", "size_acc", "motion_acc", "temporal_consistency", "flicker", "validity")


def judged(judge, x: torch.Tensor, labels: dict | None = None, keys=JUDGED) -> dict:
    """The judge's aggregate figures of a batch, those of `keys` it reports (the accuracies need labels, motion,
    consistency and flicker need clips), without its per-sample arrays."""
    s = judge.score(x, labels)
    return {k: s[k] for k in keys if k in s}


def mean_psnr(x: torch.Tensor, y: torch.Tensor) -> float:
    """Mean PSNR (dB) over the items of x, clamped to [-1, 1] as a saved image would be, against y; an identical
    item counts as 99 dB."""
    return psnr(x.clamp(-1, 1).contiguous(), y.contiguous()).clamp_max(99).mean().item()


def recorded_minutes(path) -> float | None:
    """Training wall minutes recorded beside checkpoint `path` by the run that trained it (None: no record, e.g. a
    checkpoint trained elsewhere)."""
    rec = training_record(path)
    return rec["train_wall_s"] / 60 if rec else None


def seed_summary(per_seed: list[dict], names, first_seed: int = 0) -> dict:
    """{"seeds": [...], "<name>_mean", "<name>_min", "<name>_max"} over the seeds that report each name."""
    out = {"seeds": [first_seed + i for i in range(len(per_seed))]}
    for k in names:
        vals = [float(f[k]) for f in per_seed if k in f]
        if vals:
            out.update({f"{k}_mean": sum(vals) / len(vals), f"{k}_min": min(vals), f"{k}_max": max(vals)})
    return out


def format_record(record: dict) -> str:
    """The readable text a bench run prints."""
    m = record["machine"]
    out = [
        f"bench {record['bench']}  preset={record['preset']}  seed={record['seed']}  "
        f"wall={record['wall_time_s']:.1f}s  ({m['device']}, {m['cpu_count']} cpus, torch {m['torch']})",
        "",
    ]
    if record["figures"]:
        out.append(table_markdown([{"figure": k, "value": v} for k, v in record["figures"].items()]))
        out.append("")
    for tname, rows in record["tables"].items():
        out.append(f"## {tname}")
        out.append(table_markdown(rows))
        out.append("")
    return "\n".join(out)
