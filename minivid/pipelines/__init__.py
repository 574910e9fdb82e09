"""Per-chapter recipes: presets, build/train/load/sample, shared by notebooks, benches and the CLI.

`minivid.pipelines.chNN` holds chapter NN's recipes, built on the shared recipe layer
`minivid.pipelines.common` (cache keys, load-or-train, EMA-aware loading, guided sampling, and earlier
chapters' trained models by name: `common.pretrained("ch02.text_encoder", preset)`). A chapter the
command line can drive exposes `CLI = common.ChapterCLI(...)`; the CLI finds chapters by themselves.
"""
