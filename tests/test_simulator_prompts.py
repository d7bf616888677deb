"""Reply parsers for the formats the recipe's templates ask for."""
import pytest

from simulators.prompts import (ParseError, parse_assistant_reply, parse_executor_reply,
                                parse_instruction, render)
from simulators.settings import load_settings


def test_call_reply():
    step = parse_assistant_reply("Thought: find facts\nNext: caller.\nAction: getFacts\n"
                                 'Action Input: ```json\n{"limit": 2}\n```\nObservation: made up')
    assert (step.thought, step.decision, step.name, step.arguments) == \
        ("find facts", "call", "getFacts", '{"limit": 2}')


def test_arguments_are_kept_verbatim_even_when_not_json():
    step = parse_assistant_reply("Thought: x\nNext: caller.\nAction: f\nAction Input: {limit: 2")
    assert step.arguments == "{limit: 2"


@pytest.mark.parametrize("reply,decision,text", [
    ("Thought: done\nNext: conclusion.\nFinal Answer: It lives in Mexico.", "conclusion", "It lives in Mexico."),
    ("Thought: which city?\nNext: ask user.\nQuestion: Which city?", "ask", "Which city?"),
    ("Thought: impossible\nNext: give up.", "give_up", ""),
    ("I think so.\nnext: Give up", "give_up", ""),
])
def test_other_decisions(reply, decision, text):
    step = parse_assistant_reply(reply)
    assert (step.decision, step.text) == (decision, text)


@pytest.mark.parametrize("reply", [
    "I will call the API now.",
    "Thought: x\nNext: caller.\nAction Input: {}",
    "Thought: x\nNext: caller.\nAction: f",
    "Thought: x\nNext: conclusion.",
    "Thought: x\nNext: conclusion.\nNext: caller.\nAction: f\nAction Input: {}",
    "Thought: x\nNext: dance.",
])
def test_malformed_assistant_replies(reply):
    with pytest.raises(ParseError):
        parse_assistant_reply(reply)


def test_executor_and_instruction_replies():
    assert parse_executor_reply('Status Code: 404\nResponse: {"error": "no such pet"}') == \
        (404, {"error": "no such pet"})
    assert parse_executor_reply("Status Code: 200\nResponse:\n```json\n[1, 2]\n```") == (200, [1, 2])
    with pytest.raises(ParseError):
        parse_executor_reply("Status Code: 200\nResponse: sure, here it is")
    assert parse_instruction('Instruction: "Find me a pet."') == "Find me a pet."
    with pytest.raises(ParseError):
        parse_instruction("Instruction:   ")


def test_every_recipe_template_renders():
    s = load_settings({})
    values = dict(api_name="A", api_description="d", tools="t", focus="f", style="s", index=1,
                  instruction="i", question="q", observation="o", answer="a", error="e", name="n",
                  method="GET", path="/", description="d", parameters="{}", arguments="{}",
                  response_schema="{}", history="", max_functions=3, functions="[]", errors="e")
    for name, template in s["prompts"].items():
        assert "{{" not in render(template, **values), name
    with pytest.raises(KeyError, match="api_name"):
        render(s["prompts"]["assistant"])
