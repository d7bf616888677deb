"""Source loaders on the vendored data (data/) and the made-up fixtures (tests/fixtures/)."""
import hashlib
import json
import shutil
from collections import Counter
from pathlib import Path

import pytest

from trajectories.sources import SOURCE_FORMATS, LoadResult, detect_format, load_trajectories
from trajectories.trajectory import validate_trajectory, write_jsonl_atomic

DATA = Path(__file__).parents[1] / "data"
FIXTURES = Path(__file__).parent / "fixtures"
TB, TA = DATA / "toolbench", DATA / "toolalpaca"
MARKERS = {"call": "\n Next: caller.", "conclusion": "\n Next: conclusion.",
           "give_up": "\n Next: give up."}


def load(path, **kw) -> LoadResult:
    return load_trajectories(path, **kw)


def decisions(trajectories) -> Counter:
    return Counter(t["decision"] for tr in trajectories for t in tr["turns"]
                   if t["role"] == "planner")


def targets(trajectories, role):
    out = []
    for tr in trajectories:
        for t in tr["turns"]:
            if t["role"] == role == "planner":
                out.append(t["thought"] + MARKERS[t["decision"]])
            elif t["role"] == role == "caller":
                out.append(f"Action: {t['name']}\nAction Input: {t['arguments']}")
            elif t["role"] == role == "summarizer":
                out.append(t["answer"])
    return out


@pytest.fixture(scope="module")
def chains():
    return load(TB / "train_sample_chains.json")


@pytest.fixture(scope="module")
def conversations():
    return load(TB / "train_sample_conversations.json")


def test_vendored_toolalpaca_files_match_notice_hashes():
    notice = (TA / "NOTICE.md").read_text()
    for name in ("eval_simulated.json", "eval_real.json", "LICENSE"):
        assert hashlib.sha256((TA / name).read_bytes()).hexdigest() in notice


def test_result_shape_and_every_record_valid(chains):
    assert chains.format == "alpha_umi_chains" and chains.path == TB / "train_sample_chains.json"
    assert chains.skipped == 0 and chains.skip_reasons == Counter()
    for tr in chains.trajectories:
        validate_trajectory(tr)
    ids = [tr["id"] for tr in chains.trajectories]
    assert ids[0] == "toolbench-train_sample_chains-00000" and len(set(ids)) == 20


@pytest.mark.parametrize("name", ["train_sample_chains.json", "train_sample_conversations.json"])
def test_train_sample_counts(name):
    res = load(TB / name)
    assert len(res.trajectories) == 20
    assert decisions(res.trajectories) == {"call": 59, "conclusion": 14, "give_up": 6}
    assert sum(t["role"] == "summarizer" for tr in res.trajectories for t in tr["turns"]) == 14


def test_dev_conversations_counts():
    res = load(TB / "dev_conversations.json")
    assert res.format == "alpha_umi_conversations" and len(res.trajectories) == 50
    assert decisions(res.trajectories) == {"call": 121, "conclusion": 35, "give_up": 15}
    # the 16 unmarked assistant turns are each followed by another assistant turn: dropped, noted
    unmarked = [i for tr in res.trajectories for i in tr.get("meta", {}).get("unmarked_turns", [])]
    assert len(unmarked) == 16
    # the test-set marker follows a space: that space is not part of the thought
    first = res.trajectories[0]["turns"][0]
    raw = json.loads((TB / "dev_conversations.json").read_text())[0]["conversations"][1]["value"]
    assert raw == first["thought"] + " Next: caller."


def test_chains_reproduce_reference_targets(chains):
    ref = {role: [r["target"] for r in json.loads(
        (TB / "alpha_umi_reference" / f"train_{role}.json").read_text())]
        for role in ("planner", "caller", "summarizer")}
    mine = {role: targets(chains.trajectories, role) for role in ref}
    assert {r: len(v) for r, v in mine.items()} == {"planner": 79, "caller": 59, "summarizer": 14}
    assert mine["caller"] == ref["caller"]
    assert mine["summarizer"] == ref["summarizer"]
    assert mine["planner"][:3] == ref["planner"][:3]
    # the reference writes " Next: caller." (no newline) after the 4 empty (null) thoughts
    differ = [(a, b) for a, b in zip(mine["planner"], ref["planner"]) if a != b]
    assert differ == [("\n Next: caller.", " Next: caller.")] * 4


def test_chains_and_conversations_agree_except_observations(chains, conversations):
    for a, b in zip(chains.trajectories, conversations.trajectories):
        assert (a["tools"], a["instruction"]) == (b["tools"], b["instruction"])
        strip = lambda turns: [t for t in turns if t["role"] != "observation"]  # noqa: E731
        assert strip(a["turns"]) == strip(b["turns"])
        assert [t["role"] for t in a["turns"]] == [t["role"] for t in b["turns"]]


