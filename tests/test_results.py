"""Numbers in the chapters and README agree with the recorded benchmark JSON; rendering never loses text."""
import json
import os
import stat
from pathlib import Path

import pytest

from minivid import results
from minivid.bench import format_record, run_bench
from minivid.results import table_markdown


def test_documents_agree_with_recorded_results():
    stale = results.render_all(check=True)
    assert not stale, f"out of date: {[str(p) for p in stale]}; run `python -m minivid results render`"


def test_provenance_names_the_seeds_and_the_cpu_when_recorded():
    record = {"bench": "ch04", "preset": "full", "seed": 0, "seeds": 3, "wall_time_s": 60.0,
              "date": "2026-12-01T00:00:00+00:00", "machine": {"device": "cpu", "cpu_count": 2, "torch": "2.13.0",
                                                              "cpu_model": "AMD EPYC", "torch_threads": 2}}
    line = results.provenance(record)
    assert "bench ch04 --preset full --seed 0 --seeds 3`" in line and "(AMD EPYC, 2 cores, 2 threads, torch" in line
    old = {**record, "seeds": 1, "machine": {"device": "cpu", "cpu_count": 2, "torch": "2.13.0"}}
    assert results.provenance(old).endswith("--seed 0` on 2026-12-01: 60 s wall, cpu (2 cores, torch 2.13.0)._")
    new = {**record, "machine": {**record["machine"], "cpu_id": "25/1", "cpu_capability": "AVX2"}}
    assert "(AMD EPYC 25/1 AVX2, 2 cores, 2 threads, torch" in results.provenance(new), "which EPYC, which ISA"
    resumed = {**record, "figures": {"entries_wall_s": 7200.4}}
    assert ": 60 s wall (its entries took 7200 s in the runs that finished them), cpu" in results.provenance(resumed)


def test_render_fills_block_from_json_and_names_the_command(tmp_path):
    record = {"bench": "demo", "preset": "full", "seed": 3, "wall_time_s": 12.5, "date": "2026-11-25T00:00:00+00:00",
              "machine": {"device": "cpu", "cpu_count": 2, "torch": "2.13.0"},
              "figures": {"acc": 0.5}, "tables": {"t": [{"a": 1, "b": 0.25}]}}
    (tmp_path / "demo.json").write_text(json.dumps(record))
    text = "x\n<!-- results:demo:t -->\nstale\n<!-- /results -->\ny"
    out = results.render_text(text, tmp_path)
    assert "| a | b |\n|---|---|\n| 1 | 0.250 |" in out and "stale" not in out
    assert "python -m minivid bench demo --preset full --seed 3" in out
    assert results.render_text(out, tmp_path) == out                   # idempotent
    with pytest.raises(results.ResultsError, match=r"^doc\.md:1: block `demo:nope`: .*no table 'nope' \(tables: t\)$"):
        results.render_text("<!-- results:demo:nope -->\n<!-- /results -->", tmp_path, name="doc.md")
    with pytest.raises(results.ResultsError, match="python -m minivid bench other"):
        results.render_text("<!-- results:other:t -->\n<!-- /results -->", tmp_path)


def test_table_markdown_and_record_format():
    assert table_markdown([{"x": 1}, {"y": 2.0}]) == "| x | y |\n|---|---|\n| 1 |  |\n|  | 2.000 |"
    with pytest.raises(SystemExit, match="unknown benchmark"):
        run_bench("no_such_bench")
    rec = {"bench": "b", "preset": "smoke", "seed": 0, "wall_time_s": 1.0,
           "machine": {"device": "cpu", "cpu_count": 2, "torch": "x"}, "figures": {"f": 1.0}, "tables": {}}
    assert "| f | 1.000 |" in format_record(rec)


RECORD = {"bench": "demo", "preset": "full", "seed": 3, "wall_time_s": 12.5, "date": "2026-11-25T00:00:00+00:00",
          "machine": {"device": "cpu", "cpu_count": 2, "torch": "2.13.0"},
          "figures": {"acc": 0.5}, "tables": {"t": [{"a": 1, "b": 0.25}]}}
GOOD = "# ch\nprose 1\n<!-- results:demo:t -->\nstale\n<!-- /results -->\nprose 2\n<!-- results:demo:figures -->\n" \
       "<!-- /results -->\nprose 3\n"


