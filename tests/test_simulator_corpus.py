"""Whole simulated instances against the scripted loopback server: schema-valid trajectories,
filters and their counts, resume after a kill, reuse by settings hash, spec generation and the
executor's own interface."""
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fakes.openai_server import ASSISTANT, EXECUTOR, USER, FakeOpenAIServer, simulator_rules
from omegaconf import OmegaConf

from trajectories.trajectory import validate_trajectory
from simulators import SimulatedToolExecutor, build_corpus, toolset_from_toolalpaca
from simulators.settings import load_settings

REPO = Path(__file__).resolve().parents[1]
DATA = "data/toolalpaca/eval_simulated.json"
SECRET = "sk-test-do-not-leak-0123456789"
CALL = "Thought: look it up\nNext: caller.\nAction: getAxolotlFacts\nAction Input: {}"


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)


def settings(base_url, **over) -> dict:
    s = {"sources": [{"type": "toolalpaca", "path": DATA, "names": ["Axolotl"]}],
         "instructions_per_api": 2,
         "llm": {"base_url": base_url, "model": "fake", "concurrency": 4, "timeout_s": 2.0,
                 "max_retries": 3, "backoff_base_s": 0.001, "backoff_max_s": 0.01},
         "output": {"progress": False, "stats_every": 1}}
    return OmegaConf.to_container(OmegaConf.merge(s, over))


def run(rules, tmp_path, **over):
    with FakeOpenAIServer(rules) as server:
        corpus = build_corpus(settings(server.base_url, **over), tmp_path)
    records = [json.loads(line) for line in corpus.read_text().splitlines()]
    return records, json.loads((corpus.parent / "stats.json").read_text()), server


def test_a_full_instance_is_a_valid_trajectory(tmp_path):
    records, stats, server = run(simulator_rules(), tmp_path)
    assert len(records) == 2 and len({r["id"] for r in records}) == 2
    for rec in records:
        validate_trajectory(rec)
        assert [t["role"] for t in rec["turns"]] == ["planner", "caller", "observation", "planner", "summarizer"]
        assert rec["turns"][2] == {"role": "observation", "error": "",
                                   "content": '[{"fact": "They live in lake Xochimilco.", "source": "wiki"}]'}
        assert {t["name"] for t in rec["tools"]} == {"getRandomAxolotlImage", "searchAxolotlImages", "getAxolotlFacts"}
    assert stats["complete"] and stats["kept"] == 2 and stats["filtered"] == 0
    assert stats["totals"]["llm_calls"] == 8 and stats["tokens"] > 0
    for f in tmp_path.rglob("*"):
        if f.is_file():
            assert SECRET not in f.read_text(), f
    # The user agent saw the API's functions; the executor saw the response schema.
    prompts = [r["messages"][-1]["content"] for r in server.requests]
    assert any(USER in p and "getAxolotlFacts" in p for p in prompts)
    assert any(EXECUTOR in p and '"fact"' in p for p in prompts)


def test_finished_runs_are_reused_by_settings_hash(tmp_path):
    records, _, _ = run(simulator_rules(), tmp_path)
    with FakeOpenAIServer([]) as server:  # answers nothing: a reuse must not call it
        again = build_corpus(settings(server.base_url, llm={"concurrency": 1}), tmp_path)
        assert not server.requests
    assert [json.loads(line)["id"] for line in again.read_text().splitlines()] == [r["id"] for r in records]
    other, _, _ = run(simulator_rules(), tmp_path, seed=1)
    assert {r["id"] for r in other}.isdisjoint(r["id"] for r in records)
    assert len(list(tmp_path.glob("simulator-*"))) == 2


def test_rate_limits_and_server_errors_inside_a_run_are_retried(tmp_path):
    rules = [{"status": 429, "times": 2}, {"status": 500, "times": 1}] + simulator_rules()
    records, stats, _ = run(rules, tmp_path)
    assert len(records) == 2 and stats["complete"]
    assert stats["totals"]["retries"] == 3 == stats["llm_this_run"]["retries"]


def test_malformed_assistant_replies_are_counted_and_filtered(tmp_path):
    rules = simulator_rules()[:2] + [{"match": ASSISTANT, "reply": "Sure! Let me check that for you."}]
    records, stats, _ = run(rules, tmp_path, assistant={"parse_retries": 2})
    assert records == []
    assert stats["filtered_by_reason"] == {"parse_failure": 2}
    assert stats["totals"]["parse_failures"] == 6  # 2 instances x (1 + 2 retries)
    rejected = (tmp_path.glob("simulator-*/rejected.jsonl")).__next__().read_text().splitlines()
    assert {json.loads(line)["reason"] for line in rejected} == {"parse_failure"}