def test_chains_field_mapping(chains):
    tr = chains.trajectories[0]
    assert tr["instruction"].startswith("Can you fetch the responses") and "Begin!" not in \
        tr["instruction"]
    assert tr["turns"][0]["role"] == "user"  # the later "previous trails" prompt, verbatim
    assert tr["turns"][0]["content"].startswith("This is not the first time you try this task")
    assert all(t["name"] != "Finish" for t in tr["tools"])
    quiz = next(t for t in tr["tools"] if t["name"] == "quiz_for_moodring")
    assert quiz["parameters"] == {"type": "object", "required": [], "properties": {
        "quizid": {"type": "string", "description": ""}}}
    types = Counter(p["type"] for tr in chains.trajectories for t in tr["tools"]
                    for p in t["parameters"]["properties"].values())
    assert set(types) == {"string", "integer", "boolean"}
    # assistant messages without a function call are dropped and their indices noted
    assert chains.trajectories[6]["meta"]["unmarked_turns"] == [2, 5, 7]
    assert tr["turns"][-1] == {"role": "summarizer", "answer": tr["turns"][-1]["answer"]}


def test_observation_errors_are_kept(chains, conversations):
    obs = [t for t in chains.trajectories[1]["turns"] if t["role"] == "observation"]
    assert obs[0] == {"role": "observation", "content": "",
                      "error": "request invalid, data error. status_code=503"}
    with_error = [t for tr in chains.trajectories for t in tr["turns"] if t.get("error")]
    assert len(with_error) == 20
    assert not any(t.get("error") for tr in conversations.trajectories for t in tr["turns"])
    # ToolBench truncated some outputs to 1024 characters: not JSON any more, kept verbatim
    truncated = chains.trajectories[0]["turns"][3]["content"]
    assert truncated.startswith('{"error": "", "response": "[{') and truncated.endswith("...")


def test_toolbench_native_answer():
    res = load(FIXTURES / "toolbench_answer_madeup.json")
    assert res.format == "toolbench_answer" and len(res.trajectories) == 1
    tr = res.trajectories[0]
    assert tr["instruction"] == "What is the weather in Paris, and is it a holiday there today?"
    assert [t["name"] for t in tr["tools"]] == ["current_weather_for_madeup_weather",
                                               "holidays_for_madeup_calendar"]
    assert tr["tools"][0]["parameters"]["required"] == ["city"]
    assert [t["role"] for t in tr["turns"]] == ["planner", "caller", "observation"] * 3 + [
        "planner", "summarizer"]
    assert tr["turns"][2] == {"role": "observation", "content": "", "error": "Timeout error..."}
    assert tr["turns"][3]["thought"] == ""  # a call with a null thought
    assert tr["turns"][8]["content"] == "not json at all"
    assert tr["turns"][9]["thought"] == "I have everything I need.\n"  # verbatim
    assert tr["meta"] == {"unmarked_turns": [6], "valid_data": True}


def test_toolbench_answer_directory(tmp_path):
    for name in ("a.json", "b.json"):
        shutil.copy(FIXTURES / "toolbench_answer_madeup.json", tmp_path / name)
    res = load(tmp_path)
    assert res.format == "toolbench_answer"
    assert [tr["id"] for tr in res.trajectories] == ["toolbench-a-00000", "toolbench-b-00000"]


def test_toolbench_native_answer_tree():
    """ToolBench's own answer folder (G1_answer/, G2_answer/, G3_answer/), real quirks included."""
    tree = TB / "native_answer_examples"
    res = load(tree, on_error="skip")
    assert res.format == "toolbench_answer"
    files = sorted(tree.rglob("*.json"))
    assert len(files) == 15 and len(res.trajectories) == 12
    # two failed searches (valid_data false, no messages) and one call to a tool's name
    assert res.skip_reasons == Counter({"invalid_answer": 2, "unknown_tool": 1})
    skipped = {Path(str(e).split(":")[0]).relative_to(tree).as_posix(): str(e) for e in res.errors}
    assert "valid_data is false" in skipped["G1_answer/69_ChatGPT_DFS_woFilter_w2.json"]
    assert "valid_data is false" in skipped["G3_answer/8_ChatGPT_DFS_woFilter_w2.json"]
    assert "'dota_2_steam_web', which is not in the record's tools" in skipped[
        "G3_answer/21_ChatGPT_DFS_woFilter_w2.json"]
    # G1_answer/10_... and G2_answer/10_... share a file name: the ids name the folder
    ids = [tr["id"] for tr in res.trajectories]
    assert len(set(ids)) == 12
    assert {"toolbench-G1_answer.10_ChatGPT_DFS_woFilter_w2-00000",
            "toolbench-G2_answer.10_ChatGPT_DFS_woFilter_w2-00000"} <= set(ids)
    # each trajectory's calls, in order, are the function calls of its last train_messages list
    for tr in res.trajectories:
        group, stem = tr["id"].split("-", 1)[1].rsplit("-", 1)[0].split(".", 1)
        gen = json.loads((tree / group / f"{stem}.json").read_text())["answer_generation"]
        calls = [m["function_call"]["name"] for m in gen["train_messages"][-1]
                 if m["role"] == "assistant" and m.get("function_call")]
        assert [t["name"] for t in tr["turns"] if t["role"] == "caller"] == \
            [c for c in calls if c != "Finish"]
        assert tr["instruction"] == gen["query"].strip() or gen["query"].strip() in tr["instruction"]
    with pytest.raises(Exception, match="valid_data is false"):
        load(tree)  # on_error: raise stops at the first bad record, naming it


