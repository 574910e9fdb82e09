"""The README's syllabus (rendered from the repository and the recorded benches) and the glossary every chapter
links to."""
import json
import re
from pathlib import Path

import pytest

from minivid import results
from minivid.exercises import find_regions

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted(p for p in (ROOT / "chapters").glob("*.md") if p.name != "glossary.md")


@pytest.mark.parametrize("path", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_every_chapter_links_the_glossary_at_its_top(path):
    head = path.read_text(encoding="utf-8").splitlines()[:5]
    assert any("](glossary.md)" in line for line in head), \
        f"{path.name}: put `> [Glossary and notation](glossary.md) · Prerequisites: ...` right under its title"


def test_the_glossary_defines_the_notation():
    text = (ROOT / "chapters" / "glossary.md").read_text(encoding="utf-8")
    for symbol in ("ᾱ_t (alpha-bar)", "| σ |", "| v |", "| B |", "| C |", "| T |", "| H, W |", "| L |", "| D |",
                   "`schedule.alpha_bars`", "Rectified flow"):
        assert symbol in text, symbol


def test_training_minutes_are_read_from_the_recorded_figures():
    assert results.training_seconds({"train_minutes": 6.5, "total_train_s": 1}) == (390.0, "train_minutes")
    assert results.training_seconds({"total_train_s": 354.0, "clip_train_s": 1.0}) == (354.0, "total_train_s")
    assert results.training_seconds({"train_minutes_mean": 2.0, "total_train_s": 1}) == (120.0, "train_minutes_mean")
    assert results.training_seconds({"a_train_s": 10.0, "b_train_wall_s": 20.0, "a_train_cpu_s": 99.0}) == \
        (30.0, "a_train_s + b_train_wall_s")
    assert results.training_seconds({"heldout_shape_acc": 1.0}) is None


def test_a_new_chapter_appears_in_the_syllabus_without_editing_a_list(tmp_path):
    (tmp_path / "chapters" / "results").mkdir(parents=True)
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "chapters" / "05_cascade.md").write_text(
        "# 05 · Imagen Video: a cascade\n\n> [Glossary and notation](glossary.md) · Prerequisites: "
        "[03](03_video_diffusion.md) (the video U-Net)\n\ntext\n")
    (tmp_path / "notebooks" / "05_cascade.ipynb").write_text("{}")
    record = {"bench": "ch05", "preset": "full", "seed": 0, "wall_time_s": 1.0, "date": "2026-12-01T00:00:00",
              "machine": {"device": "cpu", "cpu_count": 2, "torch": "2.13.0"}, "figures": {"train_minutes": 4.25},
              "tables": {}}
    (tmp_path / "chapters" / "results" / "ch05.json").write_text(json.dumps(record))
    doc = "# x\n<!-- results:course:syllabus -->\n<!-- /results -->\n"
    out = results.render_text(doc, tmp_path / "chapters" / "results")
    row = next(line for line in out.splitlines() if line.startswith("| 05 |"))
    assert "Imagen Video: a cascade" in row and "[03](chapters/03_video_diffusion.md) (the video U-Net)" in row
    assert "[05_cascade.md](chapters/05_cascade.md)" in row and "[05_cascade.ipynb](notebooks/05_cascade.ipynb)" in row
    assert row.rstrip(" |").endswith("4.2") and "ch05.json `train_minutes`" in out


def test_the_readme_syllabus_lists_every_chapter_and_exercise():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"## Syllabus\n(.*?)\n## ", text, re.S)
    assert block and "<!-- results:course:syllabus -->" in block.group(1)
    rows = {line.split("|")[1].strip(): line for line in block.group(1).splitlines()
            if re.match(r"\| (\d\d|A) \|", line)}
    for r in find_regions(ROOT / "minivid"):
        key = r.chapter if r.chapter == "A" else f"{int(r.chapter):02d}"
        assert key in rows and r.id in rows[key], f"exercise {r.id} is missing from the syllabus; run " \
                                                  "`python -m minivid results render`"
    for path in CHAPTERS:
        assert f"](chapters/{path.name})" in block.group(1), path.name
