"""Per-chapter recipes: presets, build/train/load/sample, shared by notebooks, benches and the CLI.

`minivid.pipelines.chNN` holds chapter NN's recipes. A module that the command line can drive
exposes `cli_train(preset, seed, steps)` and, for text-to-video chapters,
`cli_generate(prompts, *, preset, seed, steps, guidance, frames)` (see minivid.cli_pipelines).
"""
