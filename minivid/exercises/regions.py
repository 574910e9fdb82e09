"""Solution regions: find them, strip them, tell a stub from a learner's answer.

A region sits inside a function body; signature, docstring and shape contract stay outside it:

    | def q_sample(x0, t, noise, schedule):
    |     \"\"\"Sample x_t ~ q(x_t | x_0).  x0, noise: (B, ...); t: (B,) long.\"\"\"
    |     ### BEGIN SOLUTION  # exercise 1.1: sample x_t from q(x_t | x_0)
    |     ...
    |     ### END SOLUTION

(drawn with a `|` margin so this file holds no region). Exercise ids are "N.M" for chapter N and
"A.M" for the appendix. The student version of a region keeps both markers, so a learner (and
`exercises status`) can see where each answer goes, and replaces the body by a TODO line and
`raise NotImplementedError("Exercise N.M: title")`.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from minivid.utils import REPO_ROOT

BEGIN_RE = re.compile(r"^(?P<indent>[ \t]*)### BEGIN SOLUTION\b(?P<rest>.*)$")
END_RE = re.compile(r"^[ \t]*### END SOLUTION\b")
ID_RE = r"(?:\d+|A)\.\d+"
TAG_RE = re.compile(rf"#\s*exercise\s+(?P<id>{ID_RE})\s*:\s*(?P<title>\S.*?)\s*$", re.IGNORECASE)
EXERCISE_ID_RE = re.compile(rf"^{ID_RE}$")
APPENDIX = "A"


class ExerciseFormatError(ValueError):
    """A solution region is nested, unterminated, badly tagged, or an exercise id is used twice."""


def normalize_chapter(chapter) -> str:
    """'1', '01', 1 -> '1'; 'a', 'A' -> 'A'. ValueError for anything else."""
    s = str(chapter).strip()
    if s.upper() == APPENDIX:
        return APPENDIX
    if s.isdigit():
        return str(int(s))
    raise ValueError(f"{chapter!r} is not a chapter: use a number (e.g. 1) or A for the appendix")


def chapter_key(chapter: str) -> tuple[int, int]:
    """Sort order: chapters 0, 1, 2, ... then the appendix."""
    return (1, 0) if chapter == APPENDIX else (0, int(chapter))


def id_key(exercise: str) -> tuple[int, int, int]:
    chapter, minor = exercise.split(".")
    return (*chapter_key(chapter), int(minor))


@dataclass(frozen=True)
class Region:
    id: str          # "1.2" or "A.1"
    title: str
    path: Path       # the file it lives in
    begin: int       # 1-based line numbers of the two markers
    end: int
    indent: str = ""

    @property
    def chapter(self) -> str:
        return self.id.split(".")[0]

    def where(self, root: Path = REPO_ROOT) -> str:
        """`minivid/diffusion/process.py:29` (relative to root when possible)."""
        try:
            rel = Path(self.path).resolve().relative_to(Path(root).resolve())
        except ValueError:
            rel = self.path
        return f"{rel}:{self.begin}"

    def body(self, text: str | None = None) -> str:
        """The lines strictly between the two markers (the answer)."""
        lines = (text if text is not None else Path(self.path).read_text()).splitlines(keepends=True)
        return "".join(lines[self.begin:self.end - 1])

    def stub(self) -> str:
        """What the student copy has between the markers."""
        msg = f"Exercise {self.id}: {self.title}"
        return (f"{self.indent}# TODO: write your answer here, in place of the raise "
                f"(check it: python -m minivid exercises check {self.chapter})\n"
                f"{self.indent}raise NotImplementedError({msg!r})\n")

    def is_stub(self, text: str | None = None) -> bool:
        """True while the body is still the student copy's `raise NotImplementedError` (comments aside)."""
        code = [ln.strip() for ln in self.body(text).splitlines() if ln.strip() and not ln.strip().startswith("#")]
        return len(code) == 1 and code[0].startswith("raise NotImplementedError(") and f"Exercise {self.id}:" in code[0]

    def digest(self, text: str | None = None) -> str:
        """A short hash of the body: a recorded check result is only valid for the answer it checked."""
        return hashlib.sha256(self.body(text).encode()).hexdigest()[:16]


def parse_regions(path: Path, text: str | None = None) -> list[Region]:
    """All solution regions in one file; raises ExerciseFormatError on malformed markers."""
    path = Path(path)
    lines = (text if text is not None else path.read_text()).splitlines()
    regions, open_at, tag, indent = [], None, None, ""
    for i, line in enumerate(lines, start=1):
        b = BEGIN_RE.match(line)
        if b:
            if open_at is not None:
                raise ExerciseFormatError(f"{path}:{i}: nested BEGIN SOLUTION (the region opened at line {open_at} "
                                          "is not closed)")
            tag = TAG_RE.search(b.group("rest"))
            if tag is None:
                raise ExerciseFormatError(f"{path}:{i}: BEGIN SOLUTION needs a tag like "
                                          "'### BEGIN SOLUTION  # exercise 1.2: short title' (ids: N.M, or A.M "
                                          "for the appendix)")
            open_at, indent = i, b.group("indent")
        elif END_RE.match(line):
            if open_at is None:
                raise ExerciseFormatError(f"{path}:{i}: END SOLUTION without a matching BEGIN SOLUTION")
            regions.append(Region(tag.group("id").upper(), tag.group("title"), path, open_at, i, indent))
            open_at = None
    if open_at is not None:
        raise ExerciseFormatError(f"{path}:{open_at}: BEGIN SOLUTION is never closed by END SOLUTION")
    return regions


def find_regions(package_dir: Path = REPO_ROOT / "minivid") -> list[Region]:
    """Every region in the package, sorted by exercise id (0.1 ... 8.3, then A.1 ...); ids must be unique."""
    regions = []
    for path in sorted(Path(package_dir).rglob("*.py")):
        if "BEGIN SOLUTION" in path.read_text():
            regions += parse_regions(path)
    seen: dict[str, Region] = {}
    for r in regions:
        if r.id in seen:
            raise ExerciseFormatError(f"exercise {r.id} is defined twice: {seen[r.id].where()} and {r.where()}")
        seen[r.id] = r
    return sorted(regions, key=lambda r: id_key(r.id))


def replace_body(text: str, region: Region, body: str) -> str:
    """`text` with the lines between region's markers replaced by `body` (a str of whole lines)."""
    lines = text.splitlines(keepends=True)
    if body and not body.endswith("\n"):
        body += "\n"
    return "".join(lines[:region.begin]) + body + "".join(lines[region.end - 1:])


def strip_solutions(text: str, path: Path = Path("<string>"), chapters: set[str] | None = None) -> str:
    """The student version of one file's text: each region's body (of `chapters`, default all) -> the stub."""
    for r in sorted(parse_regions(path, text), key=lambda r: -r.begin):      # bottom up: line numbers stay valid
        if chapters is None or r.chapter in chapters:
            text = replace_body(text, r, r.stub())
    return text


__all__ = ["Region", "ExerciseFormatError", "parse_regions", "find_regions", "strip_solutions", "replace_body",
           "normalize_chapter", "chapter_key", "id_key", "APPENDIX", "EXERCISE_ID_RE"]
