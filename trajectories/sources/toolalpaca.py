"""ToolAlpaca sources: training records (`Instances` with `intermediate_steps`) and the evaluation
sets (`Instructions` + `Golden_Answers`, turned into reference-only trajectories).

Tools come from the OpenAPI `Documentation` (or, without one, `Function_Description`), plus
ToolAlpaca's `getDetails` pseudo-tool, which its agent always offers (it asks the user for
missing details) and which golden answers and training steps call.
"""
from __future__ import annotations

import json
import re
from functools import partial

from .canonical import as_text, assemble, fail, source_records, take

SOURCE = "toolalpaca"
GET_DETAILS = {
    "name": "getDetails",
    "description": "Ask the user for critical details missing from the request.",
    "parameters": {"type": "object", "required": ["Question"], "properties": {
        "Question": {"type": "string", "description": "The question to ask the user."}}},
}
JSON_TYPES = ("string", "integer", "number", "boolean", "array", "object")
METHODS = ("get", "post", "put", "patch", "delete", "head", "options", "trace")
OPTIONAL = "[Optional]"  # golden-answer prefix for a call the reference considers optional


# ---- record iterators --------------------------------------------------------------------------

def training_records(data, file):
    """One trajectory per element of each API record's `Instances`."""
    yield from _per_item(data, file, "Instances", _training)


def eval_records(data, file):
    """One reference-only trajectory per element of each API record's `Instructions`."""
    yield from _per_item(data, file, "Instructions", _reference)


def _per_item(data, file, key, convert):
    number = 0
    for index, api in source_records(data):
        items = api.get(key) if isinstance(api, dict) else None
        if not isinstance(items, list):
            yield partial(take, api, key, list, file=file, index=index, field=key)
            continue
        tools = _Memo(partial(api_tools, api, file=file, index=index))
        for k in range(len(items)):
            yield partial(convert, api, k, tools, file=file, index=index, number=number)
            number += 1


class _Memo:
    """Build an API's tools once for all of its trajectories (errors are raised every time)."""

    def __init__(self, build):
        self.build, self.value = build, None

    def __call__(self):
        if self.value is None:
            self.value = self.build()
        return self.value


# ---- converters --------------------------------------------------------------------------------

def _training(api, k, tools, *, file, index, number) -> dict:
    at = dict(file=file, index=index)
    tools, recovered = tools()
    names = {tool["name"] for tool in tools}
    where = f"Instances[{k}]"
    inst = api["Instances"][k]
    text = take(inst, "input", str, field=f"{where}.input", **at)
    steps = take(inst, "intermediate_steps", list, field=f"{where}.intermediate_steps",
                 default=[], **at)
    turns, origins = [], []
    for j, step in enumerate(steps):
        step_at = f"{where}.intermediate_steps[{j}]"
        try:
            (action, action_input, log), observation = step
        except (TypeError, ValueError):
            raise fail("malformed_step", "expected [[action, action_input, thought_log], "
                       "observation]", field=step_at, **at) from None
        name = _tool_name(action, names, f"{step_at}[0][0]", **at)
        new = [{"role": "planner", "thought": _thought(as_text(log)), "decision": "call"},
               {"role": "caller", "name": name, "arguments": as_text(action_input)},
               {"role": "observation", "content": as_text(observation)}]
        turns += new
        origins += [step_at] * len(new)
    output = take(inst, "output", str, field=f"{where}.output", **at)
    if not output.strip():
        raise fail("empty_target", "empty final answer", field=f"{where}.output", **at)
    final_thought = take(inst, "Final Thought", str, field=f"{where}.Final Thought", default="",
                         **at)
    turns += [{"role": "planner", "thought": final_thought.strip(), "decision": "conclusion"},
              {"role": "summarizer", "answer": output}]
    origins += [f"{where}.output"] * 2
    meta = {"api": api.get("Name"), "api_index": index, "instance_index": k}
    if recovered:
        meta["recovered_tools"] = recovered
    # ToolAlpaca appends "\nHint: ..." to some inputs; its own training code cuts it off.
    return assemble(source=SOURCE, tools=tools, instruction=text.rsplit("\nHint: ", 1)[0].strip(),
                    turns=turns, origins=origins, meta=meta, number=number, **at)


