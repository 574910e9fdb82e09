"""Exercise tooling: nbgrader-style solution regions, student-copy export, per-exercise checks.

A solution region lives inside a function body in `minivid/`; signature, docstring and
shape contract stay outside it (drawn here with a `|` margin so this file has no region):

    | def q_sample(x0, t, noise, schedule):
    |     \"\"\"Sample x_t ~ q(x_t | x_0).  x0, noise: (B, ...); t: (B,) long.\"\"\"
    |     ### BEGIN SOLUTION  # exercise 1.1: sample x_t from q(x_t | x_0)
    |     ...
    |     ### END SOLUTION

`export(dst)` writes a student copy of the repository in which each region becomes
`raise NotImplementedError("Exercise 1.1: sample x_t from q(x_t | x_0)")`. Tests that check an
exercise are marked `@pytest.mark.exercise("1.1")`; `check(chapter)` runs them and reports
per exercise. The test suite proves the tests have teeth: on the exported copy every
exercise is caught by at least one failing test (tests/test_exercises.py).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from minivid.utils import REPO_ROOT

BEGIN_RE = re.compile(r"^(?P<indent>[ \t]*)### BEGIN SOLUTION\b(?P<rest>.*)$")
END_RE = re.compile(r"^[ \t]*### END SOLUTION\b")
TAG_RE = re.compile(r"#\s*exercise\s+(?P<id>\d+\.\d+)\s*:\s*(?P<title>\S.*?)\s*$", re.IGNORECASE)

# What a student copy contains (relative to the repo root); caches and results stay behind.
COPY_ITEMS = ("minivid", "tests", "notebooks", "chapters", "datasets/README.md",
              "README.md", "requirements.txt", "pyproject.toml", ".gitignore")
IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", ".ipynb_checkpoints", "cache", "*.egg-info")


class ExerciseFormatError(ValueError):
    """A solution region is nested, unterminated, or has no exercise tag."""


@dataclass(frozen=True)
class Region:
    id: str          # "1.2"
    title: str
    path: Path       # file it lives in
    begin: int       # 1-based line numbers of the markers
    end: int

    @property
    def chapter(self) -> int:
        return int(self.id.split(".")[0])

    def where(self, root: Path = REPO_ROOT) -> str:
        try:
            rel = self.path.relative_to(root)
        except ValueError:
            rel = self.path
        return f"{rel}:{self.begin}"


def parse_regions(path: Path, text: str | None = None) -> list[Region]:
    """All solution regions in one file; raises ExerciseFormatError on malformed markers."""
    path = Path(path)
    lines = (text if text is not None else path.read_text()).splitlines()
    regions, open_at, tag = [], None, None
    for i, line in enumerate(lines, start=1):
        b = BEGIN_RE.match(line)
        if b:
            if open_at is not None:
                raise ExerciseFormatError(f"{path}:{i}: nested BEGIN SOLUTION (the region opened at line {open_at} is not closed)")
            tag = TAG_RE.search(b.group("rest"))
            if tag is None:
                raise ExerciseFormatError(
                    f"{path}:{i}: BEGIN SOLUTION needs a tag like '### BEGIN SOLUTION  # exercise 1.2: short title'")
            open_at = i
        elif END_RE.match(line):
            if open_at is None:
                raise ExerciseFormatError(f"{path}:{i}: END SOLUTION without a matching BEGIN SOLUTION")
            regions.append(Region(tag.group("id"), tag.group("title"), path, open_at, i))
            open_at = None
    if open_at is not None:
        raise ExerciseFormatError(f"{path}:{open_at}: BEGIN SOLUTION is never closed by END SOLUTION")
    return regions


def find_regions(package_dir: Path = REPO_ROOT / "minivid") -> list[Region]:
    """Every region in the package, sorted by exercise id; ids must be unique."""
    regions = []
    for path in sorted(Path(package_dir).rglob("*.py")):
        regions += parse_regions(path)
    seen: dict[str, Region] = {}
    for r in regions:
        if r.id in seen:
            raise ExerciseFormatError(f"exercise {r.id} is defined twice: {seen[r.id].where()} and {r.where()}")
        seen[r.id] = r
    return sorted(regions, key=lambda r: tuple(int(p) for p in r.id.split(".")))


def strip_solutions(text: str, path: Path = Path("<string>")) -> str:
    """The student version of one file's text: each region -> raise NotImplementedError."""
    regions = parse_regions(path, text)
    if not regions:
        return text
    lines = text.splitlines(keepends=True)
    out, skip_until = [], 0
    starts = {r.begin: r for r in regions}
    for i, line in enumerate(lines, start=1):
        if i <= skip_until:
            continue
        if i in starts:
            r = starts[i]
            indent = BEGIN_RE.match(line.rstrip("\n")).group("indent")
            msg = f"Exercise {r.id}: {r.title}"
            out.append(f"{indent}# TODO {msg} (see the chapter; check with `python -m minivid exercises check {r.chapter}`)\n")
            out.append(f"{indent}raise NotImplementedError({msg!r})\n")
            skip_until = r.end
            continue
        out.append(line)
    return "".join(out)


