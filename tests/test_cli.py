"""The command line as a user runs it (in-process via main(), plus one real subprocess)."""
import json
from pathlib import Path
import subprocess
import sys

import pytest
import torch

from minivid.bench import demo as bench_demo
from minivid.cli import main
from minivid.data import sample_batch
from minivid.results import load_record
from minivid.viz import save_video


def test_help_runs_as_a_module():
    out = subprocess.run([sys.executable, "-m", "minivid", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    for cmd in ("demo", "generate", "train", "eval", "bench", "exercises", "data", "results"):
        assert cmd in out.stdout


def test_bench_writes_json_with_provenance(tmp_path, capsys):
    out = tmp_path / "judge.json"
    assert main(["bench", "judge", "--preset", "smoke", "--out", str(out)]) == 0
    rec = json.loads(out.read_text())
    assert rec["preset"] == "smoke" and rec["seed"] == 0 and rec["wall_time_s"] > 0
    assert {"cpu_count", "cpu_model", "torch_threads", "torch", "platform"} <= set(rec["machine"])
    assert rec["machine"]["cpu_model"], "the CPU model is named (issue 19: wall times need their machine)"
    assert rec["machine"]["cpu_capability"] in ("DEFAULT", "AVX2", "AVX512", "NO AVX", "ZVECTOR", "VSX", "SVE256")
    assert rec["machine"]["cpu_id"] is None or rec["machine"]["cpu_id"].count("/") == 1
    assert "bench judge" in capsys.readouterr().out


def test_bench_without_out_still_keeps_its_record(tmp_path, monkeypatch, capsys):
    """A long bench run without --out must not end as terminal output only: the record goes to outputs/bench/."""
    monkeypatch.chdir(tmp_path)
    assert main(["bench", "judge", "--preset", "smoke"]) == 0
    out = tmp_path / "outputs" / "bench" / "judge-smoke-seed0-seeds1.json"
    assert json.loads(out.read_text())["bench"] == "judge"
    assert f"wrote {Path('outputs/bench/judge-smoke-seed0-seeds1.json')}" in capsys.readouterr().out


def test_unknown_bench_is_a_clear_error():
    with pytest.raises(SystemExit, match="unknown benchmark 'nope'; available:"):
        main(["bench", "nope"])


def test_data_and_eval_round_trip(tmp_path, capsys):
    b = sample_batch(1, kind="video_text", size=16, frames=8, generator=torch.Generator().manual_seed(3))
    clip = save_video(b["x"][0], tmp_path / "one.gif", scale=1)
    assert main(["eval", str(clip), "--prompt", b["captions"][0]]) == 0
    assert "MATCHES the prompt" in capsys.readouterr().out
    assert main(["eval", str(clip), "--prompt", "a frobulous circle"]) == 2
    assert "not in the Shapes World vocabulary" in capsys.readouterr().err
    assert main(["data", "-n", "2", "--size", "16", "--frames", "4", "--out", str(tmp_path / "d.gif")]) == 0
    assert (tmp_path / "d.gif").exists()


def test_a_warning_on_the_command_line_is_one_line(monkeypatch, capsys):
    import warnings

    import minivid.cli as cli

    def warns(args):
        warnings.warn_explicit("prompt 'a red circel' has words the tokenizer does not know", UserWarning,
                               str(cli.PACKAGE / "text" / "conditioning.py"), 92)                  # minivid's own
        warnings.warn_explicit("another library's deprecation", DeprecationWarning, "/elsewhere/lib.py", 1)
        return 0
    before = warnings.showwarning
    monkeypatch.setattr(cli, "_cmd_video", warns)
    assert main(["generate", "a red circel"]) == 0
    err = capsys.readouterr().err
    assert err.startswith("warning: prompt 'a red circel' has words the tokenizer does not know\n"), err
    assert "warning: another library" not in err, "other libraries' warnings keep their usual display"
    assert warnings.showwarning is before, "the usual display is back once main returns"


def test_unknown_chapter_is_a_clear_error(capsys):
    assert main(["train", "ch42"]) == 2
    assert "no chapter 'ch42'" in capsys.readouterr().err


def test_report_checks_the_words_it_knows_and_never_calls_an_unreadable_prompt_a_match():
    """Unknown words are left out (the tokenizer has warned), the rest is still checked; a prompt with nothing the
    judge can check is said to be so, not 'MATCHES' (it was, for 'a purple elephant dancing')."""
    from minivid.cli.video import judge_report

    b = sample_batch(1, kind="video_text", size=16, frames=8, generator=torch.Generator().manual_seed(3))
    assert b["captions"][0] == "a big crimson ball sliding to the right quickly"        # what the clip shows
    right, wrong, none = judge_report(b["x"].expand(3, -1, -1, -1, -1), [
        "a big crimson bal sliding to the right", "a smal blue ball sliding to the right", "a purple elephant dancing"])
    assert "MATCHES the prompt" in right and "color=red ok" in right and "shape=circle," in right   # 'bal': unchecked
    assert "does not match" in wrong and "color=red WRONG (asked blue)" in wrong and "size=big," in wrong
    assert "nothing to check" in none and "MATCHES" not in none and "WRONG" not in none


def test_corrupt_model_file_is_a_clear_message_not_a_traceback(tmp_path, monkeypatch, capsys):
    from minivid.cli import video
    from minivid.pipelines.common import ChapterCLI
    from minivid.utils import load_checkpoint

    bad = tmp_path / "model.pt"
    bad.write_bytes(b"garbage" * 20)

    def cli_train(preset, seed, steps):
        load_checkpoint(bad, retrain_cmd="python -m minivid train ch03")

    monkeypatch.setattr(video, "chapter_cli", lambda chapter, need="train": ChapterCLI(train=cli_train))
    assert main(["train", "ch03"]) == 1
    err = capsys.readouterr().err
    assert "model.pt is corrupt or truncated" in err and "python -m minivid train ch03" in err
    assert "Traceback" not in err and "weights_only" not in err


def test_bench_demo_times_each_run_in_a_fresh_cache_and_names_a_failing_command(tmp_path):
    """`bench demo` runs the README's demo command as a new user would (a fresh process, an empty MINIVID_HOME);
    a command that fails is reported with its exit status and error, not timed."""
    assert [name for name, _ in bench_demo.RUNS] == ["released", "train", "cached"]
    with pytest.raises(RuntimeError, match=r"demo --preset nope .*failed \(exit 2\).*invalid choice"):
        bench_demo.timed_demo(tmp_path / "home", (), "nope", tmp_path / "x.gif")
    assert not (tmp_path / "home").exists(), "nothing was cached by a failed command"


def test_demo_train_says_how_long_the_recorded_run_took_for_its_preset_only(tmp_path):
    """Before it trains, `demo --train` says what the recorded `bench demo` of the same preset took, and where."""
    rec = {"bench": "demo", "preset": "full", "seed": 0, "wall_time_s": 800.0, "date": "2026-12-05T04:18:51+00:00",
           "machine": {"cpu_model": "Some CPU", "cpu_count": 2}, "figures": {"demo_train_s": 741.0}, "tables": {}}
    (tmp_path / "demo.json").write_text(json.dumps(rec))
    line = bench_demo.recorded_train_time("full", tmp_path)
    assert line.startswith("the recorded run took 12.3 minutes on 2 cores (Some CPU, 2026-12-05")
    assert "bench demo" in line
    assert bench_demo.recorded_train_time("smoke", tmp_path) is None, "a record of another preset says nothing"
    assert bench_demo.recorded_train_time("full", tmp_path / "nowhere") is None
    live = bench_demo.recorded_train_time("full")                    # the committed record
    assert live is not None and f"{load_record('demo')['figures']['demo_train_s'] / 60:.1f} minutes" in live


def test_generate_without_model_samples_the_demos_chapter(tmp_path, monkeypatch):
    """`generate` and `demo` run the same model unless --model says otherwise."""
    from minivid.cli import video
    from minivid.cli.chapters import demo_chapter
    asked = []

    def stop(ch, need):
        asked.append(ch)
        raise video.UsageError("stopped before any model is loaded")
    monkeypatch.setattr(video, "chapter_cli", stop)
    assert main(["generate", "a red circle", "--out", str(tmp_path / "x.gif")]) == 2            # the usage error
    assert main(["generate", "a red circle", "--model", "3", "--out", str(tmp_path / "x.gif")]) == 2
    assert asked == [demo_chapter(), "ch03"]
