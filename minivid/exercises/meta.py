"""The tests' own teeth, one exercise at a time (`python -m minivid exercises verify`, tests/test_exercises.py).

For every solution region, in ONE pytest process (no file on disk is touched):

1. reference: every exercise-marked test runs once against the solutions, with a probe at the top
   of every region that records which regions each test reaches (and, as one more pseudo-test,
   which regions the judge and the data renderer reach: they must reach none);
2. stripped: the region's body becomes its student stub; the exercise's own tests run (fastest
   first) until one fails - it must;
3. known mistakes: each `Mistake` of the exercise (see `minivid.exercises.base`) is substituted
   into the region; again a test of that exercise must fail, on an assertion or an error the
   mistake causes - not a NameError, SyntaxError or NotImplementedError, which would mean the
   substitution no longer fits the solution.

A variant is applied by compiling the edited file and swapping the `__code__` of the function that
holds the region (the live function object, so every caller sees it) and swapping it back after.
Stripping a region can only change tests that reach it, so the reference run's probe map proves
which other tests are untouched: a test of another chapter must never reach a region.
"""
from __future__ import annotations

import ast
import gc
import importlib
import json
import os
import subprocess
import sys
import tempfile
import types
from contextlib import contextmanager
from pathlib import Path

from minivid.exercises.base import mistakes_for
from minivid.exercises.grading import exercise_test_files
from minivid.exercises.regions import Region, find_regions, id_key, parse_regions, replace_body
from minivid.utils import REPO_ROOT

_HITS: set[str] = set()
_ERRORS: dict[str, str] = {}          # nodeid -> the type name of the exception that failed it
BROKEN = ("NameError", "UnboundLocalError", "SyntaxError", "IndentationError", "NotImplementedError")


def _hit(exercise: str) -> None:
    _HITS.add(exercise)


# ----------------------------------------------------------------------------- swapping code in place

def outer_def(text: str, line: int) -> tuple[str, int]:
    """(qualname, def line) of the outermost function (or method) whose body contains `line`."""
    def walk(body, prefix):
        for node in body:
            if isinstance(node, ast.ClassDef) and node.lineno <= line <= node.end_lineno:
                return walk(node.body, f"{prefix}{node.name}.")
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.lineno < line <= node.end_lineno:
                first = min([node.lineno] + [d.lineno for d in node.decorator_list])
                return f"{prefix}{node.name}", node.lineno, first
        return None
    found = walk(ast.parse(text).body, "")
    if found is None:
        raise ValueError(f"line {line} is not inside a function: a region must sit in a function body")
    return found[0], found[2]


def _find_code(code: types.CodeType, qualname: str, firstline: int) -> types.CodeType | None:
    """The code object of `qualname` in a compiled module; edits above it may have moved it down."""
    found = []

    def walk(c):
        for k in c.co_consts:
            if isinstance(k, types.CodeType):
                if k.co_qualname == qualname and k.co_firstlineno >= firstline:
                    found.append(k)
                walk(k)
    walk(code)
    return min(found, key=lambda k: k.co_firstlineno - firstline, default=None)


