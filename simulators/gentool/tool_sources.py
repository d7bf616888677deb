"""Base tools and their single-tool cases (query + the call that answers it), from any source the
repo reads: trajectories in any loader format (a trajectory that calls exactly one tool is a case),
ToolAlpaca records with OpenAPI specs, and ToolBench tool documents (`api_list`)."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from core.repo_paths import resolve_data_path
from trajectories.sources import load_trajectories

from ..openapi_toolset import SpecError, toolset_from_toolalpaca

SOURCE_TYPES = ("trajectories", "toolalpaca", "toolbench_tools")
_TOOLBENCH_TYPES = {"STRING": "string", "NUMBER": "number", "INTEGER": "integer", "BOOLEAN": "boolean"}


@dataclass
class BaseTool:
    tool: dict                                   # {name, description, parameters}
    cases: list[tuple[str, dict]] = field(default_factory=list)   # (query, arguments)
    # Tools offered with it by the same API (trajectory, spec or tool document): they may serve
    # its queries too, so they are never its distractors.
    siblings: set[str] = field(default_factory=set)


def load_base_tools(sources: list, skipped: dict) -> dict[str, BaseTool]:
    """{tool name: BaseTool}, first definition of a name wins; unusable records are counted in
    `skipped` by reason."""
    tools: dict[str, BaseTool] = {}

    def add(tool: dict) -> BaseTool:
        params = tool.get("parameters") or {"type": "object", "properties": {}}
        return tools.setdefault(tool["name"], BaseTool({"name": tool["name"],
                                                        "description": tool.get("description") or "",
                                                        "parameters": params}))

    def family(names):
        for n in names:
            tools[n].siblings.update(m for m in names if m != n)

    for src in sources:
        kind = src.get("type")
        path = resolve_data_path(src["path"])
        if kind == "trajectories":
            res = load_trajectories(path, format=src.get("format", "auto"), on_error="skip")
            for reason, n in res.skip_reasons.items():
                skipped[f"source_{reason}"] = skipped.get(f"source_{reason}", 0) + n
            for traj in res.trajectories:
                for t in traj["tools"]:
                    add(t)
                family([t["name"] for t in traj["tools"]])
                calls = [t for t in traj["turns"] if t["role"] == "caller"]
                if not calls or len({c["name"] for c in calls}) != 1:
                    continue
                try:
                    args = json.loads(calls[0]["arguments"] or "{}")
                except json.JSONDecodeError:
                    skipped["case_arguments_not_json"] = skipped.get("case_arguments_not_json", 0) + 1
                    continue
                if isinstance(args, dict) and calls[0]["name"] in tools:
                    tools[calls[0]["name"]].cases.append((traj["instruction"], args))
        elif kind == "toolalpaca":
            for rec in json.loads(path.read_text(encoding="utf-8")):
                try:
                    ts = toolset_from_toolalpaca(rec, str(path))
                except SpecError:
                    skipped["invalid_spec"] = skipped.get("invalid_spec", 0) + 1
                    continue
                for t in ts.tools.values():
                    add({"name": t.name, "description": t.description, "parameters": t.parameters})
                family(list(ts.tools))
        elif kind == "toolbench_tools":
            files = sorted(path.rglob("*.json")) if path.is_dir() else [path]
            for f in files:
                doc = json.loads(f.read_text(encoding="utf-8"))
                for d in doc if isinstance(doc, list) else [doc]:
                    found = toolbench_tools(d)
                    for t in found:
                        add(t)
                    family([t["name"] for t in found])
        else:
            raise ValueError(f"gentool sources: unknown type {kind!r} (expected one of {', '.join(SOURCE_TYPES)})")
    return tools


def toolbench_tools(doc) -> list[dict]:
    """Tools of a ToolBench tool document ({tool_name, tool_description, api_list}) or a list of them."""
    out = []
    for d in doc if isinstance(doc, list) else [doc]:
        tool = _snake(d.get("tool_name") or d.get("name") or "tool")
        for api in d.get("api_list") or []:
            props, required = {}, []
            for group, is_required in (("required_parameters", True), ("optional_parameters", False)):
                for p in api.get(group) or []:
                    props[p["name"]] = {"type": _TOOLBENCH_TYPES.get(str(p.get("type", "")).upper(), "string"),
                                        "description": p.get("description") or ""}
                    if is_required:
                        required.append(p["name"])
            out.append({"name": f"{_snake(api['name'])}_for_{tool}",
                        "description": api.get("description") or d.get("tool_description") or "",
                        "parameters": {"type": "object", "properties": props, "required": required}})
    return out


def _snake(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_") or "tool"
