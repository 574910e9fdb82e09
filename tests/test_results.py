"""Numbers in the chapters and README agree with the recorded benchmark JSON."""
import json

import pytest

from minivid import results
from minivid.bench import format_record, run_bench, table_markdown


def test_documents_agree_with_recorded_results():
    stale = results.render_all(check=True)
    assert not stale, f"out of date: {[str(p) for p in stale]}; run `python -m minivid results render`"


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
    with pytest.raises(KeyError, match="no table 'nope'"):
        results.render_text("<!-- results:demo:nope -->\n<!-- /results -->", tmp_path)
    with pytest.raises(FileNotFoundError, match="python -m minivid bench other"):
        results.render_text("<!-- results:other:t -->\n<!-- /results -->", tmp_path)


def test_table_markdown_and_record_format():
    assert table_markdown([{"x": 1}, {"y": 2.0}]) == "| x | y |\n|---|---|\n| 1 |  |\n|  | 2.000 |"
    with pytest.raises(SystemExit, match="unknown benchmark"):
        run_bench("no_such_bench")
    rec = {"bench": "b", "preset": "smoke", "seed": 0, "wall_time_s": 1.0,
           "machine": {"device": "cpu", "cpu_count": 2, "torch": "x"}, "figures": {"f": 1.0}, "tables": {}}
    assert "| f | 1.000 |" in format_record(rec)
