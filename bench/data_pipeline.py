"""Data pipeline benchmark: load + reformat + tokenize the shipped data for each role.

    python bench/data_pipeline.py [--layouts folded per_step] [--repeats 3] [--work-dir DIR]
    python bench/data_pipeline.py --scale 2000 20000 62700 [--roles backbone] [--num-proc 1]

`--scale N ...`: paper-scale preparation. N trajectories are synthesised from the 20 shipped
ToolBench ones (each copy gets a distinct instruction, "... (request i)"), written as one JSON
array (`alpha_umi_chains`), and one role's splits are built from a cold cache in a fresh
subprocess per N; printed: seconds, trajectories/s, trajectories/s per process, peak RSS of the
process (ru_maxrss: it includes the pages of memory-mapped Arrow files the build reads back), its
peak anonymous RSS (RssAnon sampled every 50 ms: the heap, what really grows with a corpus held in
Python objects), the peak RSS of its `num_proc` workers, and the slopes between smallest and
largest N.

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
import threading
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
    from core.run_dir import RunDir
    from core.stage_config import stage_settings
    from pipeline.stage_setup import load_tokenizer
    recipe = recipe or quickstart_recipe(work_dir)
    t = time.perf_counter()
    existed = (RunDir(work_dir).tokenizer / "tokenizer.json").is_file()
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


def synthesise(n: int, out: Path) -> Path:
    """N trajectories from the shipped chains with distinct instructions, written one at a time."""
    import json
    if out.exists():
        return out
    shipped = json.loads((REPO / "data" / "toolbench" / "train_sample_chains.json").read_text())
    tmp = out.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write("[")
        for i in range(n):
            record = json.loads(json.dumps(shipped[i % len(shipped)]))
            user = next(m for m in record["chains"] if m["role"] == "user")
            user["content"] = user["content"].replace("\nBegin!", f" (request {i})\nBegin!")
            fh.write(("," if i else "") + json.dumps(record))
        fh.write("]")
    tmp.rename(out)
    return out


def _status_mb(key: str) -> float:
    with open("/proc/self/status") as fh:
        return next(int(l.split()[1]) / 1024 for l in fh if l.startswith(key + ":"))


def scale_worker(path: str, role: str, layout: str, num_proc: int, work: Path) -> dict:
    """One cold build of one role's splits from `path`; runs in its own process."""
    import resource
    recipe = quickstart_recipe(work, [f"data.sources=[{{path: '{path}', format: alpha_umi_chains}}]",
                                      f"data.num_proc={num_proc}"])
    tok, _ = prepare_tokenizer(work / "tok", quickstart_recipe(work / "tok"))
    cache = work / "scale-cache"
    shutil.rmtree(cache, ignore_errors=True)
    dm = datamodule(recipe, role, layout, tok, cache)
    rss0 = _status_mb("VmRSS")
    peak_anon, done = [0.0], threading.Event()

    def sample():  # anonymous memory (the heap), without the memory-mapped Arrow pages
        while not done.wait(0.05):
            peak_anon[0] = max(peak_anon[0], _status_mb("RssAnon"))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t = time.perf_counter()
    splits = dm.build_splits()
    dt = time.perf_counter() - t
    done.set()
    sampler.join()
    n = dm.stats["train"]["trajectories"] + dm.stats["val"]["trajectories"]
    out = {"seconds": dt, "trajectories": n, "rows": sum(len(s) for s in splits.values()),
           "rss_before_mb": rss0, "peak_anon_mb": peak_anon[0], "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
           "workers_peak_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}
    shutil.rmtree(cache, ignore_errors=True)
    return out


def run_scale(args, work: Path) -> int:
    import json
    import subprocess
    rows = []
    prepare_tokenizer(work / "tok", quickstart_recipe(work / "tok"))
    for n in args.scale:
        path = synthesise(n, work / f"synthetic-{n}.json")
        for role in args.roles:
            cmd = [sys.executable, __file__, "--scale-worker", str(path), "--roles", role,
                   "--layouts", args.layouts[0], "--num-proc", str(args.num_proc),
                   "--work-dir", str(work)]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
            if proc.returncode or not lines:
                sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-3000:])
                return 1
            r = json.loads(lines[-1][7:])
            rows.append((n, role, path.stat().st_size / 2**20, r))
            print(f"N={n} {role}: {r}", file=sys.stderr, flush=True)
    max_length = quickstart_recipe(work / "tok")["data"]["max_length"]
    print(f"\nPaper-scale preparation (layout {args.layouts[0]}, quickstart template and BPE, "
          f"max_length {max_length}, num_proc {args.num_proc}; one cold build per row, fresh process)\n")
    print("| trajectories | JSON MB | role | rows | seconds | traj/s | traj/s per process "
          "| RSS before build MB | peak RSS MB | peak anon RSS MB | workers' peak RSS MB |")
    print("|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n, role, mb, r in rows:
        print(f"| {n:,} | {mb:,.0f} | {role} | {r['rows']:,} | {r['seconds']:.1f} | "
              f"{n / r['seconds']:,.0f} | {n / r['seconds'] / max(1, args.num_proc):,.0f} | "
              f"{r['rss_before_mb']:,.0f} | {r['peak_rss_mb']:,.0f} | {r['peak_anon_mb']:,.0f} | "
              f"{r['workers_peak_rss_mb']:,.0f} |")
    for role in args.roles:
        pts = [(n, r["peak_rss_mb"], r["peak_anon_mb"]) for n, rl, _, r in rows if rl == role]
        if len(pts) > 1:
            (n0, m0, a0), (n1, m1, a1) = pts[0], pts[-1]
            print(f"\n{role}: slope per 1,000 trajectories ({n0:,} -> {n1:,}): peak RSS "
                  f"{(m1 - m0) / (n1 - n0) * 1000:+.1f} MB, peak anonymous RSS "
                  f"{(a1 - a0) / (n1 - n0) * 1000:+.1f} MB")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layouts", nargs="+", default=["folded", "per_step"])
    ap.add_argument("--roles", nargs="+", default=list(ROLES))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--work-dir", default=None, help="keeps the tokenizer between runs (default: a temp dir)")
    ap.add_argument("--scale", type=int, nargs="+", default=None,
                    help="synthesise this many trajectories (each N) and time one cold build")
    ap.add_argument("--num-proc", type=int, default=1, help="--scale: data.num_proc")
    ap.add_argument("--scale-worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.scale_worker:
        import json
        res = scale_worker(args.scale_worker, args.roles[0], args.layouts[0], args.num_proc,
                           Path(args.work_dir))
        print("RESULT " + json.dumps(res), flush=True)
        return 0

    import datasets
    datasets.disable_progress_bars()
    work = Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix="bench_data_"))
    work.mkdir(parents=True, exist_ok=True)
    if args.scale:
        args.roles = args.roles if args.roles != list(ROLES) else ["backbone"]
        rc = run_scale(args, work)
        if not args.work_dir:
            shutil.rmtree(work, ignore_errors=True)
        return rc
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