def test_a_format_slip_is_re_asked_and_the_instance_kept(tmp_path):
    rules = [{"match": ASSISTANT, "reply": "I'll call it.", "times": 1}] + simulator_rules()
    records, stats, _ = run(rules, tmp_path, instructions_per_api=1)
    assert len(records) == 1 and stats["totals"]["parse_failures"] == 1


def test_invalid_calls_never_reach_the_executor(tmp_path):
    rules = simulator_rules(arguments='{"category": "diet"}')
    records, stats, server = run(rules, tmp_path, instructions_per_api=1)
    obs = records[0]["turns"][2]
    assert obs["content"] == "" and obs["error"].startswith("400 Bad Request: parameter 'category' must be one of")
    assert stats["totals"]["invalid_calls"] == 1
    assert not any(EXECUTOR in r["messages"][-1]["content"] for r in server.requests)


def test_executor_bodies_are_checked_against_the_response_schema(tmp_path):
    bad = {"match": EXECUTOR, "reply": 'Status Code: 200\nResponse: {"fact": 1}', "times": 1}
    records, stats, _ = run([bad] + simulator_rules(), tmp_path, instructions_per_api=1)
    assert records[0]["turns"][2]["content"].startswith('[{"fact"')
    assert stats["totals"]["executor_schema_mismatches"] == 1
    records, stats, _ = run([dict(bad, times=10)] + simulator_rules(), tmp_path / "keep", instructions_per_api=1)
    assert stats["totals"]["executor_mismatches_kept"] == 1 and records[0]["turns"][2]["content"] == '{"fact": 1}'
    records, stats, _ = run([dict(bad, times=10)] + simulator_rules(), tmp_path / "err", instructions_per_api=1,
                            executor={"on_mismatch": "error"})
    assert records[0]["turns"][2]["error"].startswith("500 Internal Server Error")


def test_clarifying_question_becomes_summarizer_and_user_turns(tmp_path):
    ask = {"match": ASSISTANT, "reply": "Thought: which?\nNext: ask user.\nQuestion: Which category?", "times": 1}
    answer = {"match": "The assistant asks you", "reply": "Habitat, please."}
    records, stats, _ = run([ask, answer] + simulator_rules(), tmp_path, instructions_per_api=1)
    roles = [t["role"] for t in records[0]["turns"]]
    assert roles[:3] == ["planner", "summarizer", "user"] and records[0]["turns"][2]["content"] == "Habitat, please."
    assert stats["totals"]["clarifications"] == 1


@pytest.mark.parametrize("reply,over,reason", [
    (CALL, {"assistant": {"max_steps": 3}}, "too_many_steps"),
    ("Thought: easy\nNext: conclusion.\nFinal Answer: In Mexico.", {}, "no_calls"),
    ("Thought: cannot\nNext: give up.", {"filters": {"keep_give_up": False, "min_calls": 0}}, "give_up"),
])
def test_filters(tmp_path, reply, over, reason):
    rules = simulator_rules()[:2] + [{"match": ASSISTANT, "reply": reply}]
    records, stats, _ = run(rules, tmp_path, **over)
    assert records == [] and stats["filtered_by_reason"] == {reason: 2}


def test_failed_instances_are_left_for_the_rerun(tmp_path):
    records, stats, _ = run([{"status": 500}], tmp_path, llm={"max_retries": 1})
    assert records == [] and not stats["complete"] and stats["errors_this_run"] == 2
    records, stats, _ = run(simulator_rules(), tmp_path)
    assert len(records) == 2 and stats["complete"]


def _ids(corpus: Path) -> list[str]:
    return [json.loads(line)["id"] for line in corpus.read_text().splitlines()]


