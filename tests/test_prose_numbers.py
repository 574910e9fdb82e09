"""Numbers in the chapters' prose are measured too (tests/test_results.py checks the rendered result blocks).

The convention: a figure written in prose that reports a result carries, right before it, a marker saying
where it comes from:

    the dense model has <!-- fig:params_ratio_full_over_factorized -->1.75x the parameters

The marker is an HTML comment, so the reader sees only "1.75x". Inside it is an arithmetic expression
(+ - * / and parentheses, numbers) over the recorded results of the chapter, `chapters/results/chNN.json`:

* a figure by name: `heldout_motion_acc`;
* a table cell, row by position and column by name: `ablation[1]["validity"]`;
* another benchmark's figure or table, qualified by its name: `ch02.retrieval_clips_heldout_direction_i2t`.

So a percentage is `100*image_validity_ddim10`, a ratio `image_frechet_ddim10/image_frechet_real_vs_real`, a
count `36*retrieval_combos_i2t`. The number written after the marker ("0.96", "84", "6 000", "1.9e-4") must
equal the expression rounded to the digits written: "0.96" passes for 0.9648; "1.94" fails for 1.9303.

And a guard for every chapter whose benchmark is recorded (`chapters/results/chNN.json`): an unmarked decimal with two or more digits
after the point that equals some recorded figure or table cell at its written precision looks like a result
typed by hand, and fails. Numbers right after `=`, `<`, `>`, `≤`, `≥` or `/` are settings and targets and are
skipped; any other number that only looks like a result is written `<!-- not-a-result -->0.05`. Result blocks
(`<!-- results:... -->`) and fenced code are not prose and are skipped. A marker never starts a line: CommonMark
reads a line that starts with `<!--` as an HTML block, which would cut the paragraph in two.
"""
import ast
import json
import operator
import re
from pathlib import Path

import pytest

from minivid import results
from minivid.utils import REPO_ROOT

# every chapter whose benchmark is recorded follows the convention (found, not listed)
CONVERTED = tuple(sorted(p.stem[2:] for p in (REPO_ROOT / "chapters" / "results").glob("ch[0-9][0-9].json")))
MARK = re.compile(r"<!--\s*fig:(?P<expr>.*?)-->")
NOT_A_RESULT = "<!-- not-a-result -->"
SPLIT_MARK = re.compile(r"<!--\s*fig:(?!.*?-->)")     # opened on this line, closed on a later one
COMMENT = re.compile(r"<!--.*?-->")
NUMBER = re.compile(r"[ \t]*(?P<num>-?\d{1,3}(?:[ ,\u2009\u202f]\d{3})+(?:\.\d+)?(?!\d)|-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)")
DECIMAL = re.compile(r"(?<![\w.])(?P<num>\d+\.\d{2,})(?![\w.])")
SETTING = re.compile(r"[=<>≤≥/]\s*$")
OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}


class ProseError(ValueError):
    pass


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _lookup(record: dict, name: str, bench: str):
    if name in record["tables"] and not _is_number(record["figures"].get(name)):   # "seeds": the table, not the list
        return record["tables"][name]
    if name in record["figures"]:
        return record["figures"][name]
    if name in record["tables"]:
        return record["tables"][name]
    raise ProseError(f"{bench}.json has no figure or table {name!r}")


def evaluate(expr: str, own: str | None, load) -> float:
    """The value of a marker's expression; `own`: the chapter's bench ("ch03") or None; load(bench) -> record."""
    try:
        tree = ast.parse(expr.strip(), mode="eval")
    except SyntaxError:
        raise ProseError(f"marker expression {expr.strip()!r} is not an expression") from None

    def ev(n):
        if isinstance(n, ast.Constant) and (_is_number(n.value) or isinstance(n.value, str)):
            return n.value
        if isinstance(n, ast.BinOp) and type(n.op) in OPS:
            return OPS[type(n.op)](ev(n.left), ev(n.right))
        if isinstance(n, ast.UnaryOp) and isinstance(n.op, ast.USub):
            return -ev(n.operand)
        if isinstance(n, ast.Name):
            if own is None:
                raise ProseError(f"{n.id!r}: this document has no results of its own; qualify it, e.g. ch03.{n.id}")
            return _lookup(load(own), n.id, own)
        if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name):
            return _lookup(load(n.value.id), n.attr, n.value.id)
        if isinstance(n, ast.Subscript):
            base, key = ev(n.value), ev(n.slice)
            try:
                return base[key]
            except (IndexError, KeyError, TypeError):
                raise ProseError(f"{ast.unparse(n)}: no such row or column") from None
        raise ProseError(f"{ast.unparse(n)!r} is not allowed in a marker (names, cells, numbers, + - * /)")

    value = ev(tree.body)
    if not _is_number(value):
        raise ProseError(f"{expr.strip()!r} is {value!r}, not a number")
    return float(value)