def _reference(api, k, tools, *, file, index, number) -> dict:
    """Golden calls only: a planner turn with an empty thought + a caller turn per call."""
    at = dict(file=file, index=index)
    tools, recovered = tools()
    names = {tool["name"] for tool in tools}
    instruction = api["Instructions"][k]
    if not isinstance(instruction, str) or not instruction.strip():
        raise fail("missing_field", "empty instruction", field=f"Instructions[{k}]", **at)
    golden = take(api, "Golden_Answers", list, field="Golden_Answers", **at)
    if k >= len(golden) or not isinstance(golden[k], list):
        raise fail("missing_field", "no golden answer list for this instruction",
                   field=f"Golden_Answers[{k}]", **at)
    turns, origins, optional = [], [], []
    for j, call in enumerate(golden[k]):
        where = f"Golden_Answers[{k}][{j}]"
        action = take(call, "Action", str, field=f"{where}.Action", **at).strip()
        if action.startswith(OPTIONAL):
            action = action[len(OPTIONAL):].strip()
            optional.append(j)
        name = _tool_name(action, names, f"{where}.Action", **at)
        arguments = as_text(take(call, "Action_Input", (str, dict), field=f"{where}.Action_Input",
                                 **at))
        turns += [{"role": "planner", "thought": "", "decision": "call"},
                  {"role": "caller", "name": name, "arguments": arguments}]
        origins += [where] * 2
    meta = {"reference_only": True, "api": api.get("Name"), "api_index": index,
            "instruction_index": k}
    if optional:
        meta["optional_calls"] = optional
    if recovered:
        meta["recovered_tools"] = recovered
    return assemble(source=SOURCE, tools=tools, instruction=instruction.strip(), turns=turns,
                    origins=origins, meta=meta, number=number, **at)


def _tool_name(action, names, where, *, file, index) -> str:
    name = action.strip() if isinstance(action, str) else ""
    if not name:
        raise fail("empty_target", "empty tool name", file=file, index=index, field=where)
    if name not in names:
        raise fail("unknown_tool", f"call to tool {name!r}, which is not in the API's tools",
                   file=file, index=index, field=where)
    return name


def _thought(log: str) -> str:
    """The agent's output is "Thought...\\nAction: NAME\\nAction Input: ARGS": keep the thought."""
    return re.split(r"(?:^|\n)\s*Action\s*:", log, maxsplit=1)[0].strip()


# ---- tools -------------------------------------------------------------------------------------

def api_tools(api, *, file, index) -> tuple[list[dict], list[str]]:
    """(tools, names of recovered operations) for one API record."""
    at = dict(file=file, index=index)
    doc = take(api, "Documentation", (str, dict), field="Documentation", default=None, **at)
    if doc is None:
        descriptions = take(api, "Function_Description", dict, field="Function_Description", **at)
        return [*_tools_from_descriptions(descriptions), GET_DETAILS], []
    if isinstance(doc, str):
        try:
            doc = json.loads(doc)
        except json.JSONDecodeError as exc:
            raise fail("invalid_json", f"Documentation is not JSON: {exc.msg}",
                       field="Documentation", **at) from None
    paths = take(doc, "paths", dict, field="Documentation.paths", **at)
    tools, recovered = openapi_tools(doc, paths)
    return [*tools, GET_DETAILS], recovered


