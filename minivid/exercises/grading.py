"""Feedback for a learner: `exercises check N`, `exercises status`, `exercises hint ID`.

`check` runs the tests marked `@pytest.mark.exercise("N.M")` for chapter N (in a subprocess, on the
copy at `root`), prints per exercise done / to do / needs work with the failing test's message and
the first hint, and records the verdict with a hash of the answer it checked. `status` lists every
exercise of the course with file:line and its state (a stub is "to do"; a recorded verdict counts
only while the answer is unchanged). `hint` prints staged hints from the chapter's checker module,
or, for an exercise without written hints, the docstring of the function it lives in.
"""
from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from minivid.exercises.base import checker_for, hints_for
from minivid.exercises.export import MANIFEST
from minivid.exercises.regions import Region, chapter_key, find_regions, normalize_chapter
from minivid.utils import REPO_ROOT, cache_dir

MARK_RE = re.compile(r"mark\.exercise\(\s*[\"']((?:\d+|A)\.\d+)[\"']\s*\)")


def exercise_test_files(root: Path = REPO_ROOT) -> list[Path]:
    """Test files of `root` that mark at least one test with an exercise id (found by reading them)."""
    return [p for p in sorted((Path(root) / "tests").rglob("test_*.py")) if MARK_RE.search(p.read_text())]


def tests_marked(exercise: str, root: Path = REPO_ROOT) -> list[str]:
    """`file::function` of each test marked with `exercise` (read from the source, nothing is run)."""
    out = []
    for p in exercise_test_files(root):
        lines = p.read_text().splitlines()
        for i, line in enumerate(lines):
            if any(m == exercise for m in MARK_RE.findall(line)):
                j = next((k for k in range(i, len(lines)) if lines[k].lstrip().startswith("def ")), None)
                if j is not None:
                    out.append(f"{p.relative_to(root).as_posix()}::{lines[j].split('def ')[1].split('(')[0]}")
    return sorted(set(out))


def run_marked_tests(root: Path = REPO_ROOT, chapter=None, ids=None, extra_args: tuple[str, ...] = ()) -> dict:
    """Run the exercise-marked tests of the copy at `root` in a subprocess; per-exercise outcomes.

    Returns {"exercises": {id: {"passed": [nodeids], "failed": [nodeids], "messages": {nodeid: text}}}}.
    """
    root = Path(root)
    files = exercise_test_files(root)
    if not files:
        return {"exercises": {}}
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        env = dict(os.environ, MINIVID_EXERCISE_REPORT=str(report), PYTHONPATH=str(root))
        if chapter is not None:
            env["MINIVID_EXERCISE_CHAPTER"] = normalize_chapter(chapter)
        if ids:
            env["MINIVID_EXERCISE_IDS"] = ",".join(ids)
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "minivid.exercises.plugin", "-m", "exercise",
               "-p", "no:cacheprovider", "--rootdir", str(root), *map(str, files), *extra_args]
        proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True)
        if not report.exists():
            raise RuntimeError(f"pytest did not run (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n"
                               f"{proc.stderr[-3000:]}")
        return json.loads(report.read_text())


def grade(exercise: str, root: Path = REPO_ROOT) -> bool:
    """Run the tests marked for one exercise; raise (NotImplementedError while it is a stub, else
    AssertionError with the failing test's message) unless they all pass. For a notebook's exercise cell
    when the chapter has no hand-written checker: `exercises.grade("4.1")`."""
    exercise = exercise.strip().upper()
    regions = {r.id: r for r in find_regions(Path(root) / "minivid")}
    if exercise not in regions:
        raise KeyError(f"no exercise {exercise!r}; exercises: {', '.join(regions)}")
    r = regions[exercise]
    if r.is_stub():
        raise NotImplementedError(f"Exercise {r.id}: {r.title} is not written yet: fill in the solution region of "
                                  f"{r.where(root)} (hint: python -m minivid exercises hint {r.id})")
    res = run_marked_tests(root, ids=[exercise])["exercises"].get(exercise, {"passed": [], "failed": []})
    if not res["passed"] and not res["failed"]:
        raise AssertionError(f"Exercise {r.id}: no test is marked @pytest.mark.exercise({r.id!r})")
    if res["failed"]:
        first = res["failed"][0]
        raise AssertionError(f"Exercise {r.id} ({r.title}): {len(res['failed'])} of "
                             f"{len(res['failed']) + len(res['passed'])} tests fail; {first}:\n"
                             + _short(res["messages"].get(first, "")))
    print(f"Exercise {r.id} ({r.title}): all {len(res['passed'])} tests pass.")
    return True


