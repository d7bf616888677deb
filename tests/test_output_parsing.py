import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from prompting.prompt_template import PromptTemplate
from evaluation.agent.output_parsing import OutputParser

TEMPLATES = Path(__file__).resolve().parents[1] / "recipes/template"


def load_template(name: str) -> dict:
    return OmegaConf.to_container(OmegaConf.load(TEMPLATES / f"{name}.yaml"))["template"]


@pytest.fixture(scope="module")
def glpft():
    return OutputParser(PromptTemplate(load_template("glpft")))


@pytest.fixture(scope="module")
def reference():
    return OutputParser(PromptTemplate(load_template("alpha_umi_reference")))


@pytest.mark.parametrize("text, thought, decision", [
    ("I should look up the weather.\nNext: caller.", "I should look up the weather.", "call"),
    ("I have it all.\nNext: conclusion.", "I have it all.", "conclusion"),
    ("Nothing works.\nNext: give up.", "Nothing works.", "give_up"),
    ("Next: give up.", "", "give_up"),
    ("thinking\n  next:   Caller", "thinking", "call"),           # case, spaces, no "."
    ("thinking\nNext: give_up.", "thinking", "give_up"),      # canonical spelling
    ("a Next: caller. b\nNext: conclusion.", "a Next: caller. b", "conclusion"),  # last wins
    ("caller.", "", "call"),                                      # bare decision word
    ("thought\nconclusion", "thought", "conclusion"),
])
def test_planner_well_formed_and_lenient(glpft, text, thought, decision):
    out = glpft.parse_planner(text)
    assert (out.thought, out.decision, out.raw) == (thought, decision, text)


@pytest.mark.parametrize("text", ["", None, "just some thought without a marker",
                                  "thought\nNext: the moon.", "\x00\x01 ### }{", "callers are fun",
                                  "Next:"])
def test_planner_unparseable(glpft, text):
    out = glpft.parse_planner(text)
    assert out.decision is None
    assert isinstance(out.thought, str)


def test_planner_thought_is_text_before_marker(glpft):
    out = glpft.parse_planner("Let me think.\nThe API needs a city.\nNext: caller.")
    assert out.thought == "Let me think.\nThe API needs a city."


def test_caller_well_formed(glpft):
    out = glpft.parse_caller('Action: get_weather\nAction Input: {"city": "Paris"}')
    assert (out.name, out.arguments) == ("get_weather", '{"city": "Paris"}')
    assert json.loads(out.arguments) == {"city": "Paris"}


@pytest.mark.parametrize("text, name, arguments", [
    ("Action: get_weather", "get_weather", "{}"),                              # no input
    ("Action: get_weather\nAction Input:", "get_weather", "{}"),               # empty input
    ('Action:  `get_weather` \nAction Input: {"a": 1} trailing junk', "get_weather", '{"a": 1}'),
    ('action: f\naction input: {"a": [1, 2]}\n\nmore', "f", '{"a": [1, 2]}'),  # case
    ('get_weather\nAction Input: {"a": 1}', "get_weather", '{"a": 1}'),        # name marker missing
    ("Action: f\nAction Input: {not json", "f", "{not json"),                   # kept verbatim
])
def test_caller_lenient(glpft, text, name, arguments):
    out = glpft.parse_caller(text)
    assert (out.name, out.arguments) == (name, arguments)


@pytest.mark.parametrize("text", ["", None, "I will call the weather API", "Action:\nAction Input: {}",
                                  "Action Input: {}", "Some prose\nwith lines\nAction Input: {}"])
def test_caller_unparseable(glpft, text):
    out = glpft.parse_caller(text)
    assert out.name is None and out.arguments is None


def test_summarizer(glpft):
    assert glpft.parse_summarizer("  The answer is 42.\n") == "The answer is 42."
    assert glpft.parse_summarizer(None) == ""


def test_reference_template_markers(reference):
    # the α-UMi reference template writes "\n Next: caller." (a space after the newline)
    out = reference.parse_planner("I need data.\n Next: caller.")
    assert (out.thought, out.decision) == ("I need data.", "call")


@pytest.mark.parametrize("text, decision, name, args, answer", [
    ('I look it up.\nAction: search\nAction Input: {"q": "x"}', "call", "search", '{"q": "x"}', None),
    ("Done.\nconclusion: It is sunny.", "conclusion", None, None, "It is sunny."),
    ("Nothing worked.\nconclusion: give up.", "give_up", None, None, None),
    ("junk", None, None, None, None),
])
def test_merged_backbone_outputs(reference, text, decision, name, args, answer):
    out = reference.parse_merged(text, "backbone")
    assert out.planner.decision == decision
    assert (out.call.name if out.call else None) == name
    assert (out.call.arguments if out.call else None) == args
    assert out.answer == answer


def test_round_trip_of_rendered_turns(glpft):
    """What the template renders for a turn parses back to the turn's fields."""
    tpl = PromptTemplate(load_template("glpft"))
    for decision in ("call", "conclusion", "give_up"):
        turn = {"role": "planner", "thought": "Multi-line\nthought.", "decision": decision}
        _, body, _ = tpl.turn_segments(turn, 0)
        text = "".join(s.text for s in body if s.text is not None)
        out = glpft.parse_planner(text)
        assert (out.thought, out.decision) == (turn["thought"], decision)
    turn = {"role": "caller", "name": "f_1", "arguments": '{"k": "v"}'}
    _, body, _ = tpl.turn_segments(turn, 0)
    out = glpft.parse_caller("".join(s.text for s in body if s.text is not None))
    assert (out.name, out.arguments) == ("f_1", '{"k": "v"}')
