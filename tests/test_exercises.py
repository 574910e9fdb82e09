"""Exercise tooling: regions, the student copy (export, --chapter, --force, refusal), feedback (check, status,
hint) and the meta-test that every exercise - and a known mistake of each - is caught by its own tests."""
import io
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from minivid import exercises as ex
from minivid.exercises import meta
from minivid.exercises.base import mistakes_for
from minivid.exercises.export import BACKUP_DIR, MANIFEST
from minivid.exercises.regions import EXERCISE_ID_RE, replace_body

ROOT = Path(__file__).resolve().parents[1]

GOOD = textwrap.dedent('''
    def f(x):
        """Double x."""
        ### BEGIN SOLUTION  # exercise 3.1: double it
        y = 2 * x
        return y
        ### END SOLUTION
''')


def _cli(*args, cwd=ROOT):
    env = dict(os.environ, PYTHONPATH=str(cwd))
    return subprocess.run([sys.executable, "-m", "minivid", "exercises", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True)


# ----------------------------------------------------------------------------- regions

def test_strip_keeps_the_markers_and_the_stub_raises_with_the_exercise_message():
    out = ex.strip_solutions(GOOD)
    assert "y = 2 * x" not in out and '"""Double x."""' in out and "### BEGIN SOLUTION  # exercise 3.1" in out
    ns = {}
    exec(compile(out, "<student>", "exec"), ns)
    with pytest.raises(NotImplementedError, match="Exercise 3.1: double it"):
        ns["f"](1)
    (r,) = ex.parse_regions(Path("m.py"), out)
    assert r.is_stub(out) and not ex.parse_regions(Path("m.py"), GOOD)[0].is_stub(GOOD)
    assert ex.strip_solutions(GOOD, chapters={"2"}) == GOOD                     # another chapter: untouched


@pytest.mark.parametrize("bad,msg", [
    (GOOD.replace("    ### END SOLUTION\n", ""), "never closed"),
    (GOOD.replace("    return y\n", "    ### BEGIN SOLUTION  # exercise 3.2: x\n"), "nested"),
    (GOOD.replace("  # exercise 3.1: double it", ""), "needs a tag"),
    (GOOD.replace("exercise 3.1", "exercise B.1"), "needs a tag"),
    (GOOD.replace("    ### BEGIN SOLUTION  # exercise 3.1: double it\n", ""), "without a matching BEGIN"),
])
def test_malformed_regions_are_refused(bad, msg):
    with pytest.raises(ex.ExerciseFormatError, match=msg):
        ex.strip_solutions(bad, Path("m.py"))


def test_appendix_ids_and_chapter_names():
    (r,) = ex.parse_regions(Path("m.py"), GOOD.replace("exercise 3.1", "exercise A.2"))
    assert (r.id, r.chapter) == ("A.2", "A")
    assert [ex.normalize_chapter(c) for c in ("01", 3, "a", "A")] == ["1", "3", "A", "A"]
    with pytest.raises(ValueError, match="not a chapter"):
        ex.normalize_chapter("x")


def test_export_refuses_a_bad_package_before_writing(tmp_path):
    src = tmp_path / "src"
    (src / "minivid").mkdir(parents=True)
    (src / "minivid" / "m.py").write_text(GOOD.replace("    ### END SOLUTION\n", ""))
    with pytest.raises(ex.ExerciseFormatError, match="never closed"):
        ex.export(tmp_path / "dst", src=src)
    assert not (tmp_path / "dst").exists()


def test_every_region_has_an_id_a_function_and_marked_tests():
    regions = ex.find_regions()
    assert {r.chapter for r in regions} >= {"0", "1", "2", "3", "A"}
    for r in regions:
        assert EXERCISE_ID_RE.match(r.id), r.id
        meta.outer_def(Path(r.path).read_text(), r.begin)                      # raises unless inside a function
        assert ex.tests_marked(r.id), f"exercise {r.id} ({r.where()}) has no test marked exercise({r.id!r})"


# ----------------------------------------------------------------------------- the student copy

@pytest.fixture(scope="module")
def copy_ch0(tmp_path_factory):
    """A copy with only chapter 0 stripped (what an instructor hands out for chapter 0)."""
    dst = tmp_path_factory.mktemp("copy") / "student"
    ex.export(dst, chapters=["0"])
    return dst


def test_export_strips_only_the_chosen_chapters_and_restoring_gives_the_repository_back(copy_ch0, tmp_path):
    rep = ex.export(tmp_path / "all")
    regions = ex.find_regions()
    assert [r.id for r in rep.regions] == [r.id for r in regions]
    for r in regions:                       # chapter 0 only: its stubs there, every other solution as it was
        text = (copy_ch0 / Path(r.path).relative_to(ROOT)).read_text()
        (mine,) = [c for c in ex.parse_regions(Path(r.path), text) if c.id == r.id]
        assert mine.is_stub(text) == (r.chapter == "0"), r.id
    manifest = json.loads((copy_ch0 / MANIFEST).read_text())
    assert manifest["chapters"] == ["0"] and manifest["exercises"] == ["0.1", "0.2", "0.3"]
    # putting the solutions back into the full copy gives every file back byte for byte
    files = {f for f in manifest["files"]}
    assert files >= {"minivid/exercises/ch01.py", "notebooks/01_diffusion.ipynb", "tests/test_exercises.py"}
    stripped = {r.path for r in regions}
    for rel in files:
        original, student = (ROOT / rel).read_bytes(), (tmp_path / "all" / rel).read_bytes()
        if ROOT / rel in stripped:
            text, bodies = student.decode(), {r.id: r.body() for r in ex.parse_regions(ROOT / rel)}
            for r in sorted(ex.parse_regions(ROOT / rel, text), key=lambda r: -r.begin):
                text = replace_body(text, r, bodies[r.id])
            assert text.encode() == original, rel
        else:
            assert student == original, rel
    with pytest.raises(ValueError, match="no exercises in chapter"):
        ex.export(tmp_path / "x", chapters=["42"])


def test_export_never_destroys_a_learners_work(tmp_path):
    dst = tmp_path / "student"
    ex.export(dst, chapters=["1"])
    mine = dst / "minivid" / "diffusion" / "process.py"
    untouched = dst / "minivid" / "diffusion" / "samplers.py"
    answer = mine.read_text().replace('raise NotImplementedError(\'Exercise 1.1', "return x0  # my try\n    raise "
                                      "NotImplementedError('Exercise 1.1")
    mine.write_text(answer)
    with pytest.raises(FileExistsError, match="not empty; pass --force"):
        ex.export(dst)
    rep = ex.export(dst, force=True)                                           # all chapters now
    assert rep.backed_up == ["minivid/diffusion/process.py"] and untouched.exists()
    assert (rep.backup_dir / "minivid/diffusion/process.py").read_text() == answer
    assert rep.backup_dir.parent == dst / BACKUP_DIR
    assert "my try" not in mine.read_text()
    again = ex.export(dst, force=True)                                         # nothing changed since: no backup
    assert again.backed_up == [] and again.written == []


def test_export_into_the_repository_itself_is_refused():
    for where in (".", "minivid", "tests/student-copy"):
        with pytest.raises(ValueError, match="refusing to export into the repository itself"):
            ex.export(ROOT / where, force=True)
    with pytest.raises(ValueError, match="contains the repository"):
        ex.export(ROOT.parent, force=True)
    out = _cli("export", ROOT, "--force")
    assert out.returncode == 2 and "refusing to export into the repository itself" in out.stderr
    assert not any(r.is_stub() for r in ex.find_regions())                     # nothing was written


def test_the_judge_and_the_renderer_give_the_same_numbers_in_a_student_copy(tmp_path):
    """Every region stripped: the data and every score of the judge are those of the solutions, exactly."""
    script = textwrap.dedent("""
        import json, torch
        from minivid.data import sample_batch
        from minivid.eval import Judge, frechet_distance
        g = torch.Generator().manual_seed(0)
        b = sample_batch(64, kind="video_text", size=16, frames=4, generator=g)
        j = Judge()
        s = j.score(b["x"], b["labels"])
        s.pop("per_sample")
        s["frechet"] = frechet_distance(j.features(b["x"][:32]), j.features(b["x"][32:]))
        s["pixels"] = float(b["x"].double().sum())
        print(json.dumps(s, sort_keys=True))
    """)
    ex.export(tmp_path / "student")
    runs = []
    for root in (ROOT, tmp_path / "student"):
        out = subprocess.run([sys.executable, "-c", script], cwd=root, env=dict(os.environ, PYTHONPATH=str(root)),
                             capture_output=True, text=True)
        assert out.returncode == 0, out.stderr[-2000:]
        runs.append(out.stdout)
    assert runs[0] == runs[1]


# ----------------------------------------------------------------------------- feedback in the copy

def test_check_status_hint_and_grade_in_a_student_copy(tmp_path):
    copy_ch0 = tmp_path / "student"
    assert _cli("export", copy_ch0, "--chapter", "0").returncode == 0
    # a known mistake: the slanted sides' distance not normalised
    render = copy_ch0 / "minivid" / "data" / "render.py"
    (r,) = [r for r in ex.parse_regions(render) if r.id == "0.1"]
    solution = next(x for x in ex.find_regions() if x.id == "0.1")
    mistake = next(m for m in mistakes_for("0.1") if "normalised" in m.what)
    render.write_text(replace_body(render.read_text(), r, mistake.apply(solution.body())))
    out = _cli("check", "0", cwd=copy_ch0)
    assert out.returncode == 1 and "needs work" in out.stdout and "0 of 3 done; to do: 0.2, 0.3" in out.stdout
    assert "length of their normal" in out.stdout                              # the checker's diagnosis
    assert "hint: The triangle is the intersection" in out.stdout             # the first hint
    status = io.StringIO()
    ex.status(copy_ch0, stream=status)
    for x in ex.find_regions():                                                # every exercise, with file:line
        assert x.where() in status.getvalue(), x.id
    assert "needs work" in status.getvalue() and "to do" in status.getvalue() and "given" in status.getvalue()
    hint = _cli("hint", "0.1", "--level", "2", cwd=copy_ch0).stdout
    assert "hint 1 of" in hint and "hint 2 of" in hint and "hint 3 of" not in hint and "--level 3" in hint
    with pytest.raises(KeyError, match="no exercise '9.9'"):
        ex.hint("9.9", root=copy_ch0)
    with pytest.raises(NotImplementedError, match="Exercise 0.2"):
        ex.grade("0.2", root=copy_ch0)
    render.write_text(replace_body(render.read_text(), r, solution.body()))     # the right answer
    out = _cli("check", "0", cwd=copy_ch0)
    assert "0.1  the triangle's signed distance" in out.stdout and "1 of 3 done" in out.stdout, out.stdout
    assert any(row["id"] == "0.1" and row["state"] == "done" for row in ex.status(copy_ch0, stream=io.StringIO()))


def test_check_the_appendix_by_letter():
    out = io.StringIO()
    assert ex.check("a", stream=out)
    text = out.getvalue()
    assert "the appendix (A): 2 exercises" in text and "A.1" in text and "2 of 2 done" in text
    assert not ex.check("42", stream=out) and "chapter 42 has no exercises" in out.getvalue()


# ----------------------------------------------------------------------------- the meta-test

def test_a_variant_is_swapped_into_the_live_function_and_back(tmp_path, monkeypatch):
    pkg = tmp_path / "minivid_meta_probe"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    src = textwrap.dedent('''
        class K:
            def f(self, x):
                """Double x (through super(), so the method closes over __class__)."""
                super().__init__()
                ### BEGIN SOLUTION  # exercise 3.1: double it
                return 2 * x
                ### END SOLUTION
    ''')
    (pkg / "m.py").write_text(src)
    monkeypatch.syspath_prepend(str(tmp_path))
    from minivid_meta_probe.m import K
    (r,) = ex.parse_regions(pkg / "m.py")
    method, k = K.f, K()
    with meta.swapped(tmp_path, r.path, meta.variant_text(r, r.stub()), [r.begin]):
        assert K.f is method                                             # the same object, new code
        with pytest.raises(NotImplementedError, match="Exercise 3.1: double it"):
            k.f(2)
    with meta.swapped(tmp_path, r.path, meta.variant_text(r, "        return 3 * x\n"), [r.begin]):
        assert k.f(2) == 6
    assert k.f(2) == 4
    (pkg / "m.py").write_text(src.replace("2 * x", "5 * x"))              # edited after import: refused
    with pytest.raises(LookupError, match="changed on disk"):
        with meta.swapped(tmp_path, r.path, meta.variant_text(r, r.stub()), [r.begin]):
            pass


def test_the_meta_report_is_read_strictly():
    ok = {"kind": "stripped", "what": "the student stub", "caught_by": "t::a", "message": "Exercise 1.1: x",
          "error": ""}
    report = {
        "regions": {"1.1": {"where": "a.py:1"}, "2.1": {"where": "b.py:1"}, "3.1": {"where": "c.py:1"}},
        "judge_and_data": {"outcome": "passed", "reaches": ["1.1"]},
        "tests": {"t::a": {"outcome": "passed", "exercises": ["2.1"], "reaches": ["2.1", "1.1"]},
                  "t::b": {"outcome": "passed", "exercises": ["3.1"], "reaches": []}},
        "variants": {
            "1.1": {"problems": [], "rows": [ok, {**ok, "kind": "mistake", "what": "m1", "caught_by": None}]},
            "2.1": {"problems": [], "rows": [{**ok, "message": "AssertionError: something else"},
                                             {**ok, "kind": "mistake", "what": "m2", "error": "NameError"}]},
            "3.1": {"problems": [], "rows": [ok]}}}
    found = "\n".join(meta.problems(report))
    assert "the judge or the data renderer runs exercise 1.1" in found
    assert "t::a (exercise 2.1) runs exercise 1.1's region" in found
    assert "no test of 1.1 fails on the known mistake 'm1'" in found
    assert "the stub is caught by t::a but its message does not name the exercise" in found
    assert "'m2' fails with NameError" in found
    assert "exercise 3.1 (c.py:1) has no known mistake" in found
    assert meta.notes(report) == ["t::b is marked exercise 3.1 but never runs its region (c.py:1)"]


@pytest.mark.slow
def test_each_exercise_alone_and_a_known_mistake_of_each_are_caught_by_its_own_tests():
    """One region at a time: its stub, then each known mistake, must fail a test of that exercise; no test
    of another chapter (nor the judge, nor the renderer) may reach it. See minivid.exercises.meta."""
    report = meta.run_meta()
    found = meta.problems(report)
    assert not found, "\n".join(found)
    regions = ex.find_regions()
    assert set(report["variants"]) == {r.id for r in regions}
    for r in regions:
        rows = report["variants"][r.id]["rows"]
        assert rows[0]["kind"] == "stripped" and rows[0]["caught_by"]
        assert sum(row["kind"] == "mistake" and bool(row["caught_by"]) for row in rows) >= 1
    assert report["judge_and_data"] == {"outcome": "passed", "reaches": []}
