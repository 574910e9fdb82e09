"""The chapters the command line can drive, found by themselves: no list to keep.

A module `minivid/pipelines/chNN.py` that defines `CLI = common.ChapterCLI(...)` is a chapter the CLI can
train (and, with `generate`, sample text-to-video from). Adding chapter NN adds files; it edits nothing here.
"""
from __future__ import annotations

import importlib
import pkgutil
import re

import minivid.pipelines as _pipelines

_NAME = re.compile(r"^ch\d\d$")


class UsageError(ValueError):
    """A command-line argument is wrong: one line saying what was wrong and what to do."""


def chapter_names() -> list[str]:
    """"ch01", "ch02", ... : every chapter module of minivid.pipelines, in order."""
    return sorted(m.name for m in pkgutil.iter_modules(_pipelines.__path__) if _NAME.match(m.name))


def chapter_name(arg: str) -> str:
    """"3", "03", "ch03" -> "ch03"; a clear UsageError for anything else."""
    a = str(arg).strip().lower()
    if a.startswith("ch"):
        a = a[2:]
    if not a.isdigit():
        raise UsageError(f"{arg!r} is not a chapter; give a number or a name like ch03 "
                         f"(chapters: {', '.join(chapter_names())})")
    return f"ch{int(a):02d}"


def chapter_cli(arg: str, need: str = "train"):
    """The `CLI` spec of a chapter; UsageError when it has none or cannot do `need` ("train" | "generate")."""
    name = chapter_name(arg)
    if name not in chapter_names():
        raise UsageError(f"no chapter {name!r}; chapters with recipes: {', '.join(chapter_names())}")
    spec = getattr(importlib.import_module(f"minivid.pipelines.{name}"), "CLI", None)
    if spec is None or getattr(spec, need, None) is None:
        able = [n for n in chapter_names() if getattr(_spec(n), need, None) is not None]
        what = "text-to-video generator" if need == "generate" else "command-line training recipe"
        raise UsageError(f"chapter {name} has no {what}; chapters that have one: {', '.join(able) or 'none yet'}")
    return spec


def _spec(name: str):
    return getattr(importlib.import_module(f"minivid.pipelines.{name}"), "CLI", None)


def video_chapters() -> list[str]:
    """Chapters whose models make video from text."""
    return [n for n in chapter_names() if getattr(_spec(n), "generate", None) is not None]


def demo_chapter() -> str | None:
    """The chapter the demo runs: the text-to-video chapter with the highest `demo_rank` (None: none yet)."""
    ranked = [(getattr(_spec(n), "demo_rank", 0), n) for n in video_chapters()]
    ranked = [r for r in ranked if r[0] > 0]
    return max(ranked)[1] if ranked else None


__all__ = ["UsageError", "chapter_names", "chapter_name", "chapter_cli", "video_chapters", "demo_chapter"]