# ----------------------------------------------------------------------------- progress

def _progress_file() -> Path:
    return cache_dir("checkpoints") / "exercises_progress.json"


def load_progress(root: Path = REPO_ROOT) -> dict:
    try:
        return json.loads(_progress_file().read_text()).get(str(Path(root).resolve()), {})
    except (OSError, ValueError):
        return {}


def _save_progress(root: Path, verdicts: dict) -> None:
    path = _progress_file()
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        data = {}
    data.setdefault(str(Path(root).resolve()), {}).update(verdicts)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def _stripped_in_copy(root: Path) -> set[str] | None:
    """Exercise ids the student copy at root was exported with; None for the instructor's repository."""
    try:
        return set(json.loads((Path(root) / MANIFEST).read_text())["exercises"])
    except (OSError, ValueError, KeyError):
        return None


def state_of(r: Region, progress: dict, stripped: set[str] | None) -> str:
    """'to do', 'done', 'needs work', 'written, not checked', 'given' (a solution the copy keeps) or 'solution'."""
    if r.is_stub():
        return "to do"
    rec = progress.get(r.id)
    if rec and rec.get("digest") == r.digest():
        return "done" if rec["ok"] else "needs work"
    if stripped is None:
        return "solution"
    return "written, not checked" if r.id in stripped else "given"


# ----------------------------------------------------------------------------- check, status, hint

def _indent(text: str, pad: str) -> str:
    return textwrap.indent(text.strip(), pad)


def _short(message: str, lines: int = 6, width: int = 300) -> str:
    """The head of a failure message: a few lines, each cut to `width` characters."""
    rows = [ln if len(ln) <= width else ln[:width] + " ..." for ln in message.strip().splitlines()]
    return "\n".join(rows[:lines] + (["..."] if len(rows) > lines else []))


def check(chapter, root: Path = REPO_ROOT, stream=sys.stdout) -> bool:
    """Run chapter `chapter`'s exercise tests and print a verdict per exercise; True if all pass."""
    root = Path(root)
    chapter = normalize_chapter(chapter)
    every = find_regions(root / "minivid")
    regions = [r for r in every if r.chapter == chapter]
    if not regions:
        have = ", ".join(sorted({r.chapter for r in every}, key=chapter_key))
        print(f"chapter {chapter} has no exercises (chapters with exercises: {have})", file=stream)
        return False
    results = run_marked_tests(root, chapter)["exercises"]
    print(f"{'the appendix (A)' if chapter == 'A' else f'chapter {chapter}'}: {len(regions)} exercises", file=stream)
    verdicts, n_ok = {}, 0
    for r in regions:
        res = results.get(r.id, {"passed": [], "failed": [], "messages": {}})
        n = len(res["passed"]) + len(res["failed"])
        ok = n > 0 and not res["failed"]
        verdict = ("no tests found" if n == 0 else "done" if ok else "to do" if r.is_stub()
                   else f"needs work ({len(res['failed'])} of {n} tests fail)")
        print(f"  {r.id:>5}  {r.title:<58} {verdict:<28} {r.where(root)}", file=stream)
        if n == 0:
            print(f"         mark its tests with @pytest.mark.exercise({r.id!r})", file=stream)
        elif not ok and not r.is_stub():
            msgs = res["messages"]                  # a checker's diagnosis (it names the exercise) first
            for nodeid in sorted(res["failed"], key=lambda n: f"Exercise {r.id}" not in msgs.get(n, ""))[:2]:
                print(f"         failed: {nodeid}", file=stream)
                print(_indent(_short(msgs.get(nodeid, "")), "           "), file=stream)
            hints = hints_for(r.id)
            if hints:
                print(_indent(f"hint: {hints[0]}", "         "), file=stream)
            print(f"         more: python -m minivid exercises hint {r.id}", file=stream)
        verdicts[r.id] = {"ok": ok, "digest": r.digest(), "date": time.strftime("%Y-%m-%d %H:%M:%S")}
        n_ok += ok
    _save_progress(root, verdicts)
    todo = [r.id for r in regions if r.is_stub()]
    print(f"{n_ok} of {len(regions)} done" + (f"; to do: {', '.join(todo)} (start with `python -m minivid "
                                                f"exercises hint {todo[0]}`)" if todo else ""), file=stream)
    return n_ok == len(regions)


