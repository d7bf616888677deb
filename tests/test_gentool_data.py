"""GenTool data: the selection example schema, the role views' span-masked targets (they decode to
exactly the ranking / call text + EOS), and one rendering for training and inference."""
import copy
import json

import pytest
from conftest import load_template

from core.vocabulary import IGNORE_INDEX
from datamodules.views import selection_view
from datamodules.span_tokenization import EncodeStats, encode_example
from prompting.text_encoder import TextEncoder
from prompting.selection_template import SelectionTemplate
from trajectories.selection import validate_selection
from trajectories.trajectory import TrajectoryError

GR = {"name": "generate_response", "description": "Answer directly.", "parameters": {"type": "object", "properties": {}}}
TIDES = {"name": "tides", "description": "High and low tides for a harbour.",
         "parameters": {"type": "object", "properties": {"harbour": {"type": "string"}, "days": {"type": "integer"}},
                        "required": ["harbour"]}}
TIDES_LITE = {"name": "tidesLite", "description": "Quick version: tides.",
              "parameters": {"type": "object", "properties": {"harbour": {"type": "string"}}, "required": ["harbour"]}}
MOON = {"name": "moonPhase", "description": "The moon's phase on a date.",
        "parameters": {"type": "object", "properties": {"date": {"type": "string"}}}}
RECORD = {"id": "ex-1", "query": "High tide in Porto for the next 2 days?",
          "toolset": [MOON, TIDES_LITE, TIDES, GR],
          "ranking": ["tides", "tidesLite", "generate_response", "moonPhase"],
          "relevant": ["tides", "tidesLite", "generate_response"],
          "call": {"name": "tides", "arguments": '{"harbour": "Porto", "days": 2}'},
          "meta": {"kind": "original", "split": "test", "scenario": "seen_query/seen_tool"}}


@pytest.fixture(scope="module")
def template():
    return SelectionTemplate(load_template("gentool")["gentool"])


def supervised_text(row, tok):
    ids = [t for t, lab in zip(row["input_ids"], row["labels"]) if lab != IGNORE_INDEX]
    return tok.decode(ids, skip_special_tokens=False)


@pytest.mark.parametrize("role", ["ranking", "selection", "ranking_selection"])
def test_supervised_tokens_decode_to_the_ranking_or_call_plus_eos(template, bpe_tokenizer, role):
    enc = TextEncoder(bpe_tokenizer, add_bos=True)
    (ex,) = selection_view(template, RECORD, role)
    (row,) = encode_example(ex, enc, 4096, EncodeStats())
    ranking = "tides > tidesLite > generate_response > moonPhase"
    call = 'tides\nArguments: {"harbour": "Porto", "days": 2}'
    want = {"ranking": " " + ranking, "selection": " " + call, "ranking_selection": f" {ranking}\nCall: {call}"}[role]
    assert supervised_text(row, bpe_tokenizer) == want + bpe_tokenizer.eos_token
    # the supervised tokens are the last ones, right after the inference prompt
    prompt = enc.prompt_ids(template.prompt(role, RECORD))
    assert row["input_ids"][:len(prompt)] == prompt
    assert all(lab == IGNORE_INDEX for lab in row["labels"][:len(prompt)])
    assert all(lab != IGNORE_INDEX for lab in row["labels"][len(prompt):])


def test_outputs_parse_back_with_the_same_template(template):
    ranking, call = template.ranking_text(RECORD["ranking"]), template.call_text("tides", '{"harbour": "Porto"}')
    assert template.parse_ranking(ranking) == RECORD["ranking"]
    assert template.parse_call(call) == ("tides", '{"harbour": "Porto"}')
    assert template.parse_joint(ranking + "\nCall:" + call) == (RECORD["ranking"], "tides", '{"harbour": "Porto"}')
    assert template.parse_call("") == (None, "")


@pytest.mark.parametrize("field,change,message", [
    ("ranking", ["tides", "tidesLite", "generate_response"], "every toolset name"),
    ("relevant", ["tidesLite", "tides"], "head the ranking"),
    ("call", {"name": "tidesLite", "arguments": "{}"}, "most relevant tool"),
    ("call", {"name": "tides", "arguments": "[1]"}, "JSON object"),
])
def test_inconsistent_examples_are_refused_naming_the_field(field, change, message):
    bad = copy.deepcopy(RECORD)
    bad[field] = change
    with pytest.raises(TrajectoryError, match=message) as err:
        validate_selection(bad, file="x.jsonl", index=7)
    assert "x.jsonl: record 7" in str(err.value)


def test_datamodule_refuses_selection_examples_in_an_alpha_umi_stage(tmp_path, bpe_tokenizer):
    from datamodules.tool_use_datamodule import ToolUseDataModule
    path = tmp_path / "sel.jsonl"
    path.write_text(json.dumps(RECORD) + "\n")
    tpl = {**load_template(), **load_template("gentool")}
    dm = ToolUseDataModule([{"path": str(path), "format": "selection"}], "caller", tpl, bpe_tokenizer,
                           seed=42, add_bos=True, cache_dir=str(tmp_path / "cache"))
    with pytest.raises(ValueError, match="only GenTool roles"):
        dm.load_split_trajectories()
    dm = ToolUseDataModule([{"path": str(path), "format": "auto"}], "selection", tpl, bpe_tokenizer,
                           seed=42, add_bos=True, val_fraction=0.0, cache_dir=str(tmp_path / "cache"))
    splits = dm.build_splits()
    assert len(splits["train"]) == 1 and dm.stats["train"]["supervised_tokens"] > 0
