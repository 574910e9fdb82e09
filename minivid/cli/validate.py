"""Argument checks that run before any training or sampling starts: one clear line for each bad input."""
from __future__ import annotations

import argparse
import math
import os
import tempfile
from pathlib import Path

from minivid.cli.chapters import UsageError

VIDEO_EXTENSIONS = (".gif", ".mp4")


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {v}")
    return v


def int_arg(text: str) -> int:
    """argparse type: any integer (e.g. a seed), with a readable message."""
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None


def finite_float(text: str) -> float:
    """argparse type: a finite number."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return v


def output_video(path: str) -> Path:
    """A .gif/.mp4 path whose folder exists or can be made, and is writable."""
    p = Path(path)
    if p.suffix.lower() not in VIDEO_EXTENSIONS:
        raise UsageError(f"--out {path}: the file must end in .gif or .mp4 (got {p.suffix or 'no extension'!r})")
    if p.is_dir():
        raise UsageError(f"--out {path} is a folder; give a file name ending in .gif or .mp4")
    folder = p.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:                                    # the only honest test (root passes os.access everywhere): write a probe
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".minivid-probe-"):
            pass
    except OSError as e:
        raise UsageError(f"--out {path}: cannot write in {folder} ({e.strerror or type(e).__name__}); "
                         "choose another path") from None
    if p.exists() and not os.access(p, os.W_OK):
        raise UsageError(f"--out {path}: the file exists and is not writable; choose another path")
    return p


def frames_within(frames: int | None, allowed: tuple[int, int], chapter: str) -> None:
    lo, hi = allowed
    if frames is not None and not lo <= frames <= hi:
        raise UsageError(f"--frames {frames}: the {chapter} model makes clips of {lo} to {hi} frames")


def prompt_text(prompt: str | None, flag: str = "prompt") -> str:
    if prompt is None or not prompt.strip():
        raise UsageError(f"the {flag} is empty; describe a clip, e.g. \"a big red circle moving to the right\"")
    return prompt.strip()


__all__ = ["VIDEO_EXTENSIONS", "positive_int", "int_arg", "finite_float", "output_video", "frames_within",
           "prompt_text"]