def test_a_killed_run_resumes_with_each_instance_once(tmp_path):
    over = {"instructions_per_api": 12, "llm": {"concurrency": 2}, "output": {"dir": str(tmp_path)}}
    with FakeOpenAIServer(simulator_rules(), latency=0.03) as server:
        recipe = tmp_path / "simulate.yaml"
        recipe.write_text(OmegaConf.to_yaml({"simulator": settings(server.base_url, **over)}))
        corpus = tmp_path / f"simulator-{_hash(recipe)}" / "corpus.jsonl"
        proc = subprocess.Popen([sys.executable, "-m", "simulators", str(recipe)], cwd=REPO,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        deadline = time.time() + 30
        while time.time() < deadline and (not corpus.exists() or len(corpus.read_text().splitlines()) < 3):
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        before = corpus.read_bytes()
        assert 3 <= len(_ids(corpus)) < 12, "the kill should land mid-run"
        with open(corpus, "ab") as fh:  # and a torn last line, as a kill mid-write leaves
            fh.write(b'{"id": "half a rec')
        out = subprocess.run([sys.executable, "-m", "simulators", str(recipe)], cwd=REPO,
                             capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.splitlines()[0] == str(corpus)
    ids = _ids(corpus)
    assert len(ids) == 12 == len(set(ids))
    assert corpus.read_bytes().startswith(before)  # nothing written before the kill was lost
    assert json.loads((corpus.parent / "stats.json").read_text())["kept"] == 12


def _hash(recipe: Path) -> str:
    from simulators.settings import settings_hash
    return settings_hash(load_settings(recipe))


def test_spec_generated_from_a_description_is_validated_and_regenerated(tmp_path):
    functions = '[{"name": "getWeather", "description": "Weather of a city", "parameters": {}, "returns": "x"}]'
    bad = '{"openapi": "3.0.0", "info": {"title": "W", "version": "1"}, "paths": {"/w": {"get": {"responses": {}}}}}'
    good = json.dumps({"openapi": "3.0.0", "info": {"title": "W", "version": "1"}, "paths": {"/w": {"get": {
        "operationId": "getWeather", "parameters": [{"name": "city", "in": "query", "required": True,
                                                     "schema": {"type": "string"}}],
        "responses": {"200": {"description": "ok", "content": {"application/json": {"schema": {
            "type": "object", "properties": {"temp": {"type": "number"}}}}}}}}}}})
    rules = [{"match": "List the functions", "reply": functions},
             {"match": "That specification is invalid", "reply": good},
             {"match": "Write an OpenAPI 3.0 specification", "reply": bad},
             {"match": USER, "reply": "Instruction: How warm is it in Oslo?"},
             {"match": EXECUTOR, "reply": 'Status Code: 200\nResponse: {"temp": 3.5}'},
             {"match": ASSISTANT, "last": "Observation:", "reply": "Thought: ok\nNext: conclusion.\nFinal Answer: 3.5 C"},
             {"match": ASSISTANT, "reply": 'Thought: ask\nNext: caller.\nAction: getWeather\nAction Input: {"city": "Oslo"}'}]
    over = {"sources": [{"type": "description", "name": "Weather", "description": "City weather."}],
            "instructions_per_api": 1}
    records, stats, server = run(rules, tmp_path, **over)
    assert records[0]["tools"][0]["name"] == "getWeather" and records[0]["turns"][2]["content"] == '{"temp": 3.5}'
    spec_file = next(tmp_path.glob("simulator-*/specs/Weather.json"))
    assert json.loads(spec_file.read_text()) == json.loads(good)
    assert sum("That specification is invalid" in r["messages"][-1]["content"] for r in server.requests) == 1


def test_invalid_specs_are_skipped_and_listed(tmp_path):
    spec_dir = tmp_path / "specs"
    spec_dir.mkdir()
    (spec_dir / "broken.json").write_text('{"openapi": "3.0.0", "paths": {}}')
    over = {"sources": [{"type": "openapi", "path": str(spec_dir)},
                        {"type": "toolalpaca", "path": DATA, "names": ["Axolotl"]}]}
    records, stats, _ = run(simulator_rules(), tmp_path, **over)
    assert len(records) == 2
    assert stats["invalid_specs"][0]["source"].endswith("broken.json")
    assert "$.info: missing or not an object" in stats["invalid_specs"][0]["problems"]
    with pytest.raises(Exception, match=r"broken.json[\s\S]*\$\.paths"):
        run(simulator_rules(), tmp_path / "strict", on_invalid_spec="error", **over)


def test_the_executor_plugs_into_an_agent_loop():
    record = next(r for r in json.loads((REPO / DATA).read_text()) if r["Name"] == "Axolotl")
    toolset = toolset_from_toolalpaca(record)
    with FakeOpenAIServer(simulator_rules()) as server:
        executor = SimulatedToolExecutor.from_settings(settings(server.base_url), toolset)
        try:
            ok = executor.execute("getAxolotlFacts", '{"category": "habitat"}')
            wrong = executor.execute("getAxolotlFacts", '{"limit": "three"}')
            unknown = executor.execute("fly", "{}")
        finally:
            executor.close()
    assert ok == {"content": '[{"fact": "They live in lake Xochimilco.", "source": "wiki"}]', "error": ""}
    assert wrong["content"] == "" and "wrong type: expected integer" in wrong["error"]
    assert unknown["error"].startswith("404 Not Found: unknown function 'fly'")
    assert executor.counters["invalid_calls"] == 2 and executor.counters["llm_calls"] == 1
    assert len(executor.history) == 1


def test_api_names_must_be_unique(tmp_path):
    twice = [{"type": "toolalpaca", "path": DATA, "names": ["Axolotl"]}] * 2
    with pytest.raises(ValueError, match="two APIs named 'Axolotl'"):
        run(simulator_rules(), tmp_path, sources=twice)