def export(dst: str | os.PathLike, src: Path = REPO_ROOT, force: bool = False) -> list[Region]:
    """Write a student copy of the repo at `dst`; returns the regions that were stripped."""
    dst, src = Path(dst), Path(src)
    regions = find_regions(src / "minivid")      # validates every file before writing anything
    if dst.exists() and any(dst.iterdir()) and not force:
        raise FileExistsError(f"{dst} exists and is not empty; pass --force to overwrite")
    dst.mkdir(parents=True, exist_ok=True)
    for item in COPY_ITEMS:
        s, d = src / item, dst / item
        if not s.exists():
            continue
        if s.is_dir():
            shutil.copytree(s, d, ignore=IGNORE, dirs_exist_ok=True)
        else:
            d.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(s, d)
    for path in {r.path for r in regions}:
        rel = path.relative_to(src)
        (dst / rel).write_text(strip_solutions(path.read_text(), path))
    return regions


def run_marked_tests(root: Path, chapter: int | None = None, extra_args: tuple[str, ...] = ()) -> dict:
    """Run the exercise-marked tests of `root` in a subprocess; return per-exercise outcomes.

    Returns {exercise_id: {"passed": [nodeids], "failed": [nodeids]}}.
    """
    root = Path(root)
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        env = dict(os.environ, MINIVID_EXERCISE_REPORT=str(report), PYTHONPATH=str(root))
        if chapter is not None:
            env["MINIVID_EXERCISE_CHAPTER"] = str(chapter)
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "minivid.exercises.plugin", "-m", "exercise",
               "-p", "no:cacheprovider", "--rootdir", str(root), str(root / "tests"), *extra_args]
        proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True)
        if not report.exists():
            raise RuntimeError(f"pytest did not run (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        data = json.loads(report.read_text())
    return data


def check(chapter: int, root: Path = REPO_ROOT, stream=sys.stdout) -> bool:
    """Run chapter `chapter`'s exercise tests and print a per-exercise verdict."""
    regions = [r for r in find_regions(Path(root) / "minivid") if r.chapter == chapter]
    if not regions:
        print(f"chapter {chapter} has no exercises (chapters with exercises: "
              f"{sorted({r.chapter for r in find_regions(Path(root) / 'minivid')})})", file=stream)
        return False
    results = run_marked_tests(Path(root), chapter)["exercises"]
    ok_all = True
    for r in regions:
        res = results.get(r.id, {"passed": [], "failed": []})
        if not res["passed"] and not res["failed"]:
            verdict, ok = "no tests found", False
        elif res["failed"]:
            verdict, ok = f"FAIL ({len(res['failed'])} of {len(res['failed']) + len(res['passed'])} tests)", False
        else:
            verdict, ok = f"ok ({len(res['passed'])} tests)", True
        ok_all &= ok
        print(f"  {r.id:>5}  {r.title:<55} {verdict}", file=stream)
        for nodeid in res["failed"]:
            msg = results[r.id].get("messages", {}).get(nodeid, "")
            print(f"         failed: {nodeid}" + (f"\n           {msg}" if msg else ""), file=stream)
    print("all exercises pass" if ok_all else "some exercises need work (file:line of each above: "
          + ", ".join(r.where(Path(root)) for r in regions) + ")", file=stream)
    return ok_all
