"""Small shared utilities: seeding, devices, paths, file locks, atomic checkpoints.

Checkpoints and caches are written so that nothing a learner does loses work:

- `atomic_save` writes a temp file in the same folder and renames it over the target (a crash
  mid-write leaves the old file), under a file lock, with the user's normal permissions;
- `file_lock(path)` is the lock (`<path>.lock`, the `filelock` package): two processes that would
  write the same file take turns; in one process it is re-entrant;
- `load_checkpoint` tells a missing, unreadable (permissions), corrupt and non-finite file apart,
  each with what to do; `unfinished_checkpoint_error` words the "run it again to finish" case;
- `check_same_config` refuses to resume a checkpoint trained with another recipe.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import random
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import filelock
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
    """A checkpoint file is missing, unreadable, truncated, non-finite or not a minivid checkpoint."""


# ----------------------------------------------------------------------------- locks and atomic writes

@contextlib.contextmanager
def file_lock(path: str | os.PathLike, what: str = "") -> Iterator[None]:
    """Hold `<path>.lock` (an OS file lock) for the block: other processes asking for it wait.

    Re-entrant within a process (one lock object per path), so `train()` can hold a checkpoint's
    lock while `atomic_save` takes it again. The lock is released when the block ends or the
    process dies. A folder where no lock file can be created (read-only) is used unlocked: nobody
    can write there anyway. `what` names the waiter in the "waiting for ..." line.
    """
    path = Path(os.path.abspath(path))             # one lock object per file, however it is named
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = filelock.FileLock(str(path) + ".lock", is_singleton=True)
    try:
        try:
            lock.acquire(timeout=0)
        except filelock.Timeout:
            print(f"minivid: {what or path.name}: another process is training or reading {path.name}; "
                  f"waiting for it (lock {path}.lock)", file=sys.stderr, flush=True)
            lock.acquire()
        locked = True
    except PermissionError:
        locked = False
    try:
        yield
    finally:
        if locked:
            lock.release()


def _umask() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)       # no /proc (macOS): read it by setting it, then restore it
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, write: Callable, binary: bool = True, keep_mode: bool = True) -> Path:
    """Call write(f) on a temp file next to `path`, fsync, then rename it over `path`.

    A crash mid-write leaves the previous file intact (rename is atomic on POSIX). The new file gets
    the user's normal mode (0o666 & ~umask; mkstemp alone would make it 0600), or with keep_mode
    the mode of the file it replaces.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = path.stat().st_mode & 0o7777 if keep_mode and path.exists() else 0o666 & ~_umask()
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb" if binary else "w", encoding=None if binary else "utf-8") as f:
            os.fchmod(f.fileno(), mode)
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_save(obj, path: str | os.PathLike) -> Path:
    """torch.save `obj` to `path` atomically (see `atomic_write`) with the user's normal mode, holding
    `file_lock(path)` (so the 0600 files of older minivid versions get a normal mode on their next save).

    A folder you may not write to is a CheckpointError that says so (not a traceback).
    """
    path = Path(path)
    try:
        with file_lock(path):
            return atomic_write(path, lambda f: torch.save(obj, f), keep_mode=False)
    except PermissionError as e:
        raise CheckpointError(f"cannot write {path}: permission denied ({e.strerror}) in {path.parent}; check the "
                              f"folder's permissions, or set MINIVID_HOME to a folder you can write") from None


# ----------------------------------------------------------------------------- loading

def nonfinite_entries(state: dict, prefix: str = "") -> list[str]:
    """Names of the floating-point tensors in a (nested) state dict holding NaN or +-inf."""
    bad = []
    for k, v in state.items():
        if isinstance(v, dict):
            bad += nonfinite_entries(v, f"{prefix}{k}.")
        elif torch.is_tensor(v) and (v.is_floating_point() or v.is_complex()) and not bool(torch.isfinite(v).all()):
            bad.append(f"{prefix}{k}")
    return bad


def check_finite_state(state: dict, path: str | os.PathLike, retrain_cmd: str | None = None,
                       how_to_retrain: str = "") -> None:
    """Refuse a state dict with NaN/inf weights: CheckpointError naming the file, the tensors and what to do."""
    bad = nonfinite_entries(state)
    if bad:
        more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
        raise CheckpointError(
            f"checkpoint {path} holds non-finite weights (NaN or inf in {', '.join(bad[:3])}{more}); it is unusable "
            f"(the run that wrote it diverged). {_redo(retrain_cmd, how_to_retrain)}")


def _redo(retrain_cmd: str | None, how_to_retrain: str = "") -> str:
    if retrain_cmd:
        return f"Delete it and run `{retrain_cmd}`."
    if how_to_retrain:
        return f"To recreate it: {how_to_retrain}"
    return "Delete it and train again."


