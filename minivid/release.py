"""Released weights: the demo's trained models, committed under `weights/` so a fresh clone answers in seconds.

    python -m minivid.release          # (re)write weights/ from the cached models (training what is missing)

A release is a model's finished training checkpoint with the optimiser state and history dropped (its EMA weights,
its step and training config: a few MB in all), named exactly as the cache names the checkpoint,
`<chapter>-<what>-<preset>-seed<seed>-<key>.pt`. The key hashes the recipe, the data version and the chapter's
MODEL_VERSION, so a release can only ever stand in for the model its recipe would train: `common.checkpoint_path`
copies it into the cache when the cache has none, and a changed recipe simply no longer finds it (then the model
trains, and `stale()` says why). `weights/RELEASED.json` records, per model, the file, its sha256, the command that
trained it and the judged figures its seed reached in the chapter's recorded bench.
"""
from __future__ import annotations

import hashlib
import json
import os
from datetime import datetime, timezone
from pathlib import Path

import torch

from minivid.pipelines.common import RELEASE_DIR, pretrained, pretrained_path, training_record
from minivid.results import RESULTS_DIR
from minivid.utils import atomic_save, atomic_write, load_checkpoint

MANIFEST = RELEASE_DIR / "RELEASED.json"
# (model name, preset, seed): what `python -m minivid demo` loads - chapter 02's text encoder and chapter 03's model
RELEASED = (("ch02.text_encoder", "full", 0), ("ch03.video", "full", 0))
COMMANDS = {"ch02": "python -m minivid train ch02 --preset full", "ch03": "python -m minivid train ch03 --preset full"}


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# the figure of each chapter's record that says how many steps its model was trained for: a record of another
# step count was measured on another recipe's model and says nothing about this release
STEPS_FIGURE = {"ch02": "clip_steps", "ch03": "train_steps"}


def recorded_figures(name: str, seed: int, steps: int) -> dict:
    """The figures the chapter's recorded bench gives this seed's model: its row of the `seeds` table where the
    bench ran several seeds, else (seed 0) the record's headline figures; {} if there is no record, or if the
    record's models were trained for another number of steps than this one's."""
    chapter = name.split('.')[0]
    path = RESULTS_DIR / f"{chapter}.json"
    if not path.exists():
        return {}
    rec = json.loads(path.read_text())
    recorded_steps = rec.get("figures", {}).get(STEPS_FIGURE.get(chapter, ""))
    if recorded_steps is not None and int(recorded_steps) != steps:
        return {}
    rows = [r for r in rec.get("tables", {}).get("seeds", []) if r.get("seed") == seed]
    if rows:
        return {k: v for k, v in rows[0].items() if k != "seed"}
    figs = rec.get("figures", {})
    return {k: v for k, v in figs.items() if k.startswith("heldout_")} if rec.get("seed") == seed else {}


def released_figures(name: str, seed: int, path, steps: int) -> dict:
    """What is known of a released model: what its training run measured of it (`heldout_*` of its training
    record, e.g. the text encoder's held-out direction retrieval) and its row of the chapter's recorded bench."""
    own = {k: v for k, v in training_record(path).items() if k.startswith("heldout_")}
    return {**own, **recorded_figures(name, seed, steps)}


def release(models=RELEASED, progress: bool = True) -> dict:
    """Write every model's release and the manifest (removing releases no longer listed); returns the manifest."""
    RELEASE_DIR.mkdir(exist_ok=True)
    entries = []
    for name, preset, seed in models:
        pretrained(name, preset, seed, progress=progress)               # the cached model, trained first if absent
        path = pretrained_path(name, preset, seed)
        ck = load_checkpoint(path)
        weights = ck["ema"] if ck.get("ema") is not None else ck["model"]
        out = RELEASE_DIR / path.name
        atomic_save({"format": ck["format"], "step": ck["step"], "train_config": ck.get("train_config"),
                     "model": weights, "ema": weights, "released": True}, out)   # one copy of the weights, shared
        entries.append({"name": name, "preset": preset, "seed": seed, "file": out.name, "steps": int(ck["step"]),
                        "bytes": out.stat().st_size, "sha256": sha256(out),
                        "command": COMMANDS.get(name.split(".")[0], ""),
                        "figures": released_figures(name, seed, path, int(ck["step"]))})
    keep = {e["file"] for e in entries}
    for old in RELEASE_DIR.glob("*.pt"):
        if old.name not in keep:
            old.unlink()
    manifest = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "torch": torch.__version__,
                "models": entries}
    atomic_write(MANIFEST, lambda f: f.write(json.dumps(manifest, indent=1) + "\n"), binary=False)
    return manifest


def manifest() -> dict:
    return json.loads(MANIFEST.read_text()) if MANIFEST.exists() else {"models": []}


def stale() -> list[str]:
    """One line per released model whose recipe has changed since its release (its key no longer matches)."""
    out = []
    for e in manifest()["models"]:
        now = pretrained_path(e["name"], e["preset"], e["seed"]).name
        if now != e["file"]:
            out.append(f"the released {e['name']} ({e['file']}) was trained with another recipe than today's "
                       f"({now}); it is trained anew. To release the new one: python -m minivid.release")
    return out


def forget_installed() -> list[Path]:
    """Ignore the releases from now on (MINIVID_NO_RELEASES) and delete their installed copies from the cache, so
    the next load trains those models here (`demo --train`); a model trained here is kept. Returns what was deleted."""
    os.environ["MINIVID_NO_RELEASES"] = "1"
    gone = []
    for e in manifest()["models"]:
        path = pretrained_path(e["name"], e["preset"], e["seed"])
        if path.exists() and sha256(path) == e["sha256"]:
            path.unlink()
            gone.append(path)
    return gone


def main() -> int:
    m = release()
    for e in m["models"]:
        print(f"released {e['name']} ({e['preset']}, seed {e['seed']}): weights/{e['file']}, "
              f"{e['bytes'] / 2 ** 20:.1f} MiB")
    print(f"wrote {MANIFEST}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = ["MANIFEST", "RELEASED", "release", "manifest", "stale", "forget_installed", "recorded_figures",
           "released_figures", "sha256"]