def written(num: str) -> tuple[float, float]:
    """'6 000' -> (6000, 0.5); '0.96' -> (0.96, 0.005); '1.9e-4' -> (1.9e-4, 0.5e-5): value and half a last digit."""
    num = re.sub(r"[ ,\u2009\u202f]", "", num)
    mant, _, exp = num.lower().partition("e")
    decimals = len(mant.partition(".")[2])
    return float(num), 0.5 * 10.0 ** (int(exp or 0) - decimals)


def prose_lines(text: str):
    """(line number, line) of the prose: outside result blocks and fenced code."""
    block = fence = None
    for i, line in enumerate(text.splitlines(), start=1):
        if block is None and (f := results.FENCE_RE.match(line)):
            fence = None if fence == f.group(1) else (fence or f.group(1))
            continue
        if fence is not None:
            continue
        if results.OPEN_RE.match(line):
            block = i
        elif results.CLOSE_RE.match(line):
            block = None
        elif block is None:
            yield i, line


def check_markers(text: str, name: str, own: str | None, load) -> list[str]:
    """Every problem with the document's markers, as `name:line: ...`."""
    problems = []
    for i, line in prose_lines(text):
        if re.match(r"\s*<!--\s*(?:fig:|not-a-result)", line):
            problems.append(f"{name}:{i}: a marker starts the line; markdown then reads the line as an HTML block "
                            "and breaks the paragraph: move the word before it onto this line")
        if SPLIT_MARK.search(line):
            problems.append(f"{name}:{i}: a marker is split across lines, so its number is never checked: keep "
                            "`<!-- fig:EXPR -->` and its number on one line")
        for m in MARK.finditer(line):
            where = f"{name}:{i}: `{m.group(0)}`"
            n = NUMBER.match(line, m.end())
            if n is None:
                problems.append(f"{where} is not followed by a number")
                continue
            try:
                value = evaluate(m.group("expr"), own, load)
            except (ProseError, results.ResultsError, ZeroDivisionError) as e:
                problems.append(f"{where}: {e}")
                continue
            w, half = written(n.group("num"))
            if abs(value - w) > half * (1 + 1e-9) + 1e-12:
                problems.append(f"{where}: the prose says {n.group('num')} but the recorded value is {value:.6g}")
    return problems


def recorded_values(record: dict) -> dict[str, float]:
    out = {k: v for k, v in record["figures"].items() if _is_number(v)}
    for t, rows in record["tables"].items():
        out |= {f'{t}[{j}]["{c}"]': v for j, row in enumerate(rows) for c, v in row.items() if _is_number(v)}
    return out


def unmarked_results(text: str, name: str, record: dict) -> list[str]:
    """Decimals in prose that equal a recorded value at their precision but carry no marker."""
    values, problems = recorded_values(record), []
    for i, line in prose_lines(text):
        comments = [c.span() for c in COMMENT.finditer(line)]
        for m in DECIMAL.finditer(line):
            if any(s <= m.start() < e or not line[e:m.start()].strip() for s, e in comments if s <= m.start()):
                continue                                  # inside a marker, or right after one: marked
            if SETTING.search(line[:m.start()]):
                continue
            w, half = written(m.group("num"))
            same = [k for k, v in values.items() if abs(v - w) <= half * (1 + 1e-9) + 1e-12]
            if same:
                problems.append(f"{name}:{i}: {m.group('num')} looks like a result ({', '.join(same[:3])}); write "
                                f"`<!-- fig:NAME -->{m.group('num')}`, or `{NOT_A_RESULT}` if it is not one")
    return problems


def _loader(results_dir: Path):
    cache = {}

    def load(bench: str) -> dict:
        if bench not in cache:
            cache[bench] = results.load_record(bench, results_dir)
        return cache[bench]
    return load


CHAPTERS = sorted((REPO_ROOT / "chapters").glob("[0-9][0-9]_*.md"))


def _own(path: Path) -> str | None:
    bench = f"ch{path.name[:2]}"
    return bench if (results.RESULTS_DIR / f"{bench}.json").exists() else None


