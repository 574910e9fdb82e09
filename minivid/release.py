"""Released weights: the demo's trained models, committed under `weights/` so a fresh clone answers in seconds.

    python -m minivid.release          # (re)write weights/ from the cached models (training what is missing)

Which models: those the demo chapter's generate loads (`ChapterCLI.models` of `cli.chapters.demo_chapter`)
and every model their cache keys name (`demo_models`): no list to keep by hand. A release is a model's finished
training checkpoint with the optimiser state and history dropped (its EMA weights, its step and training config),
named exactly as the cache names the checkpoint, `<chapter>-<what>-<preset>-seed<seed>-<key>.pt`; a tensor that an
earlier release already holds bit for bit (chapter 04's frozen copy of chapter 02's U-Net) is stored as a reference
to it, so the demo's models cost a few MB. The key hashes the recipe, the data version and the chapter's
MODEL_VERSION, so a release can only ever stand in for the model its recipe would train: `common.checkpoint_path`
installs it into the cache when the cache has none (`utils.install_release`), and a changed recipe simply no longer
finds it (then the model trains, and `stale()` says why). `weights/RELEASED.json` records, per model, the file, its
sha256, the command that trained it and the judged figures its seed reached in the chapter's recorded bench.
"""
from __future__ import annotations

import hashlib
import importlib
import json
import os
from datetime import datetime, timezone
from pathlib import Path

import torch

from minivid.cli.chapters import chapter_cli, demo_chapter
from minivid.pipelines.common import RELEASE_DIR, pretrained, pretrained_path, record_lookups, training_record
from minivid.results import RESULTS_DIR
from minivid.utils import atomic_save, atomic_write, load_checkpoint, shared_weights

MANIFEST = RELEASE_DIR / "RELEASED.json"
# the figure of a model's chapter record that says how many steps its models were trained for: a record of another
# step count was measured on another recipe's model and says nothing about this release (a model not named here
# is not checked)
STEPS_FIGURE = {"ch02.text_encoder": "clip_steps", "ch02.t2i": "unet_steps", "ch03.video": "train_steps"}


def demo_models(preset: str = "full", seed: int = 0) -> list[tuple[str, str, int]]:
    """(name, preset, seed) of every model `python -m minivid demo` loads: the models the demo chapter's generate
    loads (`ChapterCLI.models`) and each model their cache keys name (a frozen image model...), sorted by name
    (so by chapter: an earlier chapter's model first)."""
    ch = demo_chapter()
    spec = chapter_cli(ch, "generate")
    if not spec.models:
        raise ValueError(f"the demo's chapter {ch} names no models to release (ChapterCLI.models)")
    with record_lookups(seeds=True) as asked:
        for name in spec.models:
            pretrained_path(name, preset, seed)
    return sorted(asked)


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def train_command(name: str, preset: str, seed: int) -> str:
    """The command that trains a model: its chapter's own `train_command` (+ the seed where it is not 0)."""
    chapter = importlib.import_module(f"minivid.pipelines.{name.split('.')[0]}")
    return chapter.train_command(preset) + (f" --seed {seed}" if seed else "")


def recorded_figures(name: str, seed: int, steps: int) -> dict:
    """The figures the chapter's recorded bench gives this seed's model: its row of the `seeds` table where the
    bench ran several seeds, else (seed 0) the record's headline figures; {} if there is no record, or if the
    record's models were trained for another number of steps than this one's."""
    chapter = name.split('.')[0]
    path = RESULTS_DIR / f"{chapter}.json"
    if not path.exists():
        return {}
    rec = json.loads(path.read_text())
    recorded_steps = rec.get("figures", {}).get(STEPS_FIGURE.get(name, ""))
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


def release(models=None, progress: bool = True) -> dict:
    """Write every model's release (default: `demo_models()`) and the manifest (removing releases no longer
    listed); returns the manifest. A tensor bit-for-bit equal to one an earlier release of the list holds is stored
    once (`utils.shared_weights`), and installing the release reads it from there (`utils.install_release`)."""
    RELEASE_DIR.mkdir(exist_ok=True)
    entries, seen = [], {}
    for name, preset, seed in demo_models() if models is None else models:
        pretrained(name, preset, seed, progress=progress)               # the cached model, trained first if absent
        path = pretrained_path(name, preset, seed)
        ck = load_checkpoint(path)
        out = RELEASE_DIR / path.name
        weights, shared = shared_weights(ck["ema"] if ck.get("ema") is not None else ck["model"], seen, out.name)
        # one copy of the weights, as both model and EMA; tensors another release holds are references
        atomic_save({"format": ck["format"], "step": ck["step"], "train_config": ck.get("train_config"),
                     "model": weights, "ema": weights, "shared": shared, "released": True}, out)
        entries.append({"name": name, "preset": preset, "seed": seed, "file": out.name, "steps": int(ck["step"]),
                        "bytes": out.stat().st_size, "sha256": sha256(out), "shared": len(shared),
                        "command": train_command(name, preset, seed),
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
        if path.exists() and load_checkpoint(path).get("released"):
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


__all__ = ["MANIFEST", "demo_models", "train_command", "release", "manifest", "stale", "forget_installed",
           "recorded_figures", "released_figures", "sha256"]
