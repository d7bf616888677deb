"""Template rendering and reply parsing. The templates themselves live in the recipe YAML.

Placeholders are `{{name}}` (not `{name}`, so JSON in a template needs no escaping, and not
`${name}`, which OmegaConf would try to resolve).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass

PLACEHOLDER = re.compile(r"\{\{\s*(\w+)\s*\}\}")
NEXT = re.compile(r"^[ \t]*\**Next:?\**[ \t]*(caller|conclusion|give[ \t]*up|ask[ \t]*user)[ \t]*\.?[ \t]*$",
                  re.I | re.M)
DECISIONS = {"caller": "call", "conclusion": "conclusion", "giveup": "give_up", "askuser": "ask"}


class ParseError(ValueError):
    """A reply that does not follow its template's format."""


def render(template: str, **values) -> str:
    def sub(m):
        if m.group(1) not in values:
            raise KeyError(f"template placeholder {{{{{m.group(1)}}}}} has no value")
        return str(values[m.group(1)])
    return PLACEHOLDER.sub(sub, template)


def describe_tools(tools: list[dict]) -> str:
    return "\n".join(f"- {t['name']}: {t['description']}\n  parameters: "
                     f"{json.dumps(t['parameters'], ensure_ascii=False)}" for t in tools)


@dataclass
class Step:
    thought: str
    decision: str  # call | conclusion | give_up | ask
    name: str = ""
    arguments: str = ""
    text: str = ""  # the final answer or the clarifying question


def parse_assistant_reply(text: str) -> Step:
    found = list(NEXT.finditer(text))
    if len(found) != 1:
        raise ParseError(f"expected exactly one 'Next: ...' line, found {len(found)}")
    m = found[0]
    decision = DECISIONS[re.sub(r"\s+", "", m.group(1).lower())]
    thought = re.sub(r"^\s*\**Thought:?\**\s*", "", text[:m.start()], flags=re.I).strip()
    # Anything the model writes after its turn (a made-up observation) is not part of it.
    tail = re.split(r"^\s*Observation:", text[m.end():], maxsplit=1, flags=re.M)[0]
    if decision == "call":
        action = re.search(r"^[ \t]*Action:[ \t]*(\S.*?)[ \t]*$", tail, re.M)
        if not action:
            raise ParseError("a 'Next: caller.' reply needs an 'Action: <function name>' line")
        given = re.search(r"^[ \t]*Action Input:", tail, re.M)
        if not given:
            raise ParseError("a 'Next: caller.' reply needs an 'Action Input: <JSON>' line")
        arguments = strip_fences(tail[given.end():].strip()) or "{}"
        return Step(thought, decision, name=action.group(1).strip("`'\" "), arguments=arguments)
    if decision in ("conclusion", "ask"):
        label = "Final Answer" if decision == "conclusion" else "Question"
        found = re.search(rf"^[ \t]*{label}:[ \t]*", tail, re.M)
        body = tail[found.end():].strip() if found else ""
        if not body:
            raise ParseError(f"a '{m.group(0).strip()}' reply needs a non-empty '{label}:'")
        return Step(thought, decision, text=body)
    return Step(thought, decision)


def strip_fences(text: str) -> str:
    m = re.fullmatch(r"```[\w-]*\s*\n?(.*?)\n?```", text.strip(), re.S)
    return m.group(1).strip() if m else text.strip()


def extract_json(text: str):
    """The first JSON value in `text` (fenced or bare); raise ParseError if there is none."""
    text = strip_fences(text)
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    starts = [i for i in (text.find("{"), text.find("[")) if i >= 0]
    if starts:
        try:
            return json.JSONDecoder().raw_decode(text[min(starts):])[0]
        except json.JSONDecodeError as exc:
            raise ParseError(f"invalid JSON: {exc.msg}") from None
    raise ParseError("no JSON found")


def parse_executor_reply(text: str) -> tuple[int, object]:
    status = re.search(r"Status Code:\s*(\d{3})", text, re.I)
    body = re.search(r"Response:", text, re.I)
    if not status or not body:
        raise ParseError("expected 'Status Code: <code>' and 'Response: <JSON>'")
    return int(status.group(1)), extract_json(text[body.end():])


def parse_instruction(text: str) -> str:
    m = re.search(r"Instruction:\s*", text, re.I)
    out = (text[m.end():] if m else text).strip().strip('"').strip()
    if not out:
        raise ParseError("empty instruction")
    return out
