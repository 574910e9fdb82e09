"""Benchmarks: `python -m minivid bench NAME [--preset smoke|full] [--out FILE.json]`.

Each benchmark is a module `minivid.bench.<name>` with a function

    run(preset: str, seed: int) -> dict   # {"figures": {...}, "tables": {name: [row, ...]}}

`figures` is a flat dict of named numbers (the targets an issue names); `tables` are lists of
row dicts, printed here and rendered into the chapters by `minivid.results`. The runner adds
the metadata every recorded figure carries: preset, seed, wall time, machine, versions.
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

from minivid.results import table_markdown

PRESETS = ("smoke", "full")


def available() -> list[str]:
    """Names of the benchmark modules in this package."""
    here = Path(__file__).parent
    return sorted(p.stem for p in here.glob("*.py") if not p.stem.startswith("_"))


def machine_info() -> dict:
    info = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": "cuda" if torch.cuda.is_available() else "cpu",
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def run_bench(name: str, preset: str = "smoke", seed: int = 0, out: str | os.PathLike | None = None) -> dict:
    """Run benchmark `name`, return its record (and write it as JSON to `out`)."""
    if name not in available():
        raise SystemExit(f"unknown benchmark {name!r}; available: {', '.join(available())}")
    if preset not in PRESETS:
        raise SystemExit(f"unknown preset {preset!r}; choose one of {PRESETS}")
    module = importlib.import_module(f"minivid.bench.{name}")
    t0 = time.perf_counter()
    result = module.run(preset=preset, seed=seed)
    wall = time.perf_counter() - t0
    record = {
        "bench": name,
        "preset": preset,
        "seed": seed,
        "wall_time_s": round(wall, 3),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "figures": result.get("figures", {}),
        "tables": result.get("tables", {}),
    }
    if out is not None:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(record, indent=2, sort_keys=False) + "\n")
    return record


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
