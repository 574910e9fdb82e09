"""Small shared utilities: seeding, devices, paths, atomic checkpoints."""
from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path

import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]


def set_seed(seed: int) -> None:
    """Seed python, numpy and torch (all devices) in one call."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def default_device() -> torch.device:
    """CUDA when present, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def make_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(int(seed))
    return g


def cache_dir(kind: str = "checkpoints") -> Path:
    """Where minivid keeps generated artefacts (git-ignored).

    `$MINIVID_HOME/<kind>` when MINIVID_HOME is set (tests point it at a temp dir),
    else `<repo>/<kind>` (e.g. `checkpoints/`, `datasets/cache/`).
    """
    home = os.environ.get("MINIVID_HOME")
    base = Path(home) if home else REPO_ROOT
    path = base / kind
    path.mkdir(parents=True, exist_ok=True)
    return path


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, truncated or not a minivid checkpoint."""


def atomic_save(obj, path: str | os.PathLike) -> Path:
    """torch.save to a temp file in the same folder, fsync, then rename over `path`.

    A crash mid-write leaves the previous file intact: rename is atomic on POSIX.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def load_checkpoint(path: str | os.PathLike, how_to_retrain: str = "", map_location="cpu") -> dict:
    """torch.load(weights_only=True) with a clear error for missing or corrupt files."""
    path = Path(path)
    hint = f" To recreate it: {how_to_retrain}" if how_to_retrain else " Delete it and retrain."
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}.{hint}")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated zip, pickle garbage, wrong format...
        first = (str(e).strip().splitlines() or [""])[0][:160]
        if "weights only" in first.lower() or "weights_only" in first.lower():
            first = "not a weights-only PyTorch file"     # never advise loading untrusted pickles
        raise CheckpointError(f"checkpoint {path} is corrupt or truncated ({type(e).__name__}: {first}).{hint}") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"checkpoint {path} is not a minivid checkpoint (got {type(obj).__name__}).{hint}")
    return obj
