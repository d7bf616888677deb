"""Malformed source records: a TrajectoryError naming file, record index and field (on_error=
"raise"), or a skipped record counted under a reason key (on_error="skip"). Never a silent drop."""
import copy
import json
import re
from collections import Counter
from pathlib import Path

import pytest

from trajectories.sources import load_trajectories
from trajectories.trajectory import TrajectoryError, write_jsonl_atomic

DATA = Path(__file__).parents[1] / "data"
FIXTURES = Path(__file__).parent / "fixtures"
CHAINS = DATA / "toolbench" / "train_sample_chains.json"
CONVERSATIONS = DATA / "toolbench" / "train_sample_conversations.json"
EVAL = DATA / "toolalpaca" / "eval_simulated.json"
ANSWER = FIXTURES / "toolbench_answer_madeup.json"
TRAIN = FIXTURES / "toolalpaca_train_madeup.json"


def sample(path, n=None):
    data = json.loads(Path(path).read_text())
    return copy.deepcopy(data[:n] if isinstance(data, list) and n else data)


def dump(tmp_path, name, data) -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


def expect_error(path, fmt, index, field, message, reason):
    """Raise mode names file/record/field; skip mode drops exactly that record, under `reason`."""
    with pytest.raises(TrajectoryError) as info:
        load_trajectories(path, format=fmt)
    err = info.value
    assert (Path(err.file), err.index, err.field) == (path, index, field)
    assert str(err).startswith(f"{path}: record {index}: field '{field}': ")
    assert re.search(message, str(err)), str(err)
    res = load_trajectories(path, format=fmt, on_error="skip")
    assert res.skipped == 1 and res.skip_reasons == Counter({reason: 1})
    assert len(res.errors) == 1 and str(res.errors[0]) == str(err)
    return res


# ---- truncated / undetectable files ------------------------------------------------------------

@pytest.mark.parametrize("on_error", ["raise", "skip"])
@pytest.mark.parametrize("fmt", ["auto", "alpha_umi_chains"])
def test_truncated_json_file(tmp_path, fmt, on_error):
    text = CHAINS.read_text()
    path = tmp_path / "train.json"
    path.write_text(text[: len(text) // 2])
    with pytest.raises(TrajectoryError, match=rf"^{re.escape(str(path))}: invalid JSON at line "
                                              r"\d+, column \d+: ") as info:
        load_trajectories(path, format=fmt, on_error=on_error)
    assert info.value.kind == "invalid_json"


def test_truncated_file_in_answer_directory(tmp_path):
    (tmp_path / "a.json").write_text(ANSWER.read_text())
    (tmp_path / "b.json").write_text(ANSWER.read_text()[:300])
    with pytest.raises(TrajectoryError, match=r"b\.json: invalid JSON at line 8, column"):
        load_trajectories(tmp_path)
    res = load_trajectories(tmp_path, on_error="skip")
    assert len(res.trajectories) == 1 and res.skip_reasons == {"invalid_json": 1}


def test_truncated_canonical_line(tmp_path):
    records = load_trajectories(CHAINS).trajectories[:3]
    path = tmp_path / "canon.jsonl"
    write_jsonl_atomic(path, records)
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0], lines[1][:100], lines[2]]) + "\n")
    with pytest.raises(TrajectoryError, match=r"canon\.jsonl: record 1: invalid JSON on line 2, "
                                              r"column \d+: "):
        load_trajectories(path)  # auto-detected as canonical from its first line
    res = load_trajectories(path, format="canonical", on_error="skip")
    assert res.trajectories == [records[0], records[2]]
    assert res.skip_reasons == {"invalid_json": 1}


def test_undetectable_format(tmp_path):
    path = dump(tmp_path, "mystery.json", [{"question": "?", "answer": "!"}])
    with pytest.raises(TrajectoryError, match=rf"^{re.escape(str(path))}: cannot detect"):
        load_trajectories(path)


# ---- missing fields ----------------------------------------------------------------------------

def test_missing_chains(tmp_path):
    data = sample(CHAINS, 5)
    del data[3]["chains"]
    res = expect_error(dump(tmp_path, "train.json", data), "alpha_umi_chains", 3, "chains",
                       "missing required field", "missing_field")
    assert len(res.trajectories) == 4


def test_missing_message_role(tmp_path):
    data = sample(CHAINS, 5)
    del data[2]["chains"][4]["role"]
    expect_error(dump(tmp_path, "train.json", data), "alpha_umi_chains", 2, "chains[4].role",
                 "missing required field", "missing_field")


