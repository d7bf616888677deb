"""Data pipeline benchmark: load + reformat + tokenize the shipped data for each role.

    python bench/data_pipeline.py [--layouts folded per_step] [--repeats 3] [--work-dir DIR]

For each role (backbone, planner, caller, summarizer) and layout, times
`ToolUseDataModule.build_splits()` (sources -> canonical trajectories -> role examples -> token
ids with span labels -> `datasets` cache on disk) on the quickstart data settings
(data/toolbench/train_sample_chains.json + data/toolalpaca/eval_simulated.json):
  cold   - an empty cache directory: parse, reformat, tokenize, write the Arrow cache
  cached - a second run on the same cache directory: hash the sources, read the cache
and prints examples per second (tokenized examples of both splits / seconds, median over
`--repeats` fresh DataModules) and the train split's token counts, folded vs per_step.
The BPE tokenizer (trained once on the corpus, as the quickstart does) is not timed here.
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from core.vocabulary import IGNORE_INDEX, TRAINED_ROLES as ROLES  # noqa: E402 (after the path)


def quickstart_recipe(work_dir: Path, overrides=()) -> dict:
    from core.recipe import load_recipe
    return load_recipe([REPO / "recipes" / "quickstart.yaml"],
                       [f"run.dir={work_dir}", "logger.wandb.enabled=false", *overrides])


def prepare_tokenizer(work_dir: Path, recipe: dict | None = None):
    """The quickstart tokenizer (BPE trained on the corpus) under `work_dir/tokenizer`, reused
    when already there. Returns (tokenizer, seconds spent training it, 0 if reused)."""
    from core.stage_config import stage_settings
    from pipeline.stage_setup import load_tokenizer
    recipe = recipe or quickstart_recipe(work_dir)
    t = time.perf_counter()
    existed = (work_dir / "tokenizer" / "tokenizer.json").is_file()
    tok = load_tokenizer(recipe, stage_settings(recipe, "backbone"), None)
    return tok, 0.0 if existed else time.perf_counter() - t


def datamodule(recipe: dict, role: str, layout: str, tokenizer, cache_dir: Path):
    from core.stage_config import stage_settings
    from pipeline.stage_setup import build_datamodule
    settings = stage_settings(recipe, role)
    settings["data"] = {**settings["data"], "layout": layout, "cache_dir": str(cache_dir)}
    return build_datamodule(recipe, settings, tokenizer)


def time_build(recipe, role, layout, tokenizer, cache_dir: Path) -> tuple[float, dict]:
    dm = datamodule(recipe, role, layout, tokenizer, cache_dir)
    t = time.perf_counter()
    splits = dm.build_splits()
    return time.perf_counter() - t, {"splits": splits, "stats": dm.stats}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layouts", nargs="+", default=["folded", "per_step"])
    ap.add_argument("--roles", nargs="+", default=list(ROLES))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--work-dir", default=None, help="keeps the tokenizer between runs (default: a temp dir)")
    args = ap.parse_args(argv)

    import datasets
    datasets.disable_progress_bars()
    work = Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix="bench_data_"))
    work.mkdir(parents=True, exist_ok=True)
    recipe = quickstart_recipe(work)
    tok, tok_s = prepare_tokenizer(work, recipe)
    # Warm-up (imports, first Arrow write) so the first timed row is not penalised.
    time_build(recipe, "backbone", args.layouts[0], tok, work / "warmup")

    rows, counts = [], {}
    for role in args.roles:
        for layout in args.layouts:
            cold, cached = [], []
            for r in range(args.repeats):
                cache = work / f"cache-{role}-{layout}-{r}"
                shutil.rmtree(cache, ignore_errors=True)
                dt, out = time_build(recipe, role, layout, tok, cache)
                cold.append(dt)
                dt2, out2 = time_build(recipe, role, layout, tok, cache)
                cached.append(dt2)
                shutil.rmtree(cache, ignore_errors=True)
            splits, stats = out["splits"], out["stats"]
            n = sum(len(s) for s in splits.values())
            train = splits["train"]
            tokens = sum(len(x) for x in train["input_ids"]) if len(train) else 0
            sup = sum(sum(1 for l in x if l != IGNORE_INDEX) for x in train["labels"]) if len(train) else 0
            counts[role, layout] = (len(train), tokens, sup)
            rows.append((role, layout, stats["train"]["trajectories"] + stats["val"]["trajectories"], n,
                         statistics.median(cold), statistics.median(cached)))

    print(f"\nData pipeline (quickstart sources, max_length={recipe['data']['max_length']}, "
          f"tokenizer: BPE vocab {len(tok)}{f', trained in {tok_s:.1f}s' if tok_s else ', reused'}; "
          f"median of {args.repeats})\n")
    print("| role | layout | trajectories | examples | cold s | cold ex/s | cached s | cached ex/s | cached speed-up |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for role, layout, ex, n, cold, cached in rows:
        print(f"| {role} | {layout} | {ex} | {n} | {cold:.3f} | {n / cold:,.0f} | {cached:.3f} | "
              f"{n / cached:,.0f} | {cold / cached:.1f}x |")
    if {"folded", "per_step"} <= set(args.layouts):
        print("\nTrain-split token counts, folded vs per_step\n")
        print("| role | folded examples | folded tokens | folded supervised | per_step examples | per_step tokens "
              "| per_step supervised | per_step / folded tokens |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
        for role in args.roles:
            f, p = counts[role, "folded"], counts[role, "per_step"]
            ratio = p[1] / f[1] if f[1] else float("nan")
            print(f"| {role} | {f[0]} | {f[1]:,} | {f[2]:,} | {p[0]} | {p[1]:,} | {p[2]:,} | {ratio:.2f}x |")
    if not args.work_dir:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
