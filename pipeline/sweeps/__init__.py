"""Sweeps: train and evaluate a list of recipes (or a recipe x overrides grid), then report.

A sweep spec is YAML with one top-level key, `sweep` (schema: pipeline/sweeps/sweep_schema.json,
checked with the recipes' validator, so an error names the key path and the file):

    sweep:
      name: quickstart-ablations            # required; also names the runs (run.name = NAME/VARIANT)
      description: ...                      # optional, shown in the report
      base: [recipes/quickstart.yaml]       # required: recipe file(s) every variant starts from
      overrides: [key=value, ...]           # applied to every variant (after its recipes)
      variants:                             # optional (default: one variant, "base")
        alpha_umi: {recipes: [recipes/ablations/alpha_umi.yaml], overrides: [], description: ...,
                    evaluate: {...}}        # all keys optional; evaluate merges onto the sweep's
        single_llm: {recipes: [recipes/ablations/single_llm.yaml]}
      grid: {data.data_fraction: [0.25, 0.5, 1.0]}   # optional: cross product with the variants
      evaluate: {test_sets: {out-of-domain: data/toolbench/dev_conversations.json},
                 limit: null, batch_size: 8, max_new_tokens: null}  # the recipe's evaluate keys;
                                            # (merged over each recipe's own `evaluate:` node)
      out: runs/sweeps/${sweep.name}        # sweep.json, report.md / report.html, plots/, wandb/
      runs_dir: ${sweep.out}/runs           # each variant's run.dir is RUNS_DIR/VARIANT; null: the
                                            # recipe's own run.dir (runs/${run.name})
      report: {enabled: true, title: null, wandb: {enabled: true, project: null, entity: null,
               mode: offline}}

Each variant (and grid point) is its own run directory and W&B group: its recipe is the base
files, the variant's recipes, extra files from the command line, then the sweep's overrides, the
variant's, the grid point's and the command line's, then `run.name` / `run.group` (NAME/VARIANT)
and `run.dir`. A grid point's name is VARIANT-KEY_VALUE (KEY: the last part of the dotted key).

Evaluation: the recipe's own `evaluate:` node, then the sweep's `evaluate:`, then the variant's
(a layer that is given turns evaluation on unless it says `enabled: false`) become the variant
recipe's `evaluate` node, which the stage runner runs after training (evaluate_run writes
each test set's metrics into the run's eval folder).

Every variant's recipe is composed and validated before anything trains. Variants run one after
the other; finished stages are skipped, and so is an evaluation whose metrics finished after the
stages did (the times core.run_dir.RunDir records) and were made with the same test sets, limit,
decoding length and mode (otherwise the sweep evaluates again, without retraining). `OUT/sweep.json` (variant -> run dir, overrides, status, timings, metrics) is
rewritten atomically after each step, so an interrupted sweep resumes where it stopped. A variant
that fails is recorded as failed and the sweep goes on (unless fail_fast).

Rooms: spec (schema, expansion, composition), index (sweep.json, --only), runner (train, evaluate,
skip, report).
"""
from .index import enabled_stages, list_variants, load_index, refresh_index, select
from .runner import eval_is_current, recipe_drift, run_sweep, run_variant, write_sweep_report
from .spec import Sweep, SweepError, Variant, load_sweep, split_args

__all__ = ["Sweep", "SweepError", "Variant", "enabled_stages", "eval_is_current", "list_variants",
           "load_index", "load_sweep", "recipe_drift", "refresh_index", "run_sweep", "run_variant",
           "select", "split_args", "write_sweep_report"]
