"""`evaluate.py episodes` on ToolAlpaca's simulated test set with the scripted loopback server
playing agent (its /completions), tool executor and judge (chat): a record per instance, known
Proc./Ans. from a known script, crashes and timeouts counted, resume after kill -9."""
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from fakes.agent_script import JUDGE, rules
from fakes.openai_server import FakeOpenAIServer

import evaluate
from trajectories.sources import load_trajectories

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "data/toolalpaca/eval_simulated.json"
CONFIG = REPO / "recipes/eval/toolalpaca_simulated.yaml"
TEMPLATE = REPO / "recipes/template/glpft.yaml"
SECRET = "sk-test-do-not-leak-0123456789"


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)


@pytest.fixture(scope="module")
def references():
    return load_trajectories(DATA, format="toolalpaca_eval").trajectories


@pytest.fixture(scope="module")
def golden(references):
    out = {}
    for t in references:
        assert t["instruction"] not in out  # the script finds a task by its instruction
        out[t["instruction"]] = [(c["name"], c["arguments"]) for c in t["turns"] if c["role"] == "caller"]
    return out


def args_for(url, out, *over, in_flight=16):
    return ["episodes", str(CONFIG), f"in_flight={in_flight}", "progress=false",
            f"executor.simulator.llm.base_url={url}", "executor.simulator.executor.retries=0",
            "executor.simulator.llm.max_retries=0", f"judge.llm.base_url={url}",
            "judge.llm.max_retries=0", "endpoint.max_retries=0", "endpoint.timeout_s=2",
            *over, "--run", str(out / "run"), "--recipe", str(TEMPLATE),
            "--endpoint", f"all={url}", "--max-new-tokens", "128", "--out", str(out / "episodes_out")]


