"""The demo's wall time as a new user meets it: `python -m minivid bench demo --preset full`.

Three runs of the README's demo command, each a fresh process in an empty model cache (`MINIVID_HOME` pointed at a
temporary folder, as on a fresh clone):

1. `python -m minivid demo`: loads the released weights committed in `weights/` and samples;
2. `python -m minivid demo --train`: trains the text encoder and the text-to-video model from scratch here (the
   recipes' own training, with progress bars), then samples;
3. `python -m minivid demo` again: the models cached by 2.

The smoke preset runs the same three commands on the smoke recipes (released weights are only the full preset's).
Issue 19's targets: 1 under a minute, 2 within ten minutes on 2 cores, 3 in seconds.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from minivid.results import RESULTS_DIR, ResultsError, load_record

RUNS = (("released", ()), ("train", ("--train",)), ("cached", ()))


def recorded_train_time(preset: str, results_dir: Path = RESULTS_DIR) -> str | None:
    """What `demo --train` took when this bench recorded it for `preset`, as one line for the demo to print before
    it trains (None: no record of that preset)."""
    try:
        rec = load_record("demo", results_dir)
    except ResultsError:
        return None
    wall, m = rec["figures"].get("demo_train_s"), rec["machine"]
    if rec["preset"] != preset or wall is None:
        return None
    where = f"{m.get('cpu_model', 'unknown CPU')}, {rec['date'][:10]}, `python -m minivid bench demo --preset {preset}`"
    return f"the recorded run took {wall / 60:.1f} minutes on {m.get('cpu_count', '?')} cores ({where})"


def timed_demo(home: Path, extra: tuple[str, ...], preset: str, out: Path) -> tuple[float, str]:
    """(wall seconds, the command's last output line) of one `python -m minivid demo` in cache `home`."""
    env = {**os.environ, "MINIVID_HOME": str(home)}
    cmd = [sys.executable, "-m", "minivid", "demo", "--preset", preset, "--out", str(out), *extra]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[1:])} failed (exit {done.returncode}): {done.stderr.strip()[-500:]}")
    return wall, (done.stdout.strip().splitlines() or [""])[-1]


def run(preset: str = "smoke", seed: int = 0) -> dict:
    rows, figures = [], {}
    with tempfile.TemporaryDirectory(prefix="minivid-demo-") as tmp:
        home = Path(tmp) / "home"
        for name, extra in RUNS:
            wall, last = timed_demo(home, extra, preset, Path(tmp) / f"{name}.gif")
            rows.append({"run": f"python -m minivid demo {' '.join(extra)}".strip() + f" ({name})",
                         "wall s": wall, "last line": last})
            figures[f"demo_{name}_s"] = wall
    return {"figures": figures, "tables": {"runs": rows}}


__all__ = ["RUNS", "recorded_train_time", "timed_demo", "run"]