def test_missing_finish_return_type(tmp_path):
    data = sample(CHAINS, 1)
    data[0]["chains"][-1]["function_call"]["arguments"] = '{"final_answer": "x"}'
    expect_error(dump(tmp_path, "train.json", data), "alpha_umi_chains", 0,
                 "chains[5].function_call.arguments.return_type", "missing", "missing_field")


def test_missing_conversation_value(tmp_path):
    data = sample(CONVERSATIONS, 3)
    del data[1]["conversations"][2]["value"]
    expect_error(dump(tmp_path, "conv.json", data), "alpha_umi_conversations", 1,
                 "conversations[2].value", "missing required field", "missing_field")


def test_missing_train_messages(tmp_path):
    data = sample(ANSWER)
    del data["answer_generation"]["train_messages"]
    expect_error(dump(tmp_path, "answer.json", data), "toolbench_answer", 0,
                 "answer_generation.train_messages", "missing required field", "missing_field")


def test_missing_golden_answer(tmp_path):
    data = sample(EVAL, 2)
    data[1]["Golden_Answers"] = data[1]["Golden_Answers"][:-1]  # one short of Instructions
    expect_error(dump(tmp_path, "eval.json", data), "toolalpaca_eval", 1,
                 f"Golden_Answers[{len(data[1]['Instructions']) - 1}]", "no golden answer",
                 "missing_field")


def test_missing_toolalpaca_output(tmp_path):
    data = sample(TRAIN)
    del data[0]["Instances"][1]["output"]
    expect_error(dump(tmp_path, "train.json", data), "toolalpaca", 0, "Instances[1].output",
                 "missing required field", "missing_field")


def test_invalid_finish_arguments(tmp_path):
    data = sample(CHAINS, 1)
    data[0]["chains"][-1]["function_call"]["arguments"] = '{"return_type": "give_answer", '
    expect_error(dump(tmp_path, "train.json", data), "alpha_umi_chains", 0,
                 "chains[5].function_call.arguments", "Finish arguments are not JSON",
                 "invalid_json")


# ---- unknown roles -----------------------------------------------------------------------------

def test_unknown_message_role(tmp_path):
    data = sample(CHAINS, 5)
    data[3]["chains"][4]["role"] = "tool"
    expect_error(dump(tmp_path, "train.json", data), "alpha_umi_chains", 3, "chains[4].role",
                 "unknown message role 'tool'", "unknown_role")


def test_unknown_conversation_role(tmp_path):
    data = sample(CONVERSATIONS, 2)
    data[0]["conversations"][3]["from"] = "robot"
    expect_error(dump(tmp_path, "conv.json", data), "alpha_umi_conversations", 0,
                 "conversations[3].from", "unknown turn role 'robot'", "unknown_role")


def test_unknown_canonical_role(tmp_path):
    records = load_trajectories(CHAINS).trajectories[:2]
    records[1]["turns"][1]["role"] = "bot"
    path = tmp_path / "canon.jsonl"
    write_jsonl_atomic(path, records)
    expect_error(path, "canonical", 1, "turns[1]", "unknown turn role 'bot'", "unknown_role")


# ---- calls to tools not in the list ------------------------------------------------------------

def test_unknown_tool_in_chains(tmp_path):
    data = sample(CHAINS, 5)
    data[3]["chains"][2]["function_call"]["name"] = "no_such_tool"
    expect_error(dump(tmp_path, "train.json", data), "alpha_umi_chains", 3,
                 "chains[2].function_call.name", "call to tool 'no_such_tool'", "unknown_tool")


def test_unknown_tool_in_conversations(tmp_path):
    data = sample(CONVERSATIONS, 2)
    data[1]["conversations"][2]["value"] = "Action: no_such_tool\nAction Input: {}"
    expect_error(dump(tmp_path, "conv.json", data), "alpha_umi_conversations", 1,
                 "conversations[2].value", "call to tool 'no_such_tool'", "unknown_tool")


def test_unknown_tool_in_golden_answers(tmp_path):
    data = sample(EVAL, 1)
    data[0]["Golden_Answers"][4][0]["Action"] = "fetchEverything"
    expect_error(dump(tmp_path, "eval.json", data), "toolalpaca_eval", 0,
                 "Golden_Answers[4][0].Action", "call to tool 'fetchEverything'", "unknown_tool")


def test_unknown_tool_in_toolalpaca_steps(tmp_path):
    data = sample(TRAIN)
    data[0]["Instances"][1]["intermediate_steps"][1][0][0] = "deleteBook"
    expect_error(dump(tmp_path, "train.json", data), "toolalpaca", 0,
                 "Instances[1].intermediate_steps[1][0][0]", "call to tool 'deleteBook'",
                 "unknown_tool")