def _repo(tmp_path: Path, docs: dict[str, str], record: str | None = None) -> Path:
    """A fake repo: chapters/*.md (+ README.md) and chapters/results/demo.json."""
    (tmp_path / "chapters" / "results").mkdir(parents=True)
    (tmp_path / "chapters" / "results" / "demo.json").write_text(json.dumps(RECORD) if record is None else record)
    for name, text in docs.items():
        (tmp_path / name).write_text(text)
    return tmp_path


def _snapshot(root: Path) -> dict:
    return {p: p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# each damaged document: (text, the line the error must name, what it must say)
BROKEN = {
    "missing close": ("a\n<!-- results:demo:t -->\nold\nb\n<!-- results:demo:t -->\nx\n<!-- /results -->\nc\n",
                      5, "while the one opened at line 2 is still open"),
    "missing last close": ("a\n<!-- results:demo:t -->\nold\nprose that must survive\n", 2, "is never closed"),
    "stray close": ("a\n<!-- /results -->\nb\n", 2, "without an opening"),
    "unknown table": ("a\n<!-- results:demo:nope -->\n<!-- /results -->\n", 2, "no table 'nope'"),
    "unknown bench": ("a\n<!-- results:ghost:t -->\n<!-- /results -->\n", 2, "python -m minivid bench ghost"),
    "malformed open": ("a\n<!-- results:demo -->\nb\n<!-- /results -->\n", 2, "malformed results marker"),
    "malformed close": ("<!-- results:demo:t -->\nb\n<!--/results-->\nc\n", 3, "malformed results marker"),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_a_broken_block_is_one_error_with_file_and_line_and_nothing_is_written(tmp_path, case):
    text, line, what = BROKEN[case]
    # 01 is stale and well formed, 02 is broken: 01 must not be rewritten either (check all, then write)
    root = _repo(tmp_path, {"chapters/01_ok.md": GOOD, "chapters/02_bad.md": text, "README.md": "readme\n"})
    before = _snapshot(root)
    for check in (True, False):                      # --check must not advise a render that would fail
        with pytest.raises(results.ResultsError) as e:
            results.render_all(check=check, root=root)
        msg = str(e.value)
        assert "\n" not in msg and msg.startswith(f"{root / 'chapters' / '02_bad.md'}:{line}: "), msg
        assert what in msg and msg.endswith("nothing was written"), msg
    assert _snapshot(root) == before


def test_malformed_json_names_its_file(tmp_path):
    root = _repo(tmp_path, {"chapters/01.md": GOOD}, record='{"bench": "demo",\n  "seed": }')
    with pytest.raises(results.ResultsError, match=r"01\.md:3: block `demo:t`: .*demo\.json:2:11: malformed results "
                                                   r"JSON \(Expecting value\)"):
        results.render_all(root=root)
    (root / "chapters" / "results" / "demo.json").write_text(json.dumps({"bench": "demo"}))
    with pytest.raises(results.ResultsError, match=r"demo\.json: results JSON lacks preset, seed"):
        results.render_all(root=root)
    assert (root / "chapters" / "01.md").read_text() == GOOD


def test_render_all_rewrites_only_block_bodies_atomically_keeping_the_mode(tmp_path, monkeypatch):
    fenced = "```\n<!-- results:demo:t -->\nan example, not a block\n```\n"
    inline = "write `<!-- results:demo:t -->` above a table\n"
    root = _repo(tmp_path, {"chapters/01.md": GOOD + fenced + inline, "README.md": "no blocks\n"})
    os.chmod(root / "chapters" / "01.md", 0o640)
    replaced = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: (replaced.append(Path(b).name), real_replace(a, b)))
    assert results.render_all(check=True, root=root) == [root / "chapters" / "01.md"]
    assert results.render_all(root=root) == [root / "chapters" / "01.md"]
    assert replaced == ["01.md"]                                            # temp file + os.replace
    new = (root / "chapters" / "01.md").read_text()
    assert stat.S_IMODE((root / "chapters" / "01.md").stat().st_mode) == 0o640
    assert new.startswith("# ch\nprose 1\n<!-- results:demo:t -->\n| a | b |") and "stale" not in new
    assert "\n<!-- /results -->\nprose 2\n<!-- results:demo:figures -->\n| figure | value |" in new
    assert new.endswith("<!-- /results -->\nprose 3\n" + fenced + inline)     # text outside blocks: unchanged
    assert results.render_all(check=True, root=root) == []                  # idempotent
    assert sorted(p.name for p in (root / "chapters").iterdir()) == ["01.md", "results"]
