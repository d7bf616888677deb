"""Run a sweep: train and evaluate a list of recipe variants (or a variants x overrides grid), one
after the other, each in its own run directory and W&B group, then write the report.

    python sweep.py recipes/sweeps/quickstart_ablations.yaml
    python sweep.py recipes/sweeps/quickstart_ablations.yaml stages.backbone.trainer.max_epochs=2
    python sweep.py recipes/sweeps/quickstart_ablations.yaml --only alpha_umi --only single_llm
    python sweep.py recipes/sweeps/quickstart_data_fraction.yaml sweep.out=/tmp/frac sweep.evaluate.limit=20
    python sweep.py recipes/sweeps/quickstart_ablations.yaml --report-only
    python sweep.py recipes/sweeps/quickstart_ablations.yaml --list

Words after the spec: `sweep.KEY=VALUE` changes the spec (sweep.out, sweep.evaluate.limit, ...),
any other `KEY=VALUE` is a recipe override applied to every variant (after the spec's own), and a
YAML file is a recipe overlay merged into every variant. Rerunning skips finished stages and
up-to-date evaluations; OUT/sweep.json records each variant's run directory, overrides and status.
The spec format is documented in pipeline/sweeps/__init__.py.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

from core.errors import run_cli


def main(argv=None) -> int:
    return run_cli("sweep.py", _main, argv)


def _main(argv) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("spec", help="sweep spec YAML (recipes/sweeps/*.yaml)")
    parser.add_argument("args", nargs="*", help="sweep.KEY=VALUE, recipe KEY=VALUE overrides, recipe overlays")
    parser.add_argument("--only", action="append", metavar="NAME",
                        help="run only this variant (a variant name, a full grid-point name or a glob; "
                             "repeatable); the report still covers every variant")
    parser.add_argument("--report-only", action="store_true", help="train and evaluate nothing; write the report")
    parser.add_argument("--list", action="store_true", help="list the variants, their run directories and status")
    parser.add_argument("--fail-fast", action="store_true", help="stop at the first variant that fails")
    parser.add_argument("--no-wandb", action="store_true", help="no W&B run for the report")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error (or ALPHA_UMI_DEBUG=1)")
    ns = parser.parse_intermixed_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from pipeline.sweeps import list_variants, load_sweep, run_sweep, split_args
    spec_ov, recipe_ov, files = split_args(ns.args)
    sweep = load_sweep(ns.spec, spec_ov + recipe_ov, files)
    if ns.no_wandb:
        sweep.report["wandb"]["enabled"] = False
    if ns.list:
        print(list_variants(sweep))
        return 0
    t0 = time.perf_counter()
    rc = run_sweep(sweep, only=ns.only, report_only=ns.report_only, fail_fast=ns.fail_fast,
                   log=lambda m: print(m, flush=True))
    from evaluation.report import gather, seed_summary, seed_table
    from evaluation.report.results_table import results_table
    from evaluation.report.seeds import seed_note
    from evaluation.tables import to_markdown
    from pipeline.sweeps import load_index
    runs = gather([load_index(sweep)["variants"][v.name] for v in sweep.variants])
    print()
    print(results_table([run["row"] for run in runs]), end="")
    seeds = seed_summary(runs, sweep.report.get("reference"))
    if seeds:  # runs that differ only in their seed: mean ± std, differences beyond 2σ marked
        print(f"\n{seed_note(seeds)}\n{to_markdown(seed_table(seeds))}", end="")
    print(f"\n[sweep] {sweep.name}: {len(sweep.variants)} variant(s) in {time.perf_counter() - t0:.1f} s; "
          f"report: {sweep.out / 'report.md'}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