def load_checkpoint(path: str | os.PathLike, how_to_retrain: str = "", map_location="cpu", *,
                    retrain_cmd: str | None = None, check_finite: bool = True) -> dict:
    """torch.load(weights_only=True) with one clear error per failure.

    retrain_cmd: the command that recreates the file (named in the messages); how_to_retrain: an
    older free-text hint, used when retrain_cmd is not given. check_finite: refuse a checkpoint whose
    "model" or "ema" weights hold NaN/inf (see `check_finite_state`).
    """
    path = Path(path)
    redo = _redo(retrain_cmd, how_to_retrain)
    if not path.exists():
        make = f"Run `{retrain_cmd}` to create it." if retrain_cmd else redo.replace("Delete it and train", "Train")
        raise CheckpointError(f"checkpoint not found: {path}. {make}")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except PermissionError:
        raise CheckpointError(f"cannot read checkpoint {path}: permission denied (the file is not corrupt); "
                              f"fix its permissions (ls -l {path}) or run as its owner") from None
    except IsADirectoryError:
        raise CheckpointError(f"checkpoint {path} is a directory, not a file; move it away and retry") from None
    except Exception as e:  # truncated zip, pickle garbage, wrong format...
        first = (str(e).strip().splitlines() or [""])[0][:160]
        if "weights only" in first.lower() or "weights_only" in first.lower():
            first = "not a weights-only PyTorch file"     # never advise loading untrusted pickles
        raise CheckpointError(
            f"checkpoint {path} is corrupt or truncated ({type(e).__name__}: {first}). {redo}") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"checkpoint {path} is not a minivid checkpoint (got {type(obj).__name__}). {redo}")
    if check_finite:
        for key in ("model", "ema"):
            if isinstance(obj.get(key), dict):
                check_finite_state(obj[key], path, retrain_cmd, how_to_retrain)
    return obj


def unfinished_checkpoint_error(path: str | os.PathLike, step: int, steps: int, retrain_cmd: str) -> CheckpointError:
    """The error for a checkpoint that stopped early: resuming finishes it (never "delete it")."""
    return CheckpointError(f"checkpoint {path} is unfinished (step {step} of {steps}); run `{retrain_cmd}` "
                           f"to finish it (it resumes from step {step})")


def to_plain(x):
    """Config dicts -> only types torch.load(weights_only=True) accepts (tuples -> lists, others -> str)."""
    if isinstance(x, dict):
        return {str(k): to_plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [to_plain(v) for v in x]
    if isinstance(x, (int, float, str, bool)) or x is None:
        return x
    return str(x)


def check_same_config(path, stored: dict | None, now: dict, fields, retrain_cmd: str | None = None) -> None:
    """Refuse to resume `path` when a field that changes the result differs (CheckpointError naming each).

    stored: the checkpoint's config (to_plain form; None or a missing field, as in older checkpoints,
    is not checked); now: the asked config, to_plain form.
    """
    if not isinstance(stored, dict):
        return
    diffs = [f"{k}={stored[k]!r} in the checkpoint but {now[k]!r} now" for k in fields
             if k in stored and k in now and stored[k] != now[k]]
    if diffs:
        again = f" and run `{retrain_cmd}`" if retrain_cmd else " and train again"
        raise CheckpointError(
            f"cannot resume {path}: it was trained with another recipe ({'; '.join(diffs)}); resuming would mix "
            f"two recipes. To continue it, train with its values; to start over with the new ones, delete it{again}.")


# ----------------------------------------------------------------------------- released checkpoints

def tensor_digest(t: torch.Tensor) -> str:
    """A tensor's content as a hash (dtype, shape and bytes): equal digests, bit-for-bit equal tensors."""
    t = t.detach().contiguous().cpu()
    return hashlib.sha256(f"{t.dtype}{tuple(t.shape)}".encode() + t.reshape(-1).view(torch.uint8).numpy().tobytes()).hexdigest()


def shared_weights(weights: dict, seen: dict, file: str) -> tuple[dict, dict]:
    """Split a release's weights into (kept, shared): a tensor bit-for-bit equal to one an earlier release holds
    (`seen`: digest -> (file, key), which this call extends with `file`'s own tensors) is stored as a reference
    [file, key] instead (chapter 04's frozen copy of chapter 02's U-Net costs nothing twice)."""
    digests = {k: tensor_digest(t) for k, t in weights.items()}
    shared = {k: list(seen[d]) for k, d in digests.items() if d in seen}
    kept = {k: t for k, t in weights.items() if k not in shared}
    for k in kept:
        seen.setdefault(digests[k], (file, k))
    return kept, shared


def install_release(src: Path, dst: Path) -> None:
    """Write the released checkpoint `src` (see `minivid.release`) to `dst` as an ordinary finished checkpoint:
    its "shared" references are read from the sibling releases they name. The caller holds `dst`'s lock."""
    ck = load_checkpoint(src)
    shared = ck.pop("shared", None) or {}
    weights, others = dict(ck["model"]), {}
    for key, (file, there) in shared.items():
        if file not in others:
            others[file] = load_checkpoint(Path(src).parent / file)["model"]
        weights[key] = others[file][there]
    ck["model"] = ck["ema"] = weights
    atomic_write(dst, lambda f: torch.save(ck, f))
