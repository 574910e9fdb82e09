"""What every chapter's checker module shares: known mistakes, hints, and how a checker reports.

A checker module (`minivid.exercises.ch01`, ..., `minivid.exercises.appendix`) may define

* `CHECKS = {"1.1": check_q_sample, ...}`: functions that run the learner's code against a
  reference and raise AssertionError with a diagnosis a learner can act on;
* `HINTS = {"1.1": ["first nudge", "more", "nearly the answer"], ...}`: staged hints
  (`python -m minivid exercises hint 1.1 [--level N]`);
* `MISTAKES = [Mistake("1.1", "what the learner got wrong", old, new), ...]`: plausible wrong
  answers, each a small edit of the solution region (`old` -> `new`); the meta-test substitutes
  each one and requires a test of that exercise to fail on it.

The module of chapter N is `minivid.exercises.chNN` (appendix: `minivid.exercises.appendix`);
nothing lists them, a chapter's module is found by its name.
"""
from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType

from minivid.exercises.regions import APPENDIX, normalize_chapter

_EX_RE = re.compile(r"Exercise ((?:\d+|A)\.\d+)")


@dataclass(frozen=True)
class Mistake:
    """A plausible wrong answer to `exercise`: the solution region with `old` replaced by `new`."""
    exercise: str
    what: str        # the mistake in a learner's words ("forgets the square root of alpha_bar")
    old: str         # text that occurs in the solution region
    new: str         # what a learner who makes the mistake writes instead

    def apply(self, body: str) -> str:
        if self.old not in body:
            raise ValueError(f"known mistake of exercise {self.exercise} ({self.what}) no longer applies: "
                             f"{self.old!r} is not in the solution region any more; update it in "
                             f"{module_name(self.exercise.split('.')[0])}")
        return body.replace(self.old, self.new, 1)


def module_name(chapter) -> str:
    """minivid.exercises.ch03 for chapter 3, minivid.exercises.appendix for A."""
    c = normalize_chapter(chapter)
    return "minivid.exercises.appendix" if c == APPENDIX else f"minivid.exercises.ch{int(c):02d}"


def chapter_module(chapter) -> ModuleType | None:
    """The checker module of a chapter, or None if it has none yet."""
    name = module_name(chapter)
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as e:
        if e.name == name:
            return None
        raise


def _table(exercise: str, attr: str):
    mod = chapter_module(exercise.split(".")[0])
    return getattr(mod, attr, None) if mod is not None else None


def checker_for(exercise: str) -> Callable | None:
    return (_table(exercise, "CHECKS") or {}).get(exercise)


def hints_for(exercise: str) -> list[str]:
    return list((_table(exercise, "HINTS") or {}).get(exercise, []))


def mistakes_for(exercise: str) -> list[Mistake]:
    return [m for m in (_table(exercise, "MISTAKES") or []) if m.exercise == exercise]


# ----------------------------------------------------------------------------- for checkers

def call(ex: str, where: str, fn: Callable, *args, **kwargs):
    """fn(*args, **kwargs); an unfinished exercise becomes a NotImplementedError naming `ex` (and, if the
    stub that raised belongs to another exercise, which one to do first)."""
    try:
        return fn(*args, **kwargs)
    except NotImplementedError as e:
        other = _EX_RE.search(str(e))
        if other and other.group(1) != ex:
            raise NotImplementedError(f"Exercise {ex} needs exercise {other.group(1)} first: {e}") from None
        raise NotImplementedError(f"Exercise {ex} is not implemented yet: fill in the solution region of "
                                  f"{where}.") from None


def guarded(ex: str, where: str, what: str, fn: Callable, *args, hint: str = "", **kwargs):
    """`call`, with any other error of the learner's code turned into the checker's failure (naming the exercise,
    the error and `hint`); an unfinished exercise stays a NotImplementedError."""
    try:
        return call(ex, where, fn, *args, **kwargs)
    except NotImplementedError:
        raise
    except Exception as e:  # noqa: BLE001 - a learner's bug of any kind becomes feedback
        raise failed(ex, what, f"raised {type(e).__name__}: {e}", hint) from e


def passed(ex: str, what: str) -> bool:
    print(f"Exercise {ex} ({what}): all checks passed.")
    return True


def failed(ex: str, what: str, problem: str, *hints: str) -> AssertionError:
    """The AssertionError a checker raises: `Exercise N.M (what): problem` then `-> hint` lines."""
    lines = [f"Exercise {ex} ({what}): {problem}"] + [f"  -> {h}" for h in hints if h]
    return AssertionError("\n".join(lines))


__all__ = ["Mistake", "module_name", "chapter_module", "checker_for", "hints_for", "mistakes_for", "call",
           "guarded", "passed", "failed"]