def _module_name(path: Path, root: Path) -> str:
    rel = Path(path).resolve().relative_to(Path(root).resolve()).with_suffix("")
    parts = list(rel.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def live_function(path: Path, qualname: str, root: Path) -> types.FunctionType:
    """The function object the running program calls for `qualname` in the file `path`."""
    obj = importlib.import_module(_module_name(path, root))
    for part in qualname.split("."):
        obj = obj.__dict__[part] if hasattr(obj, "__dict__") and part in obj.__dict__ else getattr(obj, part)
        if isinstance(obj, (staticmethod, classmethod)):
            obj = obj.__func__
    while not isinstance(obj, types.FunctionType) or obj.__code__.co_qualname != qualname:
        if hasattr(obj, "__wrapped__"):
            obj = obj.__wrapped__
            continue
        fns = [f for f in gc.get_objects() if isinstance(f, types.FunctionType)
               and f.__code__.co_qualname == qualname and Path(f.__code__.co_filename) == Path(path)]
        if len(fns) != 1:
            raise LookupError(f"cannot find the live function {qualname} of {path}")
        return fns[0]
    return obj


@contextmanager
def swapped(root: Path, path: Path, new_text: str, lines: list[int], old_text: str | None = None):
    """Run the block with the functions holding `lines` of `path` (as `old_text`, default: the file now)
    compiled from `new_text` instead."""
    old_text = Path(path).read_text() if old_text is None else old_text
    module, before = compile(new_text, str(path), "exec"), compile(old_text, str(path), "exec")
    done: list[tuple[types.FunctionType, types.CodeType]] = []
    try:
        for qual, first in dict.fromkeys(outer_def(old_text, ln) for ln in lines):
            fn = live_function(path, qual, root)
            was = _find_code(before, qual, first)
            live = fn.__code__
            if was is None or (was.co_code, was.co_consts, was.co_names) != (live.co_code, live.co_consts,
                                                                              live.co_names):
                raise LookupError(f"{path} changed on disk after it was imported ({qual} differs); run again")
            new = _find_code(module, qual, first)
            if new is None:
                raise LookupError(f"{qual} is not in the edited {path}")
            if new.co_freevars != fn.__code__.co_freevars:
                raise ValueError(f"the edit changes the closure of {qual} ({fn.__code__.co_freevars} -> "
                                 f"{new.co_freevars}); keep the names it uses from enclosing scopes")
            done.append((fn, fn.__code__))
            fn.__code__ = new
        yield
    finally:
        for fn, code in reversed(done):
            fn.__code__ = code


def _keep_closure(r: Region, text: str, body: str) -> str:
    """Append dead code to `body` that still names the free variables (e.g. super()'s __class__) the
    original function closes over, so the variant can take its place."""
    qual, first = outer_def(text, r.begin)
    old = _find_code(compile(text, str(r.path), "exec"), qual, first)
    new = _find_code(compile(replace_body(text, r, body), str(r.path), "exec"), qual, first)
    missing = sorted(set(old.co_freevars) - set(new.co_freevars))
    if not missing:
        return body
    return body + f"{r.indent}if False:  # keeps the function's closure\n{r.indent}    ({', '.join(missing)},)\n"


def variant_text(r: Region, body: str, text: str | None = None) -> str:
    """The file of region r (as `text`, default: the file now) with the region's body replaced by `body`."""
    text = Path(r.path).read_text() if text is None else text
    return replace_body(text, r, _keep_closure(r, text, body))


def probed_text(path: Path, regions: list[Region], text: str | None = None) -> str:
    """The file (as `text`, default: the file now) with a probe line at the top of each of its regions."""
    text = Path(path).read_text() if text is None else text
    for r in sorted(regions, key=lambda r: -r.begin):
        probe = f"{r.indent}__import__('minivid.exercises.meta', fromlist=['_hit'])._hit({r.id!r})\n"
        text = replace_body(text, r, probe + r.body(text))
    return text


# ----------------------------------------------------------------------------- the pytest plugin

def pytest_runtest_makereport(item, call):
    if call.excinfo is not None and item.nodeid not in _ERRORS:
        _ERRORS[item.nodeid] = call.excinfo.typename


def _run(item) -> dict:
    from _pytest.runner import runtestprotocol

    from minivid.exercises.plugin import failure_message
    _ERRORS.pop(item.nodeid, None)
    reports = runtestprotocol(item, log=False, nextitem=None)
    bad = [r for r in reports if r.failed]
    if bad:
        return {"outcome": "failed", "message": failure_message(bad[0]), "error": _ERRORS.get(item.nodeid, "")}
    skipped = any(r.skipped for r in reports)
    return {"outcome": "skipped" if skipped else "passed",
            "duration": sum(r.duration for r in reports)}


def _judge_and_data() -> None:
    """What every chapter relies on: render each kind of sample and judge it (no region may run)."""
    import torch

    from minivid.data import sample_batch
    from minivid.eval import Judge, frechet_distance
    g = torch.Generator().manual_seed(0)
    judge = Judge()
    for kind in ("image", "video", "video_text"):
        b = sample_batch(8, kind=kind, size=16, frames=4, generator=g)
        judge.predict(b["x"])
        judge.score(b["x"], b.get("labels"))
        frechet_distance(judge.features(b["x"]), judge.features(b["x"].flip(0) * 0.9))


def pytest_runtestloop(session):
    out = os.environ.get("MINIVID_META_REPORT")
    if not out:
        return None
    root = Path(os.environ.get("MINIVID_META_ROOT", REPO_ROOT))
    only = {i for i in os.environ.get("MINIVID_META_IDS", "").split(",") if i}
    texts = {p: Path(p).read_text() for p in sorted({r.path for r in find_regions(root / "minivid")})}
    regions = sorted((r for p, t in texts.items() for r in parse_regions(p, t)), key=lambda r: id_key(r.id))
    items = [i for i in session.items if any(m.args for m in i.iter_markers("exercise"))]
    marks = {i.nodeid: sorted({str(m.args[0]) for m in i.iter_markers("exercise")}) for i in items}
    report = {"regions": {r.id: {"where": r.where(root), "title": r.title} for r in regions},
              "tests": {}, "variants": {}}
    files = sorted({r.path for r in regions})
    lines = {p: [r.begin for r in regions if r.path == p] for p in files}
    with _all_swapped(root, files, regions, lines, texts):
        for item in items:
            _HITS.clear()
            res = _run(item)
            report["tests"][item.nodeid] = {**res, "exercises": marks[item.nodeid], "reaches": sorted(_HITS)}
        _HITS.clear()
        try:
            _judge_and_data()
            report["judge_and_data"] = {"outcome": "passed", "reaches": sorted(_HITS)}
        except Exception as e:                      # noqa: BLE001 - reported, the test fails on it
            report["judge_and_data"] = {"outcome": f"{type(e).__name__}: {e}", "reaches": sorted(_HITS)}
    for r in regions:
        if only and r.id not in only:
            continue
        own = [i for i in items if r.id in marks[i.nodeid] and report["tests"][i.nodeid]["outcome"] == "passed"]
        own.sort(key=lambda i: report["tests"][i.nodeid].get("duration", 0.0))
        variants = [("stripped", "the student stub", r.stub())]
        problems = []
        for m in mistakes_for(r.id):
            try:
                variants.append(("mistake", m.what, m.apply(r.body(texts[r.path]))))
            except ValueError as e:                  # the solution changed under the mistake: say so, go on
                problems.append(str(e))
        rows = []
        for kind, what, body in variants:
            row = {"kind": kind, "what": what, "caught_by": None, "message": "", "error": ""}
            try:
                with swapped(root, r.path, variant_text(r, body, texts[r.path]), [r.begin], texts[r.path]):
                    for item in own:
                        res = _run(item)
                        if res["outcome"] == "failed":
                            row.update(caught_by=item.nodeid, message=res["message"], error=res["error"])
                            break
            except (LookupError, ValueError, SyntaxError) as e:
                row["error"] = f"could not apply: {type(e).__name__}: {e}"
            rows.append(row)
        report["variants"][r.id] = {"rows": rows, "problems": problems}
    Path(out).write_text(json.dumps(report, indent=1))
    return True


@contextmanager
def _all_swapped(root, files, regions, lines, texts):
    if not files:
        yield
        return
    path, rest = files[0], files[1:]
    with swapped(root, path, probed_text(path, [r for r in regions if r.path == path], texts[path]), lines[path],
                 texts[path]):
        with _all_swapped(root, rest, regions, lines, texts):
            yield


# ----------------------------------------------------------------------------- running it, reading it

def run_meta(root: Path = REPO_ROOT, ids=None, timeout: float | None = None) -> dict:
    """Run the whole procedure above on the repository at `root` (solutions in place) in a subprocess."""
    root = Path(root)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "meta.json"
        env = dict(os.environ, MINIVID_META_REPORT=str(out), MINIVID_META_ROOT=str(root), PYTHONPATH=str(root))
        if ids:
            env["MINIVID_META_IDS"] = ",".join(ids)
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "minivid.exercises.meta", "-p", "no:cacheprovider",
               "-m", "exercise", "--rootdir", str(root), *map(str, exercise_test_files(root))]
        proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=timeout)
        if not out.exists():
            raise RuntimeError(f"the meta-test did not run (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n"
                               f"{proc.stderr[-3000:]}")
        return json.loads(out.read_text())