@pytest.mark.parametrize("path", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_numbers_in_prose_agree_with_the_recorded_results(path):
    text = path.read_text(encoding="utf-8")
    problems = check_markers(text, f"chapters/{path.name}", _own(path), _loader(results.RESULTS_DIR))
    if path.name[:2] in CONVERTED:
        assert MARK.search(text), f"{path.name} has no marked figures; the convention applies to it"
        problems += unmarked_results(text, f"chapters/{path.name}", results.load_record(_own(path)))
    assert not problems, "\n".join(problems)


RECORD = {"bench": "demo", "preset": "full", "seed": 0, "wall_time_s": 1.0, "date": "2026-11-26T00:00:00+00:00",
          "machine": {"device": "cpu", "cpu_count": 2, "torch": "2.13.0"},
          "figures": {"flops_ratio": 1.9303, "acc": 0.96484375, "steps": 6000, "frechet": 0.2269, "floor": 0.00756},
          "tables": {"ablation": [{"arm": "joint", "validity": 0.7734}, {"arm": "video", "validity": 0.7109}]}}


@pytest.fixture()
def demo(tmp_path):
    (tmp_path / "demo.json").write_text(json.dumps(RECORD))
    (tmp_path / "other.json").write_text(json.dumps({**RECORD, "bench": "other", "figures": {"cos": 0.245}}))
    return lambda text: check_markers(text, "doc.md", "demo", _loader(tmp_path))


def test_a_marked_number_must_equal_the_recorded_value_at_its_written_precision(demo):
    good = ("the dense model has <!-- fig:flops_ratio -->1.93x the FLOPs; motion <!-- fig:acc -->0.96, "
            "<!-- fig:100*acc -->96 %, <!-- fig:100 * acc -->96.5 %, <!-- fig:steps -->6 000 steps, "
            "<!-- fig:frechet/floor -->30x the floor, validity <!-- fig:ablation[1][\"validity\"] -->0.71, "
            "cosine <!-- fig:other.cos -->0.25, gap <!-- fig:1 - acc -->3.5e-2")
    assert demo(good) == []
    bad = demo("the dense model has <!-- fig:flops_ratio -->1.94x the FLOPs")
    assert len(bad) == 1 and bad[0].startswith("doc.md:1: ") and "says 1.94 but the recorded value is 1.9303" in bad[0]
    assert demo("<!-- fig:acc -->0.964") and demo("<!-- fig:100*acc -->97 %") and demo("<!-- fig:steps -->6 001")


@pytest.mark.parametrize("text, what", [
    ("see <!-- fig:nope -->0.5", "no figure or table 'nope'"),
    ("see <!-- fig:ablation[5][\"validity\"] -->0.5", "no such row or column"),
    ("see <!-- fig:ablation[0][\"arm\"] -->0.5", "not a number"),
    ("see <!-- fig:ghost.acc -->0.5", "python -m minivid bench ghost"),
    ("see <!-- fig:acc --> about 0.96", "not followed by a number"),
    ("see <!-- fig:__import__('os') -->1", "is not allowed in a marker"),
    ("see <!-- fig:acc) -->1", "is not an expression"),
    ("  <!-- fig:acc -->0.96 starts a line", "a marker starts the line"),
    ("see <!-- fig:acc\n  -->0.5, split", "split across lines"),
])
def test_a_broken_marker_is_reported_with_its_line(demo, text, what):
    problems = demo("prose\n" + text)
    assert len(problems) == 1 and problems[0].startswith("doc.md:2: ") and what in problems[0], problems


def test_unmarked_results_are_flagged_but_settings_blocks_and_code_are_not():
    text = ("motion 0.96 unmarked\nmarked <!-- fig:acc -->0.96\nEMA = 0.995 and a target >= 0.96, 1/0.96\n"
            "kernel <!-- not-a-result -->0.96\n```\n0.96 in code\n```\n<!-- results:demo:figures -->\n| acc | 0.965 |\n"
            "<!-- /results -->\nunrelated 0.123\n")
    problems = unmarked_results(text, "doc.md", RECORD)
    assert len(problems) == 1 and problems[0].startswith("doc.md:1: 0.96 looks like a result (acc")


def test_marked_numbers_in_the_ops_appendix_agree_with_the_records():
    path = REPO_ROOT / "chapters" / "appendix_ops.md"
    problems = check_markers(path.read_text(encoding="utf-8"), "chapters/appendix_ops.md", "ops",
                             _loader(results.RESULTS_DIR))
    assert not problems, "\n".join(problems)


def test_marked_numbers_in_the_readme_agree_with_the_records():
    """The README has no results of its own: its markers name the chapter, `ch07.recon_psnr_min`."""
    problems = check_markers((REPO_ROOT / "README.md").read_text(encoding="utf-8"), "README.md", None,
                             _loader(results.RESULTS_DIR))
    assert not problems, "\n".join(problems)
