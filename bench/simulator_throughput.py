"""Simulator throughput against the scripted loopback server with an added latency per call.

With concurrency N the wall time of a run's instances ("measured") should stay within
--max-ratio (1.2) of the ideal calls x latency / N; "with_setup" adds loading the specs and the
client. The server runs in its own process so that it does not share our GIL. Each call also
costs ~1.5-2 ms of client CPU (the openai client, parsing, validation), and one event loop pays
that serially: at N=16 and 50 ms that is half the per-call budget (50/16 ms), so a loaded machine
shows it; a longer --latency measures the concurrency alone.
    python bench/simulator_throughput.py [--instances 32] [--latency 0.05] [--concurrency 1 4 16]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from fakes.openai_server import simulator_rules  # noqa: E402

from simulators import build_corpus  # noqa: E402


def start_server(rules_file: Path, latency: float) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, str(REPO / "tests" / "fakes" / "openai_server.py"),
                             "--rules", str(rules_file), "--latency", str(latency), "--lifetime", "600"],
                            stdout=subprocess.PIPE, text=True)
    return proc, proc.stdout.readline().strip()


def run_once(base_url: str, instances: int, concurrency: int, out_dir: Path) -> tuple[float, float, int]:
    """(seconds working on the instances, seconds in all, LLM calls)."""
    settings = {"sources": [{"type": "toolalpaca", "path": "data/toolalpaca/eval_simulated.json",
                             "names": ["Axolotl"]}],
                "instructions_per_api": instances,
                "llm": {"base_url": base_url, "model": "fake", "concurrency": concurrency},
                "output": {"progress": False, "stats_every": 1000}}
    start = time.perf_counter()
    corpus = build_corpus(settings, out_dir)
    total = time.perf_counter() - start
    stats = json.loads((corpus.parent / "stats.json").read_text())
    assert stats["kept"] == instances, stats
    return stats["work_seconds_this_run"], total, stats["llm_this_run"]["calls"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--instances", type=int, default=32)
    ap.add_argument("--latency", type=float, default=0.05)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--max-ratio", type=float, default=1.2)
    ap.add_argument("--repeat", type=int, default=3, help="runs per N; the fastest counts (timeit's rule)")
    args = ap.parse_args()
    os.environ.setdefault("OPENAI_API_KEY", "sk-bench-loopback")
    with tempfile.TemporaryDirectory() as tmp:
        rules = Path(tmp) / "rules.json"
        rules.write_text(json.dumps(simulator_rules()))
        proc, base_url = start_server(rules, args.latency)
        try:
            rows = []
            run_once(base_url, 1, 1, Path(tmp) / "warmup")
            for n in args.concurrency:
                wall, total, calls = min(run_once(base_url, args.instances, n, Path(tmp) / f"n{n}-{k}")
                                         for k in range(args.repeat))
                ideal = calls * args.latency / n
                rows.append((calls, args.latency, n, ideal, wall, wall / ideal, total))
        finally:
            proc.terminate()
            proc.wait()
    print(f"{'calls':>6} {'latency_s':>9} {'N':>3} {'ideal_s':>8} {'measured_s':>10} {'ratio':>6} {'with_setup_s':>12}")
    for calls, lat, n, ideal, wall, ratio, total in rows:
        print(f"{calls:>6} {lat:>9.3f} {n:>3} {ideal:>8.3f} {wall:>10.3f} {ratio:>6.3f} {total:>12.3f}")
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"machine: {os.cpu_count()} CPUs, load average {load} (other processes compete for the CPU)")
    worst = max(r[5] for r in rows)
    print(f"worst ratio {worst:.3f} (limit {args.max_ratio})")
    return 0 if worst <= args.max_ratio else 1


if __name__ == "__main__":
    sys.exit(main())
