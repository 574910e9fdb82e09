"""Render measured benchmark results into the chapters: numbers are measured, never typed.

A chapter marks where a table goes:

    <!-- results:ch01:samplers -->
    (generated — do not edit)
    <!-- /results -->

`render_text(text)` replaces the body of each marked block with the table `samplers` of
`chapters/results/ch01.json` (or `figures` for the flat figures dict) plus a provenance line
naming the command, preset, seed, wall time and machine. `python -m minivid results render`
rewrites the files; `--check` (and tests/test_results.py) fails when a chapter disagrees
with its JSON.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from minivid.bench import table_markdown
from minivid.utils import REPO_ROOT

RESULTS_DIR = REPO_ROOT / "chapters" / "results"
BLOCK_RE = re.compile(
    r"(?P<open><!-- results:(?P<bench>[\w-]+):(?P<table>[\w-]+) -->\n)(?P<body>.*?)(?P<close><!-- /results -->)",
    re.DOTALL,
)


def load_record(bench: str, results_dir: Path = RESULTS_DIR) -> dict:
    path = Path(results_dir) / f"{bench}.json"
    if not path.exists():
        raise FileNotFoundError(
            f"no recorded results for {bench!r} at {path}; run "
            f"`python -m minivid bench {bench} --preset full --out {path.relative_to(REPO_ROOT) if path.is_relative_to(REPO_ROOT) else path}`")
    return json.loads(path.read_text())


def provenance(record: dict) -> str:
    m = record["machine"]
    return (f"_Measured by `python -m minivid bench {record['bench']} --preset {record['preset']} "
            f"--seed {record['seed']}` on {record['date'][:10]}: {record['wall_time_s']:.0f} s wall, "
            f"{m['device']} ({m['cpu_count']} cores, torch {m['torch']})._")


def render_block(record: dict, table: str) -> str:
    if table == "figures":
        rows = [{"figure": k, "value": v} for k, v in record["figures"].items()]
    else:
        if table not in record["tables"]:
            raise KeyError(f"results/{record['bench']}.json has no table {table!r} "
                           f"(tables: {', '.join(record['tables']) or 'none'})")
        rows = record["tables"][table]
    return table_markdown(rows) + "\n\n" + provenance(record) + "\n"


def render_text(text: str, results_dir: Path = RESULTS_DIR) -> str:
    cache: dict[str, dict] = {}

    def sub(m: re.Match) -> str:
        bench = m.group("bench")
        if bench not in cache:
            cache[bench] = load_record(bench, results_dir)
        return m.group("open") + render_block(cache[bench], m.group("table")) + m.group("close")

    return BLOCK_RE.sub(sub, text)


def documents(root: Path = REPO_ROOT) -> list[Path]:
    """Markdown files that may carry result blocks."""
    return sorted((root / "chapters").glob("*.md")) + [root / "README.md"]


def render_all(check: bool = False, root: Path = REPO_ROOT) -> list[Path]:
    """Re-render every document; with check=True write nothing and return the stale ones."""
    stale = []
    for doc in documents(root):
        if not doc.exists():
            continue
        old = doc.read_text()
        new = render_text(old, root / "chapters" / "results")
        if new != old:
            stale.append(doc)
            if not check:
                doc.write_text(new)
    return stale