def status(root: Path = REPO_ROOT, stream=sys.stdout) -> list[dict]:
    """Print every exercise of the course with its state and file:line; returns the rows."""
    root = Path(root)
    progress, stripped = load_progress(root), _stripped_in_copy(root)
    rows = [{"id": r.id, "title": r.title, "state": state_of(r, progress, stripped), "where": r.where(root)}
            for r in find_regions(root / "minivid")]
    last = None
    for row in rows:
        ch = row["id"].split(".")[0]
        if ch != last:
            print(f"chapter {ch}" if ch != "A" else "the appendix (A)", file=stream)
            last = ch
        print(f"  {row['id']:>5}  {row['title']:<58} {row['state']:<22} {row['where']}", file=stream)
    count = {s: sum(r["state"] == s for r in rows) for s in dict.fromkeys(r["state"] for r in rows)}
    print(", ".join(f"{n} {s}" for s, n in count.items()) + f" (of {len(rows)} exercises)", file=stream)
    if stripped is None:
        print("this is the instructor's repository (solutions in place); learners work in a copy from "
              "`python -m minivid exercises export DIR`", file=stream)
    return rows


def _enclosing_doc(r: Region) -> tuple[str, str]:
    """(qualified name, docstring) of the function whose body holds region r."""
    tree = ast.parse(Path(r.path).read_text())
    best = None

    def walk(node, prefix):
        nonlocal best
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = f"{prefix}{child.name}"
                if isinstance(child, ast.ClassDef):
                    walk(child, name + ".")
                elif child.lineno < r.begin <= child.end_lineno:
                    best = (name, ast.get_docstring(child) or "")
                    walk(child, name + ".<locals>.")
    walk(tree, "")
    return best or ("?", "")


def hint(exercise: str, level: int | None = None, root: Path = REPO_ROOT, stream=sys.stdout) -> list[str]:
    """Print hints 1..level for `exercise` (default: the first); returns every stage there is."""
    exercise = exercise.strip().upper()
    regions = {r.id: r for r in find_regions(Path(root) / "minivid")}
    if exercise not in regions:
        raise KeyError(f"no exercise {exercise!r}; exercises: {', '.join(regions)}")
    r = regions[exercise]
    name, doc = _enclosing_doc(r)
    stages = hints_for(exercise) or [f"read the contract of `{name}`:\n{doc}" if doc else
                                     f"read `{name}` and the chapter's section on it"]
    tests = tests_marked(exercise, root)
    checker = checker_for(exercise)
    last = (f"where: {r.where(root)} (`{name}`); the tests that grade it: {', '.join(tests) or 'none yet'}"
            + (f"; in a notebook: `{checker.__module__}.{checker.__name__}()`" if checker else ""))
    stages = stages + [last]
    level = max(1, min(level or 1, len(stages)))
    print(f"Exercise {exercise}: {r.title}", file=stream)
    for i, s in enumerate(stages[:level], start=1):
        print(_indent(f"hint {i} of {len(stages)}: {s}", "  "), file=stream)
    if level < len(stages):
        print(f"  (next: python -m minivid exercises hint {exercise} --level {level + 1})", file=stream)
    return stages


__all__ = ["run_marked_tests", "exercise_test_files", "tests_marked", "check", "status", "hint", "grade",
           "load_progress", "state_of"]
