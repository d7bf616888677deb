"""The GenTool template (the `template.gentool:` node of a recipe): one rendering of a
tool-selection example for training and inference.

A prompt is the role's system text with the toolset, then the query, then the target's prefix; the
target is the ranking (tool names, best first), the call (tool name and JSON arguments), or both
in one target for the joint role. Parsing a model's output uses the same formats.
"""
from __future__ import annotations

import json
import string
from typing import Mapping

from core.vocabulary import GENTOOL_ROLES
from prompting.prompt_template import EOS, Segment, TemplateError


class SelectionTemplate:
    REQUIRED = ("system", "tool", "query", "ranking", "call", "separator")

    def __init__(self, node: Mapping):
        node = dict(node or {})
        for key in self.REQUIRED:
            if key not in node:
                raise TemplateError(f"template: missing key 'template.gentool.{key}'")
        self.name = node.get("name", "gentool")
        self.system = dict(node["system"])
        for role in GENTOOL_ROLES:
            if role not in self.system:
                raise TemplateError(f"template: missing key 'template.gentool.system.{role}'")
        self.tool, self.query, self.separator = node["tool"], node["query"], node["separator"]
        self.ranking, self.call = dict(node["ranking"]), dict(node["call"])
        for key, fmt in (("ranking", self.ranking), ("call", self.call)):
            if not {"prefix", "body", "suffix"} <= set(fmt):
                raise TemplateError(f"template: 'template.gentool.{key}' needs prefix, body and suffix")
        fields = [f for _, f, _, _ in string.Formatter().parse(self.call["body"]) if f]
        if fields != ["name", "arguments"]:
            raise TemplateError("template: 'template.gentool.call.body' must hold {name} then "
                                f"{{arguments}} (it holds {fields})")
        if not self.separator.strip():
            raise TemplateError("template: 'template.gentool.separator' must not be blank")

    # ----- rendering ------------------------------------------------------------------------
    def render_tools(self, toolset) -> str:
        """Each tool with `tool`: {name}, {description}, {parameters} (the JSON Schema) or
        {parameter_names} (comma-separated, for short prompts)."""
        return "".join(self.tool.format(name=t["name"], description=t["description"],
                                        parameters=json.dumps(t["parameters"], ensure_ascii=False),
                                        parameter_names=", ".join(t["parameters"].get("properties", {})))
                       for t in toolset)

    def header(self, role: str, toolset, query: str) -> list[Segment]:
        system = self.system[role].format(tools=self.render_tools(toolset),
                                          tool_names=", ".join(t["name"] for t in toolset),
                                          separator=self.separator)
        return [Segment(system), Segment(self.query.format(query=query))]

    def ranking_text(self, names) -> str:
        return self.ranking["body"].format(ranking=self.separator.join(names))

    def call_text(self, name: str, arguments: str) -> str:
        return self.call["body"].format(name=name, arguments=arguments)

    def _check_role(self, role: str):
        if role not in GENTOOL_ROLES:
            raise ValueError(f"unknown GenTool role {role!r}; expected one of {', '.join(GENTOOL_ROLES)}")

    def prompt(self, role: str, record: Mapping) -> list[Segment]:
        """Inference (and the context of training): header, query and the target's prefix."""
        self._check_role(role)
        first = self.call if role == "selection" else self.ranking
        segs = self.header(role, record["toolset"], record["query"])
        return segs + ([Segment(first["prefix"])] if first["prefix"] else [])

    def target(self, role: str, record: Mapping) -> list[Segment]:
        """The supervised segments of `role` for a record, ending with EOS."""
        self._check_role(role)
        call = Segment(self.call_text(record["call"]["name"], record["call"]["arguments"]), "action")
        if role == "selection":
            return [call, Segment(EOS, "action")]
        ranking = Segment(self.ranking_text(record["ranking"]), "ranking")
        if role == "ranking":
            return [ranking, Segment(EOS, "ranking")]
        glue = self.ranking["suffix"] + self.call["prefix"]
        return [ranking] + ([Segment(glue, "action")] if glue else []) + [call, Segment(EOS, "action")]

    # ----- parsing a generated target -------------------------------------------------------
    def parse_ranking(self, text: str) -> list[str]:
        text = text.split(self.ranking["suffix"])[0] if self.ranking["suffix"].strip() else text
        first_line = text.strip().splitlines()[0] if text.strip() else ""
        return [n.strip() for n in first_line.split(self.separator.strip()) if n.strip()]

    def parse_call(self, text: str) -> tuple[str | None, str | None]:
        """(tool name, argument text) of a generated call; (None, None) when it has no name."""
        (head, _f1, _, _), (between, _f2, _, _) = list(string.Formatter().parse(self.call["body"]))[:2]
        text = text[len(head):] if head and text.startswith(head) else text
        if between and between in text:
            name, _, args = text.partition(between)
        else:
            name, args = text, ""
        name = name.strip()
        return (name or None), args.strip()

    def parse_joint(self, text: str) -> tuple[list[str], str | None, str | None]:
        """(ranking, name, arguments) of the joint role's output."""
        glue = (self.ranking["suffix"] + self.call["prefix"]) or "\n"
        ranking, _, call = text.partition(glue)
        return self.parse_ranking(ranking), *self.parse_call(call)
