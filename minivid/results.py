"""Render measured benchmark results into the chapters: numbers are measured, never typed.

A chapter marks where a table goes, each marker alone on its line:

    <!-- results:ch01:samplers -->
    (generated — do not edit)
    <!-- /results -->

`render_text(text)` replaces the body of each marked block with the table `samplers` of
`chapters/results/ch01.json` (or `figures` for the flat figures dict) plus a provenance line
naming the command, preset, seed, wall time and machine. `python -m minivid results render`
rewrites the files; `--check` (and tests/test_results.py) fails when a chapter disagrees
with its JSON.

Rendering never touches text outside a well-formed block. A marker that is malformed, unclosed,
nested or unmatched, a block naming a table or benchmark that does not exist, or a malformed
results JSON, is a `ResultsError` naming the file and line ("one line": the CLI prints it as is),
and then NO document is written: every document is rendered in memory first, then each changed
one is replaced atomically (temp file + os.replace). Markers inside fenced code blocks are text.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from minivid.utils import REPO_ROOT, atomic_write

RESULTS_DIR = REPO_ROOT / "chapters" / "results"
OPEN_RE = re.compile(r"^\s*<!-- results:(?P<bench>[\w-]+):(?P<table>[\w-]+) -->\s*$")
CLOSE_RE = re.compile(r"^\s*<!-- /results -->\s*$")
NEAR_RE = re.compile(r"^\s*<!--\s*/?\s*results\b")          # looks like a marker: must then be an exact one
FENCE_RE = re.compile(r"^\s*(```|~~~)")
CLOSE = "<!-- /results -->"


class ResultsError(ValueError):
    """A results block or results JSON that cannot be rendered safely; the message is one line, `file:line: ...`."""


def format_value(v) -> str:
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, int):
        return f"{v:,}" if abs(v) >= 10000 else str(v)
    if isinstance(v, float):
        if v != v:
            return "nan"
        a = abs(v)
        if a == 0:
            return "0"
        if a >= 1000:
            return f"{v:,.0f}"
        if a >= 10:
            return f"{v:.1f}"
        if a >= 0.01:
            return f"{v:.3f}"
        return f"{v:.2e}"
    return str(v)


def table_markdown(rows: list[dict]) -> str:
    """Rows of dicts -> a GitHub markdown table (columns in first-seen order)."""
    if not rows:
        return "_(no rows)_"
    cols: list[str] = []
    for r in rows:
        cols += [c for c in r if c not in cols]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(format_value(r.get(c, "")) for c in cols) + " |")
    return "\n".join(lines)


def _show(path: Path) -> str:
    path = Path(path)
    try:
        return str(path.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def load_record(bench: str, results_dir: Path = RESULTS_DIR) -> dict:
    """The recorded JSON of benchmark `bench`; ResultsError naming the file when missing or malformed."""
    path = Path(results_dir) / f"{bench}.json"
    rerun = f"`python -m minivid bench {bench} --preset full --out {_show(path)}`"
    if not path.exists():
        raise ResultsError(f"no recorded results for {bench!r} at {_show(path)}; run {rerun}")
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ResultsError(f"{_show(path)}:{e.lineno}:{e.colno}: malformed results JSON ({e.msg}); fix it, "
                           f"or restore it with `git checkout {_show(path)}`, or re-run {rerun}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ResultsError(f"{_show(path)}: cannot read the results JSON ({type(e).__name__}: {e})") from None
    if not isinstance(record, dict):
        raise ResultsError(f"{_show(path)}: a results record must be a JSON object, got {type(record).__name__}")
    missing = [k for k in ("bench", "preset", "seed", "wall_time_s", "date", "machine", "figures", "tables")
               if k not in record]
    if missing:
        raise ResultsError(f"{_show(path)}: results JSON lacks {', '.join(missing)}; re-run {rerun}")
    return record


def provenance(record: dict) -> str:
    m = record["machine"]
    seeds = f" --seeds {record['seeds']}" if int(record.get("seeds", 1)) > 1 else ""
    ident = "".join(f" {m[k]}" for k in ("cpu_id", "cpu_capability") if m.get(k))   # "25/1 AVX2" (since 2026-12-02)
    cpu = f"{m['cpu_model']}{ident}, " if m.get("cpu_model") else ""
    threads = f", {m['torch_threads']} threads" if m.get("cpu_model") and m.get("torch_threads") else ""
    # a bench that resumes across runs (the leaderboard) records its entries' wall time beside the last run's
    spread = record.get("figures", {}).get("entries_wall_s")
    wall = f"{record['wall_time_s']:.0f} s wall" + (f" (its entries took {spread:.0f} s in the runs that finished "
                                                    f"them)" if spread else "")
    return (f"_Measured by `python -m minivid bench {record['bench']} --preset {record['preset']} "
            f"--seed {record['seed']}{seeds}` on {record['date'][:10]}: {wall}, "
            f"{m['device']} ({cpu}{m['cpu_count']} cores{threads}, torch {m['torch']})._")


def render_block(record: dict, table: str) -> str:
    """The body of a block: the table (or the figures) as markdown plus the provenance line."""
    if table == "figures":
        rows = [{"figure": k, "value": v} for k, v in record["figures"].items()]
    else:
        if table not in record["tables"]:
            raise ResultsError(f"results/{record['bench']}.json has no table {table!r} "
                               f"(tables: {', '.join(record['tables']) or 'none'})")
        rows = record["tables"][table]
    try:
        return table_markdown(rows) + "\n\n" + (record.get("provenance_line") or provenance(record)) + "\n"
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise ResultsError(f"results/{record['bench']}.json: cannot render table {table!r} "
                           f"({type(e).__name__}: {e}); re-run its benchmark") from None


def render_text(text: str, results_dir: Path = RESULTS_DIR, name: str = "<text>") -> str:
    """`text` with every results block re-rendered; ResultsError (`name:line: ...`) if any block is unsafe."""
    cache: dict[str, dict] = {}
    out: list[str] = []
    opened: tuple[int, re.Match] | None = None      # (line number, match) of the block being replaced
    fence = None
    for i, line in enumerate(text.splitlines(keepends=True), start=1):
        if opened is None and (f := FENCE_RE.match(line)):
            fence = None if fence == f.group(1) else (fence or f.group(1))
        if fence is not None:
            out.append(line)
            continue
        where = f"{name}:{i}"
        if m := OPEN_RE.match(line):
            if opened is not None:
                raise ResultsError(f"{where}: a results block opens while the one opened at line {opened[0]} is "
                                   f"still open; add its missing `{CLOSE}` after its table (before line {i})")
            opened = (i, m)
            out.append(line)
        elif CLOSE_RE.match(line):
            if opened is None:
                raise ResultsError(f"{where}: `{CLOSE}` without an opening `<!-- results:BENCH:TABLE -->` marker")
            bench, table = opened[1].group("bench"), opened[1].group("table")
            try:
                if bench not in cache:
                    cache[bench] = course_record(results_dir) if bench == COURSE else load_record(bench, results_dir)
                out.append(render_block(cache[bench], table))
            except ResultsError as e:
                raise ResultsError(f"{name}:{opened[0]}: block `{bench}:{table}`: {e}") from None
            out.append(line)
            opened = None
        elif NEAR_RE.match(line):
            raise ResultsError(f"{where}: malformed results marker {line.strip()!r}; write "
                               f"`<!-- results:BENCH:TABLE -->` or `{CLOSE}`, alone on the line")
        elif opened is None:
            out.append(line)                          # text outside blocks is kept byte for byte
    if opened is not None:
        raise ResultsError(f"{name}:{opened[0]}: results block `{opened[1].group('bench')}:"
                           f"{opened[1].group('table')}` is never closed; add `{CLOSE}` after its table")
    return "".join(out)


# ----------------------------------------------------------------------------- the whole course

COURSE = "course"        # `<!-- results:course:syllabus -->`: a table built from every chapter, not one bench
_PREREQ_RE = re.compile(r"^>.*?Prerequisites:\s*(?P<text>.+?)\s*$")


def training_seconds(figures: dict) -> tuple[float, str] | None:
    """A chapter's recorded training wall time on its bench machine, and the figure(s) it was read from:
    `train_minutes`, else `train_minutes_mean`, else `total_train_s`, else the sum of every `*_train_s` / `*_train_wall_s` (not CPU time)."""
    if "train_minutes" in figures:
        return 60.0 * float(figures["train_minutes"]), "train_minutes"
    if "train_minutes_mean" in figures:                  # a record over seeds whose first model was cached
        return 60.0 * float(figures["train_minutes_mean"]), "train_minutes_mean"
    if "total_train_s" in figures:
        return float(figures["total_train_s"]), "total_train_s"
    keys = [k for k in figures if k.endswith(("_train_s", "_train_wall_s")) and "cpu" not in k]
    return (sum(float(figures[k]) for k in keys), " + ".join(keys)) if keys else None


def _chapter_key(name: str) -> str | None:
    head = name.split("_")[0]
    return head if head.isdigit() and len(head) == 2 else "A" if head == "appendix" else None


def course_record(results_dir: Path = RESULTS_DIR) -> dict:
    """The syllabus: per chapter its topic, prerequisites, reading, lab, exercises and training minutes.

    Everything is found, nothing listed: chapters/NN_*.md (topic = its title; prerequisites = the text after
    "Prerequisites:" on a quoted line near its top), notebooks/NN_*.ipynb, the exercise regions of minivid/,
    and chapters/results/chNN.json (`training_seconds`). The appendix is chapter A.
    """
    results_dir = Path(results_dir)
    root = results_dir.parents[1]
    rows: dict[str, dict] = {}

    def row(key: str) -> dict:
        return rows.setdefault(key, {"ch": key, "topic": "", "prerequisites": "", "reading": "", "lab": "",
                                     "exercises": "", "training (min)": ""})

    for doc in sorted((root / "chapters").glob("*.md")):
        if (key := _chapter_key(doc.stem)) is None:
            continue
        lines = doc.read_text(encoding="utf-8").splitlines()
        title = next((ln[2:].strip() for ln in lines if ln.startswith("# ")), doc.stem)
        r = row(key)
        r["topic"] = re.sub(r"^(Chapter\s+\d+|\d+)\s*[·—:-]\s*", "", title)
        r["reading"] = f"[{doc.name}](chapters/{doc.name})"
        pre = next((m.group("text") for ln in lines[:12] if (m := _PREREQ_RE.match(ln))), "")
        r["prerequisites"] = re.sub(r"\]\((?!https?:|/)([^)]+)\)", r"](chapters/\1)", pre)
    for nb in sorted((root / "notebooks").glob("*.ipynb")):
        if (key := _chapter_key(nb.stem)) is not None:
            row(key)["lab"] = f"[{nb.name}](notebooks/{nb.name})"
    if (root / "minivid").is_dir():
        from minivid.exercises.regions import find_regions
        for reg in find_regions(root / "minivid"):
            key = reg.chapter if reg.chapter == "A" else f"{int(reg.chapter):02d}"
            r = row(key)
            r["exercises"] = ", ".join(filter(None, [r["exercises"], reg.id]))
    sources = []
    for path in sorted(results_dir.glob("ch[0-9][0-9].json")):
        record = load_record(path.stem, results_dir)
        found = training_seconds(record["figures"])
        if found is None:
            continue
        seconds, names = found
        cores = record["machine"].get("cpu_count")
        row(path.stem[2:])["training (min)"] = f"{seconds / 60:.1f}" + ("" if cores == 2 else f" ({cores} cores)")
        sources.append(f"{path.name} `{names}` ({record['date'][:10]}, {cores} cores)")
    table = sorted(rows.values(), key=lambda r: (r["ch"] == "A", r["ch"]))
    for r in table:
        for k in ("topic", "prerequisites", "reading", "lab", "exercises", "training (min)"):
            r[k] = r[k] or "—"
    line = ("_Rendered by `python -m minivid results render` from the chapters, the notebooks, the exercise regions "
            "in `minivid/` and the training wall time recorded by each chapter's bench: "
            + ("; ".join(sources) or "none recorded yet") + "._")
    return {"bench": COURSE, "tables": {"syllabus": table}, "figures": {}, "provenance_line": line}


def documents(root: Path = REPO_ROOT) -> list[Path]:
    """Markdown files that may carry result blocks."""
    return sorted((root / "chapters").glob("*.md")) + [root / "README.md"]


def render_all(check: bool = False, root: Path = REPO_ROOT) -> list[Path]:
    """Re-render every document; with check=True write nothing and return the stale ones.

    Every document is rendered first; any problem raises ResultsError (the first, plus how many more)
    before a single file is written, in both modes. Then each stale document is replaced atomically.
    """
    root = Path(root)
    rendered, problems = [], []
    for doc in documents(root):
        if not doc.exists():
            continue
        try:
            old = doc.read_text(encoding="utf-8")
            new = render_text(old, root / "chapters" / "results", name=_show(doc))
        except ResultsError as e:
            problems.append(str(e))
            continue
        except (OSError, UnicodeDecodeError) as e:
            problems.append(f"{_show(doc)}: cannot read it ({type(e).__name__}: {e})")
            continue
        if new != old:
            rendered.append((doc, new))
    if problems:
        more = f" (and {len(problems) - 1} more problem{'s' * (len(problems) > 2)})" if len(problems) > 1 else ""
        raise ResultsError(f"{problems[0]}{more}; nothing was written")
    if not check:
        for doc, new in rendered:
            atomic_write(doc, lambda f, text=new: f.write(text), binary=False)
    return [doc for doc, _ in rendered]
