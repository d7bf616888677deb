"""Prompt templates: the one rendering function shared by training and inference.

A template (a `template:` node of a recipe) turns a trajectory into a list of `Segment`s: pieces of
text, each marked with the span kind it belongs to and the role whose target it is. Tokenization
encodes segments one by one, so span boundaries stay exact; inference renders the same segments for
the context and stops where the role's target would begin.
"""
from __future__ import annotations

import json
import string
from dataclasses import dataclass
from typing import Mapping

from core.errors import ProjectError
from core.vocabulary import TRAINED_ROLES as ROLES, TURN_KINDS, TEAM_ROLES

# Which span kind each template field belongs to; literal text takes the kind of the field after it.
FIELD_KINDS = {"thought": "thought", "decision": "thought", "name": "action",
               "arguments": "action", "answer": "answer"}
# Which canonical turn each role is trained to produce; the backbone produces all three.
TARGET_TURNS = {"backbone": TEAM_ROLES, **{role: (role,) for role in TEAM_ROLES}}
GENERATED_TURNS = TEAM_ROLES
EOS = None  # marker text: the tokenizer's end-of-sequence token


@dataclass(frozen=True)
class Segment:
    text: str | None          # None stands for the EOS token
    kind: str = "none"        # one of SPAN_KINDS
    producer: str | None = None  # the canonical turn role that produced it (planner/caller/summarizer)
    turn: int | None = None   # index of that turn in the trajectory's turns


class TemplateError(ProjectError, ValueError):
    pass


class RenderedPrompt(list):
    """An inference prompt: its segments (a list), where its header ends, and whether it is a
    prefix of a folded training sequence, so that it is fitted to the budget exactly as training
    rows are (datamodules.step_context). `folded` is False for a template whose prompts are not
    prefixes of one sequence (cues, step_targets)."""

    def __init__(self, segments, header_len: int, folded: bool, next_turn: str | None = None):
        super().__init__(segments)
        self.header_len, self.folded = header_len, folded
        self.next_turn = next_turn  # the turn the model writes after it (planner/caller/summarizer)


def group_steps(turn_segments) -> list[list[Segment]]:
    """Segments of consecutive turns grouped into steps, as the folded layout groups them: a step
    starts at a planner turn; turns before the first planner turn belong to the first step.
    `turn_segments` yields (role, segments) per turn."""
    steps, current = [], []
    for role, segs in turn_segments:
        if role == "planner" and any(s.producer for s in current):
            steps.append(current)
            current = []
        current += segs
    if current:
        steps.append(current)
    return steps


