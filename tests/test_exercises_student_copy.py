"""A student copy runs: the notebooks up to their first exercise, and every exercise cell fails with its own
message. (After the solutions are put back the copy IS the repository again - tests/test_exercises.py
checks that byte for byte - and tests/test_notebooks.py runs every notebook of the repository through.)

The copy strips every chapter (the default export). Each notebook is executed in ONE kernel, in smoke mode:
every cell up to and including its first exercise cell, then each later exercise cell on its own (they
only call checkers, so they need nothing but the imports). Notebooks and exercise cells are discovered:
an exercise cell is a code cell tagged `exercise` or one that calls a `minivid.exercises` checker (a chapter's
`exNN.check_...()`, or `exercises.grade("N.M")`, which runs the tests marked for N.M).
"""
import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from minivid.exercises import export, find_regions

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
CHECKER_CALL = re.compile(r"\b(?:ex\d\d|ch\d\d|appendix)\.check_\w+\(|\bexercises\.grade\(")
EXERCISE_ID = re.compile(r"Exercise ((?:\d+|A)\.\d+)")


def is_exercise_cell(cell) -> bool:
    return cell.cell_type == "code" and ("exercise" in cell.metadata.get("tags", [])
                                         or bool(CHECKER_CALL.search(cell.source)))


def chapter_of(path: Path) -> str:
    head = path.stem.split("_")[0]
    return str(int(head)) if head.isdigit() else head.upper()


@pytest.fixture(scope="module")
def student_copy(tmp_path_factory):
    dst = tmp_path_factory.mktemp("student") / "copy"
    export(dst)
    return dst


@pytest.mark.notebook
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_student_notebook_runs_to_its_first_exercise_and_each_exercise_cell_names_itself(path, student_copy,
                                                                                          monkeypatch):
    chapter = chapter_of(path)
    own = {r.id for r in find_regions(ROOT / "minivid") if r.chapter == chapter}
    nb = nbformat.read(student_copy / "notebooks" / path.name, as_version=4)
    ex_cells = [i for i, c in enumerate(nb.cells) if is_exercise_cell(c)]
    if not ex_cells:
        assert not own, (f"{path.name}: chapter {chapter} has exercises {sorted(own)} but the notebook has no exercise "
                         "cell (a code cell tagged 'exercise' that calls the chapter's checker)")
        pytest.skip(f"{path.name} has no exercises")
    first = ex_cells[0]
    params = next(i for i, c in enumerate(nb.cells) if c.cell_type == "code")
    injected = nbformat.v4.new_code_cell('PRESET = "smoke"  # injected by tests/test_exercises_student_copy.py')
    run = [nb.cells[i] for i in range(first + 1) if nb.cells[i].cell_type == "code"]
    run.insert(run.index(nb.cells[params]) + 1, injected)
    later = [nb.cells[i] for i in ex_cells[1:]]
    monkeypatch.setenv("PYTHONPATH", str(student_copy))       # the kernel imports the copy's minivid
    monkeypatch.setenv("MPLBACKEND", "Agg")
    small = nbformat.v4.new_notebook(cells=run + later, metadata=nb.metadata)
    client = NotebookClient(small, timeout=600, kernel_name="python3", allow_errors=True,
                            resources={"metadata": {"path": str(student_copy / "notebooks")}})
    with client.setup_kernel():
        for idx, cell in enumerate(small.cells):
            client.execute_cell(cell, idx)
            errors = [o for o in cell.outputs if o.output_type == "error"]
            if not is_exercise_cell(cell):
                assert not errors, (f"{path.name}: a cell before the first exercise failed in the student copy:\n"
                                    f"{cell.source[:300]}\n-> {errors[0]['ename']}: {errors[0]['evalue'][:500]}")
                continue
            assert errors, f"{path.name}: exercise cell {cell.source!r} passed in the student copy (a stub must fail)"
            err = errors[0]
            named = EXERCISE_ID.findall(err["evalue"])
            assert err["ename"] == "NotImplementedError" and named, \
                f"{path.name}: exercise cell {cell.source!r} failed with {err['ename']}: {err['evalue'][:300]}"
            assert named[0] in own, (f"{path.name}: exercise cell {cell.source!r} names exercise {named[0]}, "
                                     f"not one of chapter {chapter}'s ({sorted(own)}): {err['evalue'][:300]}")
