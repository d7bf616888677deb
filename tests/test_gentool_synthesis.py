"""GenTool synthesis: the LLM-free generator (deterministic, resumable, split by scenario without
leaks) and the LLM generator through the scripted loopback server (malformed replies and invalid
outputs counted, never fatal)."""
import json
from pathlib import Path

import pytest
from fakes.openai_server import FakeOpenAIServer

from simulators import build_corpus
from simulators.gentool.tool_sources import load_base_tools
from simulators.gentool.toolsets import BM25
from simulators.gentool.validation import arguments_problem, tool_problem
from trajectories.selection import validate_selection

FIXTURE = Path(__file__).parent / "fixtures" / "toolbench_tools_madeup.json"
SETTINGS = {"corpus": "gentool", "max_tools": 10, "seed": 3}


def read(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    train = build_corpus(SETTINGS, tmp_path_factory.mktemp("gt"))
    return train, read(train), read(train.with_name("test.jsonl")), json.loads(
        train.with_name("stats.json").read_text())


def test_offline_synthesis_writes_valid_examples_of_every_kind_and_scenario(corpus):
    _, train, test, stats = corpus
    assert stats["complete"] and stats["generator"] == "offline"
    assert stats["train_examples"] == len(train) > 0 and stats["test_examples"] == len(test) > 0
    for rec in train + test:
        validate_selection(rec)
        assert rec["toolset"][-1]["name"] == "generate_response"
        assert len(rec["toolset"]) <= 5 + 1
    assert {r["meta"]["kind"] for r in train} == {"zero", "partial", "original", "flipped"}
    assert {r["meta"]["scenario"] for r in test} == {
        "seen_query/seen_tool", "unseen_query/seen_tool", "seen_query/unseen_tool", "unseen_query/unseen_tool"}
    # The zero-to-one triple of one query: nothing suitable, then the weak tool, then the strong one.
    by_kind = {}
    for r in train:
        by_kind.setdefault(r["query"], {})[r["meta"]["kind"]] = r
    triple = next(v for v in by_kind.values() if {"zero", "partial", "original"} <= set(v))
    strong, weak = triple["original"]["meta"]["strong"], triple["original"]["meta"]["weak"]
    assert triple["zero"]["relevant"] == ["generate_response"]
    assert triple["partial"]["relevant"] == [weak, "generate_response"]
    assert triple["original"]["relevant"] == [strong, weak, "generate_response"]
    assert {strong, weak}.isdisjoint(t["name"] for t in triple["zero"]["toolset"])
    flipped = next(r for r in train if r["meta"]["kind"] == "flipped")
    assert flipped["call"]["name"] == flipped["meta"]["weak"] == flipped["relevant"][0]


def test_no_held_out_tool_or_query_in_training(corpus):
    _, train, test, stats = corpus
    unseen_tools = set(stats["unseen_tools"])
    assert unseen_tools
    weak_of_unseen = {r["meta"]["weak"] for r in test if r["meta"]["strong"] in unseen_tools}
    offered_in_train = {t["name"] for r in train for t in r["toolset"]}
    assert offered_in_train.isdisjoint(unseen_tools | weak_of_unseen)
    train_queries = {r["query"] for r in train}
    unseen_queries = {r["query"] for r in test if r["meta"]["scenario"].startswith("unseen_query")}
    assert unseen_queries and train_queries.isdisjoint(unseen_queries)
    seen_unseen_tool = [r for r in test if r["meta"]["scenario"] == "seen_query/unseen_tool"]
    # a seen query of an unseen tool was trained only with no suitable tool offered
    for r in seen_unseen_tool:
        trained = [t for t in train if t["query"] == r["query"]]
        assert trained and all(t["meta"]["kind"] == "zero" for t in trained)


def test_synthesis_is_deterministic_and_a_resumed_run_equals_an_uninterrupted_one(corpus, tmp_path):
    train, train_recs, test_recs, _ = corpus
    pairs = train.with_name("pairs.jsonl").read_text().splitlines(keepends=True)
    # Same settings elsewhere, killed after two pairs with a torn third line: the rerun finishes it.
    out = tmp_path / "resumed"
    run_dir = out / train.parent.name
    run_dir.mkdir(parents=True)
    (run_dir / "pairs.jsonl").write_text("".join(pairs[:2]) + pairs[2][:20])
    resumed = build_corpus(SETTINGS, out)
    assert read(resumed) == train_recs and read(resumed.with_name("test.jsonl")) == test_recs
    assert resumed.with_name("pairs.jsonl").read_text().splitlines() == [p.rstrip("\n") for p in pairs]


def test_tools_from_toolbench_documents_and_bm25_similarity():
    skipped = {}
    tools = load_base_tools([{"type": "toolbench_tools", "path": str(FIXTURE)}], skipped)
    assert set(tools) == {"phase_by_date_for_moon_phases", "next_full_moon_for_moon_phases", "tides_for_tide_tables"}
    tide = tools["tides_for_tide_tables"].tool
    assert tide["parameters"]["required"] == ["harbour", "days"]
    assert tide["parameters"]["properties"]["days"]["type"] == "number"
    assert tools["phase_by_date_for_moon_phases"].siblings == {"next_full_moon_for_moon_phases"}
    assert tool_problem(tide) is None
    assert arguments_problem(tide, {"harbour": "Porto", "days": 2}) is None
    assert arguments_problem(tide, {"harbour": "Porto"}) == "arguments_violate_schema"
    assert arguments_problem(tide, {"harbour": "Porto", "days": 2, "x": 1}) == "arguments_unknown_parameter"
    bm = BM25(["moon phase on a date", "harbour tide times", "full moon date"])
    scores = bm.scores("tide times for a harbour")
    assert scores.index(max(scores)) == 1


WEAK_OK = json.dumps({"name": "tidesLite", "description": "Quick tide times.",
                      "parameters": {"type": "object", "properties": {"harbour": {"type": "string"}},
                                     "required": ["harbour"]}})


def test_llm_synthesis_counts_malformed_and_invalid_replies(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key-1234")
    rules = [
        # moon tools: a weak variant that is not a tool schema -> the pair is rejected, counted
        {"match": ["Write a weaker version", "phase_by_date"], "reply": '{"name": "x y", "description": "", "parameters": 3}'},
        {"match": ["Write a weaker version", "next_full_moon"], "malformed": "shape"},
        # tides: first a reply with no JSON (re-asked, counted), then a valid weak variant
        {"match": ["Write a weaker version", "tides_for"], "times": 1, "reply": "Sure! Here it is."},
        {"match": ["Write a weaker version", "tides_for"], "reply": WEAK_OK},
        {"match": "Write 2 different, realistic requests", "reply": '["Tides in Porto for 2 days", "Tides at Brest tomorrow"]'},
        {"match": "tool B is the better choice", "reply": '["Quick: high tide in Porto?", "Just Brest high tide"]'},
        {"match": ["Tides at Brest tomorrow", "Write the arguments"], "reply": '{"harbour": "Brest", "days": "one"}'},
        {"match": "Write the arguments", "last": "tidesLite", "reply": '{"harbour": "Porto"}'},
        {"match": "Write the arguments", "reply": '{"harbour": "Porto", "days": 2}'},
    ]
    with FakeOpenAIServer(rules) as server:
        settings = {**SETTINGS, "generator": "llm", "sources": [{"type": "toolbench_tools", "path": str(FIXTURE)}],
                    "llm": {"base_url": server.base_url, "model": "fake", "max_retries": 1, "timeout_s": 5,
                            "backoff_base_s": 0.001, "backoff_max_s": 0.01, "concurrency": 2},
                    "split": {"heldout_tool_fraction": 0.0, "heldout_query_fraction": 0.0}}
        train = build_corpus(settings, tmp_path)
    stats = json.loads(train.with_name("stats.json").read_text())
    assert stats["pairs"] == 1 and stats["complete"] is False  # next_full_moon: the LLM failed for good
    assert stats["rejected_pairs_by_reason"] == {"weak_tool_bad_name": 1}
    assert stats["rejected_queries_by_reason"]["malformed_reply"] >= 1
    assert stats["rejected_queries_by_reason"]["arguments_violate_schema"] == 1  # days: "one"
    pair = read(train.with_name("pairs.jsonl"))[0]
    assert pair["weak"]["name"] == "tidesLite"
    assert [o["query"] for o in pair["originals"]] == ["Tides in Porto for 2 days"]
    assert pair["originals"][0]["weak_args"] == {"harbour": "Porto"}
    assert [f["args"] for f in pair["flipped"]] == [{"harbour": "Porto"}] * 2
    assert "sk-test" not in "".join(p.read_text() for p in train.parent.iterdir() if p.is_file())
    recs = read(train)
    assert {r["meta"]["kind"] for r in recs} == {"zero", "partial", "original", "flipped"}