def test_unknown_tool_in_canonical(tmp_path):
    records = load_trajectories(CHAINS).trajectories[:2]
    records[0]["turns"][2]["name"] = "no_such_tool"
    path = tmp_path / "canon.jsonl"
    write_jsonl_atomic(path, records)
    expect_error(path, "canonical", 0, "turns[2]", "call to tool 'no_such_tool'", "unknown_tool")


# ---- empty targets -----------------------------------------------------------------------------

def test_assistant_without_thought_or_call(tmp_path):
    data = sample(CHAINS, 8)
    data[6]["chains"][2]["content"] = ""  # an assistant message without a function call
    expect_error(dump(tmp_path, "train.json", data), "alpha_umi_chains", 6, "chains[2].content",
                 "neither a thought nor a function call", "empty_target")


def test_empty_final_answer(tmp_path):
    data = sample(CHAINS, 1)
    data[0]["chains"][-1]["function_call"]["arguments"] = json.dumps(
        {"return_type": "give_answer", "final_answer": " "})
    expect_error(dump(tmp_path, "train.json", data), "alpha_umi_chains", 0,
                 "chains[5].function_call.arguments.final_answer", "empty final answer",
                 "empty_target")


def test_empty_call_name(tmp_path):
    data = sample(ANSWER)
    data["answer_generation"]["train_messages"][-1][2]["function_call"]["name"] = ""
    expect_error(dump(tmp_path, "answer.json", data), "toolbench_answer", 0,
                 "answer_generation.train_messages[2][2].function_call.name", "empty tool name",
                 "empty_target")


def test_empty_conclusion(tmp_path):
    data = sample(CONVERSATIONS, 1)
    data[0]["conversations"][-1]["value"] = ""
    expect_error(dump(tmp_path, "conv.json", data), "alpha_umi_conversations", 0,
                 "conversations[6].value", "empty final answer", "empty_target")


def test_empty_unmarked_assistant_turn(tmp_path):
    data = sample(DATA / "toolbench" / "dev_conversations.json", 1)
    data[0]["conversations"][11]["value"] = "\n"  # an unmarked turn that is dropped
    expect_error(dump(tmp_path, "dev.json", data), "alpha_umi_conversations", 0,
                 "conversations[11].value", "neither a thought nor a 'Next:' marker",
                 "empty_target")


def test_empty_golden_action_but_empty_thoughts_allowed(tmp_path):
    data = sample(EVAL, 1)
    assert len(load_trajectories(dump(tmp_path, "ok.json", data)).trajectories) == 10
    data[0]["Golden_Answers"][2][0]["Action"] = " "
    expect_error(dump(tmp_path, "eval.json", data), "toolalpaca_eval", 0,
                 "Golden_Answers[2][0].Action", "empty tool name", "empty_target")


def test_empty_toolalpaca_output(tmp_path):
    data = sample(TRAIN)
    data[0]["Instances"][0]["output"] = ""
    expect_error(dump(tmp_path, "train.json", data), "toolalpaca", 0, "Instances[0].output",
                 "empty final answer", "empty_target")


# ---- turn order, and several bad records at once -----------------------------------------------

def test_turn_order_error_names_the_source_field(tmp_path):
    data = sample(CHAINS, 2)
    chain = data[1]["chains"]
    chain.insert(2, chain.pop(3))  # the function message now comes before its call
    path = dump(tmp_path, "train.json", data)
    message = "record 1: field 'chains[2]': an observation must follow a caller turn (canonical "
    with pytest.raises(TrajectoryError, match=re.escape(message + "turns[0])")):
        load_trajectories(path)
    assert load_trajectories(path, on_error="skip").skip_reasons == {"turn_order": 1}


def test_skip_counts_every_bad_record(tmp_path):
    data = sample(CHAINS)
    del data[0]["chains"]
    data[5]["chains"][3]["role"] = "tool"
    data[7]["chains"][3]["function_call"]["name"] = "nope"
    data[9]["chains"][4]["function_call"]["name"] = "nope"
    data[12]["chains"][-1]["function_call"]["arguments"] = '{"return_type": "give_answer"}'
    res = load_trajectories(dump(tmp_path, "train.json", data), on_error="skip")
    assert len(res.trajectories) == 15 and res.skipped == 5
    assert res.skip_reasons == {"missing_field": 1, "unknown_role": 1, "unknown_tool": 2,
                                "empty_target": 1}
    assert [e.index for e in res.errors] == [0, 5, 7, 9, 12]
