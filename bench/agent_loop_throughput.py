"""Episodes runner throughput against the scripted loopback server with a fixed latency per call.

Every LLM call of an episode (planner, caller, summarizer on `/completions`, the simulated tool
on chat) waits `--latency` L seconds at the server; with N episodes in flight the ideal wall time
is calls x L / N. The script reports wall / ideal per N (target: within 1.3). The server runs in
its own process so that it does not share our GIL; the judge is off (it adds one call per episode
and changes nothing about the loop).
    python bench/agent_loop_throughput.py [--episodes 48] [--latency 0.1] [--in-flight 1 4 16]
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
os.environ.setdefault("OPENAI_API_KEY", "sk-bench")


from evaluation.agent.loop import task_of  # noqa: E402
from evaluation.episodes.runner import EpisodeRunner  # noqa: E402
from evaluation.episodes.executors import executor_factory  # noqa: E402
from evaluation.agent.members import Decoding, EndpointMember  # noqa: E402
from evaluation.agent.team import Team  # noqa: E402
from prompting.prompt_template import PromptTemplate  # noqa: E402
from trajectories.sources import load_trajectories  # noqa: E402

DATA = REPO / "data/toolalpaca/eval_simulated.json"
SERVER = '''
import json, sys
sys.path[:0] = [{repo!r}, {tests!r}]
from fakes.agent_script import rules
from fakes.openai_server import FakeOpenAIServer
golden = json.load(open({golden!r}))
server = FakeOpenAIServer(rules({{k: [tuple(c) for c in v] for k, v in golden.items()}}),
                          latency={latency}, lifetime_s=1200, max_requests=10**7).start()
print(server.base_url, flush=True)
server.thread.join()
'''


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--episodes", type=int, default=48)
    ap.add_argument("--latency", type=float, default=0.1)
    ap.add_argument("--in-flight", type=int, nargs="+", default=[1, 4, 16])
    args = ap.parse_args()
    from omegaconf import OmegaConf
    refs = load_trajectories(DATA, format="toolalpaca_eval").trajectories[:args.episodes]
    golden = {t["instruction"]: [[c["name"], c["arguments"]] for c in t["turns"] if c["role"] == "caller"]
              for t in refs}
    tmp = Path(tempfile.mkdtemp(prefix="agent-bench-"))
    (tmp / "golden.json").write_text(json.dumps(golden))
    code = SERVER.format(repo=str(REPO), tests=str(REPO / "tests"), golden=str(tmp / "golden.json"),
                         latency=args.latency)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    url = proc.stdout.readline().strip()
    ENDPOINT = OmegaConf.to_container(OmegaConf.load(REPO / "recipes/eval/endpoint.yaml"))["endpoint"]
    decoding = Decoding({r: 256 for r in ("planner", "caller", "summarizer")}, 1, False, 1.0, 1.0, 0)
    template = PromptTemplate(OmegaConf.to_container(OmegaConf.load(REPO / "recipes/template/glpft.yaml"))["template"])
    rows = []
    try:
        for n in args.in_flight:
            llm = {**ENDPOINT, "base_url": url, "max_retries": 0, "concurrency": max(n, 1)}
            roles = [EndpointMember({**llm, "model": r}, role=r, decoding=decoding, eos_text="</s>")
                     for r in ("planner", "caller", "summarizer")]
            cfg = {"type": "simulated", "pseudo_tools": {"getDetails": "none"},
                   "simulator": {"llm": {"base_url": url, "model": "fake", "concurrency": max(n, 1),
                                         "max_retries": 0},
                                 "executor": {"retries": 0}}}
            make, _ = executor_factory(cfg, DATA, {t["id"]: t for t in refs})
            runner = EpisodeRunner(Team(template, *roles), make, max_steps=8, in_flight=n, down_after=3,
                                   progress=False)
            t0 = time.perf_counter()
            records = runner.run([task_of(t) for t in refs], tmp / f"episodes-{n}.jsonl")
            wall = time.perf_counter() - t0
            calls = runner.stats["llm_calls"]
            ideal = calls * args.latency / n
            rows.append({"in_flight": n, "episodes": len(records), "llm_calls": calls,
                         "wall_s": round(wall, 2), "ideal_s": round(ideal, 2),
                         "ratio": round(wall / ideal, 3), "episodes_per_s": round(len(records) / wall, 2),
                         "llm_calls_per_s": round(calls / wall, 1)})
            print(json.dumps(rows[-1]), flush=True)
    finally:
        proc.terminate()
        proc.wait()
    print("| in flight | episodes | LLM calls | wall s | calls x L / N | ratio | episodes/s | calls/s |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['in_flight']} | {r['episodes']} | {r['llm_calls']} | {r['wall_s']} | {r['ideal_s']} "
              f"| {r['ratio']} | {r['episodes_per_s']} | {r['llm_calls_per_s']} |")


if __name__ == "__main__":
    main()