class PromptTemplate:
    """Renders trajectories for one template node (see recipes/template/*.yaml for the keys)."""

    REQUIRED = ("system", "tool", "instruction", "turns", "decision_words")

    def __init__(self, node: Mapping):
        node = dict(node)
        for key in self.REQUIRED:
            if key not in node:
                raise TemplateError(f"template: missing key 'template.{key}'")
        self.name = node.get("name", "template")
        self.system = dict(node["system"])
        self.tool = node["tool"]
        self.instruction = node["instruction"]
        self.turns = {role: dict(fmt) for role, fmt in node["turns"].items()}
        self.decision_words = dict(node["decision_words"])
        self.observation_error = node.get("observation_error", "")
        self.cues = dict(node.get("cues") or {})
        self.step_targets = {role: dict(v) for role, v in (node.get("step_targets") or {}).items()}
        for role in ROLES:
            if role not in self.system:
                raise TemplateError(f"template: missing key 'template.system.{role}'")
        for role in TURN_KINDS:
            fmt = self.turns.get(role)
            if fmt is None or not {"prefix", "body", "suffix"} <= set(fmt):
                raise TemplateError(f"template: 'template.turns.{role}' needs prefix, body and suffix")

    @property
    def prefix_consistent(self) -> bool:
        """True when each step's prompt is a prefix of the next: required by the folded layout."""
        return not self.cues and not self.step_targets

    # ----- pieces -------------------------------------------------------------------------
    def render_tools(self, tools) -> str:
        return "".join(self.tool.format(name=t["name"], description=t["description"],
                                        parameters=json.dumps(t["parameters"], ensure_ascii=False))
                       for t in tools)

    def header(self, role: str, tools, instruction: str) -> list[Segment]:
        """System prompt (with the tool list) and the instruction: the start of every sequence."""
        system = self.system[role].format(tools=self.render_tools(tools),
                                          tool_names=", ".join(t["name"] for t in tools))
        return [Segment(system), Segment(self.instruction.format(instruction=instruction))]

    def fields(self, turn: Mapping) -> dict:
        f = dict(turn)
        if turn["role"] == "planner":
            f["decision"] = self.decision_words[turn["decision"]]
        if turn["role"] == "observation":
            err = turn.get("error") or ""
            f["error"] = self.observation_error.format(error=err) if err else ""
        return f

    def body(self, fmt: str, fields: Mapping, producer: str | None, turn: int | None) -> list[Segment]:
        """Split a body format into segments, each with the span kind of its field."""
        out, pending = [], ""
        last_kind = "none"
        for literal, field, _spec, _conv in string.Formatter().parse(fmt):
            pending += literal
            if field is None:
                continue
            kind = FIELD_KINDS.get(field, "none") if producer else "none"
            value = str(fields[field])
            if pending:
                out.append(Segment(pending, kind, producer, turn))
                pending = ""
            out.append(Segment(value, kind, producer, turn))
            last_kind = kind
        if pending:
            out.append(Segment(pending, last_kind, producer, turn))
        # Neighbours of one kind become one segment, tokenized as one text: "\nNext: caller." is
        # ["\n", "Next", ":", " call", "er", "."], not an isolated " " then "caller".
        merged: list[Segment] = []
        for seg in (s for s in out if s.text):
            if merged and merged[-1].kind == seg.kind:
                seg = Segment(merged.pop().text + seg.text, seg.kind, producer, turn)
            merged.append(seg)
        return merged

    def turn_segments(self, turn: Mapping, index: int) -> tuple[list, list, list]:
        """(prefix, body + EOS for generated turns, suffix) segments of one canonical turn."""
        role = turn["role"]
        fmt = self.turns[role]
        producer = role if role in GENERATED_TURNS else None
        body = self.body(fmt["body"], self.fields(turn), producer, index)
        if producer:
            body.append(Segment(EOS, body[-1].kind if body else "none", producer, index))
        prefix = [Segment(fmt["prefix"])] if fmt["prefix"] else []
        suffix = [Segment(fmt["suffix"])] if fmt["suffix"] else []
        return prefix, body, suffix

    def cue(self, role: str, trajectory: Mapping, upto: int) -> list[Segment]:
        """Per-step-only text placed after the history (e.g. the caller re-reading the thought)."""
        fmt = self.cues.get(role)
        if not fmt:
            return []
        thought = next((t["thought"] for t in reversed(trajectory["turns"][:upto])
                        if t["role"] == "planner"), "")
        tools = trajectory["tools"]
        return [Segment(fmt.format(thought=thought, tool_names=", ".join(t["name"] for t in tools)))]

    # ----- whole sequences -----------------------------------------------------------------
    def render_history(self, role: str, trajectory: Mapping, upto: int | None = None,
                       start: int = 0) -> list[Segment]:
        """Header plus turns[start:upto] rendered as context-or-target segments, in order."""
        segs = self.header(role, trajectory["tools"], trajectory["instruction"])
        for i, turn in enumerate(trajectory["turns"][start:upto], start):
            prefix, body, suffix = self.turn_segments(turn, i)
            segs += prefix + body + suffix
        return segs

    def turn_steps(self, trajectory: Mapping) -> list[list[Segment]]:
        """Every turn rendered (prefix, body with EOS, suffix) and grouped into steps."""
        return group_steps((t["role"], [s for part in self.turn_segments(t, i) for s in part])
                           for i, t in enumerate(trajectory["turns"]))

    def render_prompt(self, role: str, trajectory: Mapping, next_turn: str) -> RenderedPrompt:
        """Inference: the context for `role` to produce the next turn of kind `next_turn`
        (planner, caller or summarizer) after all of `trajectory['turns']`."""
        header = self.header(role, trajectory["tools"], trajectory["instruction"])
        upto = len(trajectory["turns"])
        prefix = self.turns[next_turn]["prefix"]
        tail = [Segment(prefix)] if prefix else []
        segs = self.render_history(role, trajectory) + self.cue(role, trajectory, upto) + tail
        return RenderedPrompt(segs, len(header), self.prefix_consistent, next_turn)
