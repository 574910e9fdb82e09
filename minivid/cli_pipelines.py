"""The CLI subcommands that need models or data: demo, generate, train, eval, data.

Each chapter's recipes live in `minivid.pipelines.chNN`; a recipe module that can be driven
from the command line exposes

    cli_train(preset: str, seed: int, steps: int | None) -> Path          # the cached checkpoint
    cli_generate(prompts: list[str], *, preset, seed, steps, guidance, frames) -> Tensor (B,3,T,H,W)

`demo` uses the newest chapter that can make video from text; until one exists it shows the
data and the judge instead, and says so.
"""
from __future__ import annotations

import importlib
import sys
from pathlib import Path

import torch

DEFAULT_PROMPT = "a big red circle moving to the right"
VIDEO_CHAPTERS = ("ch03",)          # chapters whose models make video from text, newest last


def _pipeline(chapter: str):
    name = chapter if chapter.startswith("ch") else f"ch{int(chapter):02d}"
    try:
        return importlib.import_module(f"minivid.pipelines.{name}")
    except ModuleNotFoundError:
        here = Path(__file__).parent / "pipelines"
        have = sorted(p.stem for p in here.glob("ch*.py"))
        raise SystemExit(f"no chapter {chapter!r}; chapters with recipes: {', '.join(have) or 'none yet'}") from None


def _video_pipeline():
    for ch in reversed(VIDEO_CHAPTERS):
        try:
            mod = importlib.import_module(f"minivid.pipelines.{ch}")
        except ModuleNotFoundError:
            continue
        if hasattr(mod, "cli_generate"):
            return ch, mod
    return None, None


def _judge_report(x: torch.Tensor, prompts: list[str]) -> list[str]:
    """One line per clip: what the judge read, and whether it matches the prompt."""
    from minivid.data import COLORS, DIRECTIONS, SHAPES, SIZES, parse_caption
    from minivid.eval import Judge

    pred = Judge().predict(x)
    names = {"color": COLORS, "shape": SHAPES, "size": SIZES, "direction": DIRECTIONS}
    lines = []
    for i, prompt in enumerate(prompts):
        try:
            want = parse_caption(prompt) if prompt else {}
        except ValueError:          # unknown words: the tokenizer already warned; judge what is there
            want = {}
        parts, ok = [], True
        for k, vocab in names.items():
            got = int(pred[k][i])
            read = vocab[got] if got >= 0 else "-"
            if want.get(k, -1) >= 0:
                hit = got == want[k]
                ok &= hit
                parts.append(f"{k}={read} {'ok' if hit else 'WRONG (asked ' + vocab[want[k]] + ')'}")
            else:
                parts.append(f"{k}={read}")
        valid = bool(pred["valid"][i])
        extra = ""
        if "consistency" in pred:
            extra = f", consistency {float(pred['consistency'][i]):.2f}, flicker {float(pred['flicker'][i]):.3f}"
        verdict = "MATCHES the prompt" if ok and valid else ("does not match" if valid else "not one clean object")
        lines.append(f"[{i}] {prompt!r}: {verdict} ({', '.join(parts)}{extra})")
    return lines


# ----------------------------------------------------------------------------- subcommands

def demo(args) -> int:
    from minivid.viz import save_video

    prompt = args.prompt or DEFAULT_PROMPT
    ch, mod = _video_pipeline()
    if mod is None:
        return _data_demo(args, prompt)
    print(f"minivid demo: text-to-video with the chapter {ch[2:]} model ({args.preset} preset)")
    x = mod.cli_generate([prompt] * 4, preset=args.preset, seed=args.seed, steps=50, guidance=None, frames=None)
    out = save_video(x, args.out)
    print(f"wrote {out} (4 samples for {prompt!r})")
    print("\n".join(_judge_report(x, [prompt] * 4)))
    return 0


def _data_demo(args, prompt: str) -> int:
    """Before chapter 03 lands: render Shapes World clips for the prompt and judge them."""
    from minivid.data import parse_caption
    from minivid.viz import save_video

    print("minivid demo: no text-to-video model exists yet (chapter 03 builds the first one).\n"
          "Meanwhile this demo renders Shapes World clips that match the prompt, and asks the judge\n"
          "to read them back - the same judge that will score the generated videos.")
    labels = parse_caption(prompt)
    x = _render_matching(labels, n=4, size=32, frames=16, seed=args.seed)
    out = save_video(x, args.out)
    print(f"wrote {out} (4 rendered clips for {prompt!r})")
    print("\n".join(_judge_report(x, [prompt] * 4)))
    return 0


def _render_matching(labels: dict, n: int, size: int, frames: int, seed: int) -> torch.Tensor:
    """n Shapes World clips whose attributes match `labels` (-1 = any), by rejection sampling."""
    from minivid.data import WorldConfig, render, sample_params

    world = WorldConfig(size=size, frames=frames)
    g = torch.Generator().manual_seed(seed)
    keep = {k: v for k, v in labels.items() if v >= 0 and k in ("color", "shape", "size", "direction", "speed")}
    for split in ("train", "heldout"):        # held-out combinations live only in their own split
        p = sample_params(8192, split, "video_text", world, generator=g)
        ok = torch.ones(8192, dtype=torch.bool)
        for k, v in keep.items():
            ok &= p[k] == v
        idx = ok.nonzero().flatten()[:n]
        if len(idx) == n:
            sel = {k: (v[idx] if torch.is_tensor(v) else v) for k, v in p.items()}
            return render(sel, world, frames=frames)
    raise SystemExit(f"could not find {n} clips matching {keep}")


def generate(args) -> int:
    from minivid.viz import save_video

    mod = _pipeline(args.model)
    if not hasattr(mod, "cli_generate"):
        raise SystemExit(f"chapter {args.model} has no text-to-video generator; try --model ch03")
    x = mod.cli_generate([args.prompt], preset=args.preset, seed=args.seed, steps=args.steps,
                         guidance=args.guidance, frames=args.frames)
    out = save_video(x, args.out)
    print(f"wrote {out}")
    print("\n".join(_judge_report(x, [args.prompt])))
    return 0


def train(args) -> int:
    mod = _pipeline(args.chapter)
    if not hasattr(mod, "cli_train"):
        raise SystemExit(f"chapter {args.chapter} has no command-line training recipe")
    path = mod.cli_train(preset=args.preset, seed=args.seed, steps=args.steps)
    print(f"model saved to {path}")
    return 0


def eval(args) -> int:  # noqa: A001 - the subcommand's name
    from minivid.data import parse_caption
    from minivid.viz import read_video

    try:
        parse_caption(args.prompt)
    except ValueError as e:
        raise SystemExit(f"eval: cannot read the prompt: {e}") from None
    x = read_video(args.file)[None]
    side = x.shape[-1]
    if x.shape[-2] != side or side > 64:
        raise SystemExit(f"eval: {args.file} is {x.shape[-2]}x{side}; the judge reads single clips written at "
                         "scale 1 (8..64 px square), e.g. `save_video(clip, path, scale=1)`")
    print("\n".join(_judge_report(x, [args.prompt])))
    return 0


def data(args) -> int:
    from minivid.data import sample_batch
    from minivid.viz import save_video

    g = torch.Generator().manual_seed(args.seed)
    b = sample_batch(args.n, kind=args.kind, split=args.split, size=args.size, frames=args.frames, generator=g)
    out = save_video(b["x"], args.out)
    print(f"wrote {out}: {args.n} {args.kind} samples from the {args.split} split")
    for i, c in enumerate(b["captions"]):
        print(f"  [{i}] {c or '(unlabelled)'}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use `python -m minivid ...`")