def openapi_tools(doc: dict, paths: dict) -> tuple[list[dict], list[str]]:
    tools, recovered, seen = [], [], set()
    for path, method, op, shared, nested in _operations(paths):
        # ToolAlpaca names an operation without operationId after its path and method.
        name = op.get("operationId") or \
            re.sub(r"[{}]", "", path).strip("/").replace("/", "_") + "_" + method
        if name in seen:
            continue
        seen.add(name)
        if nested:
            recovered.append(name)
        tools.append({"name": name, "description": op.get("description") or op.get("summary") or "",
                      "parameters": _parameters(op, shared, doc)})
    return tools, recovered


def _operations(paths: dict, nested: bool = False):
    """Yield (path, method, operation, path-level parameters, nested) for every operation."""
    for path, item in paths.items():
        if not isinstance(item, dict):
            continue
        for key, value in item.items():
            if key in METHODS and isinstance(value, dict):
                yield path, key, value, item.get("parameters") or [], nested
            elif key.startswith("/") and isinstance(value, dict):
                # An upstream nesting bug (AviationAPI in eval_real.json) put path items inside
                # another path item; the golden answers call those operations, so recover them.
                yield from _operations({key: value}, nested=True)


def _parameters(op: dict, shared: list, doc: dict) -> dict:
    """JSON Schema of a call's arguments: the operation's parameters (any `in`) and the properties
    of its JSON request body, flattened into one object, as ToolAlpaca's caller passes them."""
    properties, required = {}, []
    for param in [*shared, *(op.get("parameters") or [])]:
        param = _deref(param, doc)
        if not isinstance(param, dict) or not isinstance(param.get("name"), str):
            continue
        schema = dict(param.get("schema") or {})
        if param.get("description") and "description" not in schema:
            schema["description"] = param["description"]
        properties[param["name"]] = schema
        if (param.get("required") or param.get("in") == "path") and param["name"] not in required:
            required.append(param["name"])
    body = _deref(op.get("requestBody") or {}, doc)
    content = body.get("content") if isinstance(body, dict) else None
    media = (content.get("application/json") or next(iter(content.values()), None)
             if isinstance(content, dict) and content else None)
    body = (media.get("schema") if isinstance(media, dict) else None) or {}
    properties.update(body.get("properties") or {})
    required += [name for name in body.get("required") or [] if name not in required]
    return {"type": "object", "properties": properties, "required": required}


def _deref(node, doc, seen=frozenset()):
    """Resolve local "#/..." $refs (recursively); cyclic or unresolvable ones become {}."""
    if isinstance(node, list):
        return [_deref(item, doc, seen) for item in node]
    if not isinstance(node, dict):
        return node
    ref = node.get("$ref")
    if isinstance(ref, str):
        target = doc if ref.startswith("#/") and ref not in seen else None
        for part in ref[2:].split("/") if target is not None else ():
            target = target.get(part) if isinstance(target, dict) else None
        return _deref(target, doc, seen | {ref}) if isinstance(target, dict) else {}
    return {key: _deref(value, doc, seen) for key, value in node.items()}


def _tools_from_descriptions(descriptions: dict) -> list[dict]:
    """Function_Description entries look like 'What it does\\nParameters: {"p": "Required.
    string. ..."}\\nOutput: ...'; the `components` entry is shared text, not a function."""
    tools = []
    for name, text in descriptions.items():
        if name == "components" or not isinstance(text, str):
            continue
        description, _, rest = text.partition("\nParameters: ")
        try:
            params = json.loads(rest.partition("\nOutput:")[0] or "{}")
        except json.JSONDecodeError:
            params = {}
        properties, required = {}, []
        for param, spec in (params if isinstance(params, dict) else {}).items():
            match = re.match(r"(?:(Required|Optional)\.\s*)?(\w+)\.\s*(.*)", str(spec), re.S)
            typ = match.group(2).lower() if match else ""
            if match and match.group(1) == "Required":
                required.append(param)
            properties[param] = ({"type": typ, "description": match.group(3)} if typ in JSON_TYPES
                                 else {"type": "string", "description": str(spec)})
        tools.append({"name": name, "description": description.strip(),
                      "parameters": {"type": "object", "properties": properties,
                                     "required": required}})
    return tools