def read(out):
    lines = (out / "episodes_out" / "episodes.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def test_gold_script_scores_100_and_perturbed_calls_score_lower(tmp_path, references, golden, capsys):
    # the run trained on this very test set (the ToolBench sample's caller data): said, and recorded
    from core.recipe import load_recipe, to_yaml
    from core.run_dir import RunDir
    run = RunDir(tmp_path / "gold" / "run")
    run.path.mkdir(parents=True)
    run.save_recipe(to_yaml(load_recipe([REPO / "recipes/toolbench_sample.yaml"])))
    with FakeOpenAIServer(rules(golden)) as server:
        assert evaluate.main(args_for(server.base_url, tmp_path / "gold")) == 0
        served = len(server.requests)
    recs = read(tmp_path / "gold")
    assert sorted(r["id"] for r in recs) == sorted(t["id"] for t in references)
    assert {r["termination"] for r in recs} == {"conclusion"}
    metrics = json.loads((tmp_path / "gold/episodes_out/metrics.json").read_text())
    assert (metrics["proc"], metrics["ans"], metrics["both"]) == (100.0, 100.0, 100.0)
    summary = json.loads((tmp_path / "gold/episodes_out/summary.json").read_text())
    assert summary["judge"]["per_api"]["Axolotl"]["proc"] == 100.0
    assert summary["training_overlap"] == ["data.sources[2]: data/toolalpaca/eval_simulated.json"]
    assert "is also training data of this run" in capsys.readouterr().err
    # every request the server saw is counted: agent roles, the simulated tools and the judge
    n_calls = sum(len(c) for c in golden.values())
    assert summary["run"]["llm_calls"] == served > 2 * n_calls + 3 * len(golden)
    assert summary["run"]["episodes_per_s"] > 0 and summary["run"]["llm_calls_per_s"] > 0
    assert SECRET not in (tmp_path / "gold/episodes_out/episodes.jsonl").read_text()

    ordered = sorted(golden)
    wrong = set(ordered[0::5])         # 20 with a wrong argument in their calls: process and answer no
    sorry = set(ordered[1::10])        # 10 with a non-answer: answer no
    with FakeOpenAIServer(rules(golden, wrong_calls=wrong.__contains__,
                                wrong_answer=sorry.__contains__)) as server:
        assert evaluate.main(args_for(server.base_url, tmp_path / "wrong")) == 0
    metrics = json.loads((tmp_path / "wrong/episodes_out/metrics.json").read_text())
    assert (metrics["proc"], metrics["ans"], metrics["both"]) == (80.0, 70.0, 70.0)


def test_crash_timeout_and_unparseable_verdicts_are_counted(tmp_path, references, golden):
    crash, slow, vague, never = (references[i]["instruction"] for i in (3, 17, 40, 41))
    extra = [{"match": [f"Task: {crash}", "Planner:"], "status": 500},
             {"match": f"Task: {slow}", "delay": 3.0, "reply": "late"},
             {"match": [JUDGE, vague], "reply": "Looks good to me.", "times": 1},
             {"match": [JUDGE, never], "reply": "Looks good to me."}]
    with FakeOpenAIServer(rules(golden, extra=extra)) as server:
        assert evaluate.main(args_for(server.base_url, tmp_path)) == 0
    recs = {r["id"]: r for r in read(tmp_path)}
    assert len(recs) == len(references)
    ids = {t["instruction"]: t["id"] for t in references}
    assert recs[ids[crash]]["termination"] == "error" and "server_errors" in recs[ids[crash]]["error"]
    assert recs[ids[slow]]["termination"] == "error" and "timeouts" in recs[ids[slow]]["error"]
    assert recs[ids[vague]]["verdict"]["asks"] == 2 and recs[ids[vague]]["verdict"]["process"] == "yes"
    assert recs[ids[never]]["verdict"]["process"] == "unparseable"
    summary = json.loads((tmp_path / "episodes_out/summary.json").read_text())
    assert summary["errors"] == 2 and summary["terminations"]["conclusion"] == len(references) - 2
    assert summary["judge"]["verdicts"]["process"] == {"not_judged": 2, "unparseable": 1, "yes": 97}
    assert summary["judge"]["proc"] == 97.0


def test_rerun_after_kill_9_has_each_id_once(tmp_path, references, golden):
    with FakeOpenAIServer(rules(golden), latency=0.02) as server:
        cmd = [sys.executable, str(REPO / "evaluate.py"), *args_for(server.base_url, tmp_path, in_flight=4)]
        env = {**os.environ, "PYTHONPATH": f"{REPO}:{REPO / 'tests'}"}
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        out = tmp_path / "episodes_out" / "episodes.jsonl"
        deadline = time.time() + 60
        while time.time() < deadline and (not out.exists() or out.read_text().count("\n") < 10):
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        first = out.read_text().count("\n")
        assert 10 <= first < len(references)
        with open(out, "a") as fh:
            fh.write('{"id": "torn')  # as if killed mid-line
        assert evaluate.main(args_for(server.base_url, tmp_path)) == 0
    ids = Counter(r["id"] for r in read(tmp_path))
    assert set(ids) == {t["id"] for t in references} and set(ids.values()) == {1}


class BatchingMember:
    """A scripted local-model stand-in: one batch at a time (serial), records batch sizes."""
    serial = True

    def __init__(self, role, reply):
        self.role, self.reply, self.batches = role, reply, []

    def complete(self, prompts, n_header=1):
        self.batches.append(len(prompts))
        time.sleep(0.05)
        return [self.reply(p) for p in prompts]


def test_local_members_batch_across_episodes(tmp_path):
    from evaluation.agent.loop import task_of
    from evaluation.episodes.runner import EpisodeRunner
    from evaluation.episodes.executors import ReplayExecutor
    from evaluation.agent.team import Team
    from prompting.prompt_template import PromptTemplate
    from omegaconf import OmegaConf
    chains = load_trajectories(REPO / "data/toolbench/train_sample_chains.json",
                               format="alpha_umi_chains").trajectories[:12]
    tpl = PromptTemplate(OmegaConf.to_container(OmegaConf.load(TEMPLATE))["template"])
    text = lambda segs: "".join(s.text for s in segs if isinstance(s.text, str))  # noqa: E731
    roles = [BatchingMember("planner", lambda p: "Done.\nNext: conclusion." if "Observation: " in text(p)
                            else "Look.\nNext: caller."),
             BatchingMember("caller", lambda p: f"Action: {text(p).split('- ', 1)[1].split(':', 1)[0]}\nAction Input: {{}}"),
             BatchingMember("summarizer", lambda p: "All done.")]
    runner = EpisodeRunner(Team(tpl, *roles), lambda t: ReplayExecutor(t), max_steps=4, in_flight=6, down_after=3,
                           progress=False)
    records = runner.run([task_of(c) for c in chains], tmp_path / "episodes.jsonl")
    assert len(records) == 12 and {r["termination"] for r in records} == {"conclusion"}
    planner = roles[0]
    assert sum(planner.batches) == 24 and max(planner.batches) == 6  # many episodes per generate
    assert len(planner.batches) < 12


def test_episodes_with_local_exports(tmp_path):
    from test_static_inference import build_tiny_run
    run = build_tiny_run(tmp_path)
    rc = evaluate.main(["episodes", str(REPO / "recipes/eval/toolbench_pass_rate.yaml"), "limit=4",
                        "max_steps=2", "in_flight=4", "judge.enabled=false", "progress=false",
                        "--run", str(run), "--max-new-tokens", "8", "--device", "cpu",
                        "--out", str(tmp_path / "episodes_out")])
    assert rc == 0
    recs = read(tmp_path)
    assert len(recs) == 4 and all(r["termination"] != "error" for r in recs)
    metrics = json.loads((tmp_path / "episodes_out/metrics.json").read_text())
    assert metrics == {"episodes": 4, "concluded": metrics["concluded"], "errors": 0}


def test_unreadable_run_recipe_is_named_not_a_traceback(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "recipe.yaml").write_text("data: [unclosed\n")
    args = ["episodes", str(CONFIG), "--run", str(run), "--recipe", str(TEMPLATE),
            "--endpoint", "all=http://127.0.0.1:9", "--out", str(tmp_path / "out")]
    assert evaluate.main(args) == 2
    err = capsys.readouterr().err
    assert f"{run / 'recipe.yaml'}" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()
