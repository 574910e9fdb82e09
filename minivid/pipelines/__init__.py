"""Per-chapter recipes: presets, build/train/load/sample, shared by notebooks, benches and the CLI.

`minivid.pipelines.chNN` holds chapter NN's recipes. A module that the command line can drive
exposes `cli_train(preset, seed, steps)` and, for text-to-video chapters,
`cli_generate(prompts, *, preset, seed, steps, guidance, frames)` (see minivid.cli_pipelines).
"""


def pick_preset(name, presets: dict, chapter: str):
    """A chapter's preset by name (a preset object passes through); a clear error for unknown names."""
    if not isinstance(name, str):
        return name
    if name not in presets:
        raise ValueError(f"unknown {chapter} preset {name!r}; choose one of {sorted(presets)}")
    return presets[name]