@pytest.mark.parametrize("name, instructions, functions", [
    ("eval_simulated.json", 100, 54), ("eval_real.json", 114, 40)])
def test_toolalpaca_eval(name, instructions, functions):
    res = load(TA / name)
    raw = json.loads((TA / name).read_text())
    assert res.format == "toolalpaca_eval" and len(res.trajectories) == instructions
    documented = {f for api in raw for f in api["Function_Projection"]}
    assert len(documented) == functions
    offered = {t["name"] for tr in res.trajectories for t in tr["tools"]}
    recovered = {n for tr in res.trajectories for n in tr["meta"].get("recovered_tools", [])}
    assert offered == documented | recovered | {"getDetails"}
    calls = sum(len(g) for api in raw for g in api["Golden_Answers"])
    assert decisions(res.trajectories) == {"call": calls}
    for tr in res.trajectories:
        assert tr["meta"]["reference_only"] is True
        assert {t["role"] for t in tr["turns"]} <= {"planner", "caller"}
        assert all(t["thought"] == "" for t in tr["turns"] if t["role"] == "planner")


def test_toolalpaca_eval_details():
    sim = load(TA / "eval_simulated.json").trajectories
    first = sim[0]
    assert first["id"] == "toolalpaca-eval_simulated-00000"
    assert first["instruction"] == "Hey, can you show me a random picture of an axolotl?"
    assert first["turns"][1] == {"role": "caller", "name": "getRandomAxolotlImage",
                                 "arguments": "{}"}
    search = next(t for t in first["tools"] if t["name"] == "searchAxolotlImages")
    assert search["parameters"]["properties"]["color"]["enum"] == ["wild", "leucistic", "albino"]
    # "[Optional]updateUserProfile" -> updateUserProfile, flagged
    optional = [tr for tr in sim if "optional_calls" in tr["meta"]]
    assert len(optional) == 1 and optional[0]["turns"][3]["name"] == "updateUserProfile"
    # a $ref request body becomes flat properties
    superset = next(tr for tr in sim if tr["meta"]["api"] == "Apache Superset")
    create = next(t for t in superset["tools"] if t["name"] == "createDashboard")
    assert "dashboardName" in create["parameters"]["properties"]
    real = load(TA / "eval_real.json").trajectories
    aviation = next(tr for tr in real if tr["meta"]["api"] == "AviationAPI")
    assert len(aviation["meta"]["recovered_tools"]) == 5


def test_toolalpaca_training_format():
    res = load(FIXTURES / "toolalpaca_train_madeup.json")
    assert res.format == "toolalpaca" and len(res.trajectories) == 2
    second = res.trajectories[1]
    assert second["instruction"] == "Add a book for me."  # "\nHint: ..." cut off
    assert [t.get("name") for t in second["turns"] if t["role"] == "caller"] == [
        "getDetails", "addBook"]
    assert second["turns"][0]["thought"] == "The title is missing."
    assert second["turns"][-2:] == [
        {"role": "planner", "thought": "The book was added.", "decision": "conclusion"},
        {"role": "summarizer", "answer": "I added 'Emma' (1815)."}]
    add = next(t for t in second["tools"] if t["name"] == "addBook")
    assert add["parameters"]["required"] == ["title"]
    get = next(t for t in second["tools"] if t["name"] == "getBook")
    assert get["parameters"]["properties"]["bookId"]["type"] == "integer"


@pytest.mark.parametrize("path, fmt", [
    (TB / "train_sample_chains.json", "alpha_umi_chains"),
    (TB / "dev_conversations.json", "alpha_umi_conversations"),
    (TA / "eval_real.json", "toolalpaca_eval"),
    (FIXTURES / "toolbench_answer_madeup.json", "toolbench_answer"),
    (FIXTURES / "toolalpaca_train_madeup.json", "toolalpaca"),
])
def test_auto_detection(path, fmt):
    assert detect_format(path) == fmt
    explicit = load(path, format=fmt)
    assert load(path).trajectories == explicit.trajectories


def test_canonical_round_trip(tmp_path, chains):
    records = chains.trajectories + load(TA / "eval_simulated.json").trajectories
    out = tmp_path / "canonical.jsonl"
    assert write_jsonl_atomic(out, records) == 120
    res = load(out, format="canonical")
    assert res.trajectories == records and res.skipped == 0
    assert detect_format(out) == "canonical" and load(out).trajectories == records


def test_source_formats():
    assert set(SOURCE_FORMATS) == {"auto", "toolbench_answer", "alpha_umi_chains",
                                   "alpha_umi_conversations", "toolalpaca", "toolalpaca_eval",
                                   "canonical", "selection"}
    with pytest.raises(ValueError):
        load(TB / "train_sample_chains.json", format="nope")
    with pytest.raises(ValueError):
        load(TB / "train_sample_chains.json", on_error="ignore")