def problems(report: dict) -> list[str]:
    """Everything the report shows to be wrong, one line each (empty: every exercise has teeth)."""
    out = []
    regions = report["regions"]
    jd = report.get("judge_and_data", {})
    if jd.get("outcome") != "passed":
        out.append(f"the judge/data check failed: {jd.get('outcome')}")
    for ex in jd.get("reaches", []):
        out.append(f"the judge or the data renderer runs exercise {ex}'s region ({regions[ex]['where']}): "
                   "a learner's unfinished or wrong answer would change every chapter's numbers")
    reached: dict[str, set] = {}
    for nodeid, t in report["tests"].items():
        reached.setdefault(nodeid.split("[")[0], set()).update(t["reaches"])
    for nodeid, t in report["tests"].items():
        chapters = {e.split(".")[0] for e in t["exercises"]}
        if t["outcome"] == "failed":
            out.append(f"{nodeid} fails on the solutions: {t['message'][:300]}")
            continue
        if t["outcome"] != "passed":
            continue
        out += [f"{nodeid} is marked exercise {ex!r}, which has no solution region" for ex in t["exercises"]
                if ex not in regions]
        for ex in t["reaches"]:
            if ex.split(".")[0] not in chapters:
                out.append(f"{nodeid} (exercise {', '.join(t['exercises'])}) runs exercise {ex}'s region "
                           f"({regions[ex]['where']}): stripping {ex} would fail another chapter's test")
    for ex, v in report["variants"].items():
        out += [f"exercise {ex}: {p}" for p in v["problems"]]
        rows = v["rows"]
        if not any(row["kind"] == "mistake" for row in rows) and not v["problems"]:
            out.append(f"exercise {ex} ({regions[ex]['where']}) has no known mistake: add a Mistake({ex!r}, ...) to "
                       f"MISTAKES in its chapter's checker module (see minivid.exercises.base)")
        for row in rows:
            name = "its stub" if row["kind"] == "stripped" else f"the known mistake '{row['what']}'"
            if row["error"].startswith("could not apply"):
                out.append(f"exercise {ex}: {name}: {row['error']}")
            elif row["caught_by"] is None:
                out.append(f"exercise {ex} ({regions[ex]['where']}): no test of {ex} fails on {name}")
            elif row["kind"] == "stripped" and f"Exercise {ex}" not in row["message"]:
                out.append(f"exercise {ex}: the stub is caught by {row['caught_by']} but its message does not name "
                           f"the exercise: {row['message'][:200]}")
            elif row["kind"] == "mistake" and row["error"] in BROKEN:
                out.append(f"exercise {ex}: {name} fails with {row['error']} (the substitution is broken, not "
                           f"caught by a check): {row['message'][:200]}")
    return out


def notes(report: dict) -> list[str]:
    """Worth a look, not wrong: marked tests that never run their exercise's region (e.g. tests of a checker
    on hand-written wrong answers). They cannot fail on a learner's answer, yet `check` counts them."""
    reached: dict[str, set] = {}
    for nodeid, t in report["tests"].items():
        reached.setdefault(nodeid.split("[")[0], set()).update(t["reaches"])
    seen = {(nodeid.split("[")[0], ex) for nodeid, t in report["tests"].items() for ex in t["exercises"]}
    return [f"{base} is marked exercise {ex} but never runs its region ({report['regions'][ex]['where']})"
            for base, ex in sorted(seen) if ex in report["regions"] and ex not in reached.get(base, ())]


__all__ = ["run_meta", "problems", "notes", "swapped", "variant_text", "live_function", "outer_def"]
