"""ToolBench sources: native answer records, and the α-UMi `chains` and `conversations` forms.

Assistant messages that carry no decision (no `function_call` in the message forms, no
"Next: ..." marker in the conversation form) are not planner steps. The α-UMi reference drops
them, and so do we: their indices (into `chains` / `conversations` / the train messages) are kept
in `meta.unmarked_turns`. In the conversation form an unmarked turn directly followed by a
caller or conclusion turn gets the decision those imply (call / conclusion) and is kept. An
assistant message with neither a thought nor a decision is malformed (empty_target).
"""
from __future__ import annotations

import json
import re
from functools import partial

from .canonical import as_text, assemble, fail, source_records, take

SOURCE = "toolbench"
FINISH = "Finish"
# ToolBench / RapidAPI parameter types -> JSON Schema types; anything unknown becomes "string".
TYPE_MAP = {"string": "string", "str": "string", "enum": "string", "date": "string",
            "time": "string", "integer": "integer", "int": "integer", "number": "number",
            "float": "number", "double": "number", "boolean": "boolean", "bool": "boolean",
            "array": "array", "list": "array", "object": "object", "dict": "object"}
# The marker follows the thought after "\n " (regenerated training data) or " " (test set).
MARKER = re.compile(r"(?:^|\n | )Next: (caller|conclusion|give up)\.\s*$")
DECISIONS = {"caller": "call", "conclusion": "conclusion", "give up": "give_up"}
CALLER = re.compile(r"Action: (.*?)\nAction Input: (.*)", re.S)


# ---- record iterators (one per format): one build() per record ----------------------------

def answer_records(data, file):
    """ToolBench native answer files: `answer_generation` with query, function, train_messages."""
    for index, record in source_records(data):
        yield partial(_answer, record, file, index)


def chains_records(data, file):
    for index, record in source_records(data):
        yield partial(_chains, record, file, index)


def conversations_records(data, file):
    for index, record in source_records(data):
        yield partial(conversation_trajectory, record, file, index)


# ---- converters --------------------------------------------------------------------------------

def _answer(record, file, index) -> dict:
    at = dict(file=file, index=index)
    gen = take(record, "answer_generation", dict, field="answer_generation", **at)
    if gen.get("valid_data") is False and not gen.get("train_messages"):
        # ToolBench keeps failed searches in its answer files, without their messages.
        raise fail("invalid_answer", "valid_data is false and there are no train_messages "
                   "(ToolBench's record of a failed search); nothing to train on",
                   field="answer_generation.valid_data", **at)
    tools = convert_tools(take(gen, "function", list, field="answer_generation.function", **at),
                          field="answer_generation.function", **at)
    all_messages = take(gen, "train_messages", list, field="answer_generation.train_messages", **at)
    if not all_messages:
        raise fail("missing_field", "no message list", field="answer_generation.train_messages",
                   **at)
    # Each list is one step's full prompt history; the last one holds the whole trajectory.
    prefix = f"answer_generation.train_messages[{len(all_messages) - 1}]"
    messages = all_messages[-1]
    if not isinstance(messages, list):
        raise fail("wrong_type", "expected a list of messages", field=prefix, **at)
    query = take(gen, "query", str, field="answer_generation.query", default="", **at)
    instruction, turns, origins, unmarked = _from_messages(messages, tools, prefix, query.strip(),
                                                           **at)
    meta = {"unmarked_turns": unmarked} if unmarked else {}
    if "valid_data" in gen:
        meta["valid_data"] = gen["valid_data"]
    return assemble(source=SOURCE, tools=tools, instruction=instruction, turns=turns,
                    origins=origins, meta=meta, **at)


def _chains(record, file, index) -> dict:
    at = dict(file=file, index=index)
    tools = convert_tools(take(record, "tools", list, field="tools", **at), field="tools", **at)
    messages = take(record, "chains", list, field="chains", **at)
    instruction, turns, origins, unmarked = _from_messages(messages, tools, "chains", **at)
    return assemble(source=SOURCE, tools=tools, instruction=instruction, turns=turns,
                    origins=origins, meta={"unmarked_turns": unmarked} if unmarked else None, **at)


def conversation_trajectory(record, file, index) -> dict:
    """One α-UMi conversation record as a canonical trajectory (evaluation reads test sets so too)."""
    at = dict(file=file, index=index)
    tools = convert_tools(take(record, "tools", list, field="tools", **at), field="tools", **at)
    names = {tool["name"] for tool in tools}
    conv = take(record, "conversations", list, field="conversations", **at)
    instruction, turns, origins, unmarked, implied = None, [], [], [], []
    for i, item in enumerate(conv):
        where = f"conversations[{i}]"
        role = take(item, "from", str, field=f"{where}.from", **at)
        value = take(item, "value", str, field=f"{where}.value", **at)
        if role == "user":
            if instruction is None:
                instruction = _strip_wrapper(value)
                continue
            new = [{"role": "user", "content": value}]
        elif role == "assistant":
            marker = MARKER.search(value)
            if marker:
                thought, decision = value[:marker.start()], DECISIONS[marker.group(1)]
            else:
                unmarked.append(i)
                following = conv[i + 1].get("from") if i + 1 < len(conv) and isinstance(
                    conv[i + 1], dict) else None
                decision = {"caller": "call", "conclusion": "conclusion"}.get(following)
                if decision is None:
                    if not value.strip():
                        raise fail("empty_target", "assistant turn has neither a thought nor a "
                                   "'Next:' marker", field=f"{where}.value", **at)
                    continue
                thought = value
                implied.append(len(turns))
            new = [{"role": "planner", "thought": thought, "decision": decision}]
        elif role == "caller":
            call = CALLER.fullmatch(value)
            if not call:
                raise fail("malformed_call", "expected 'Action: NAME\\nAction Input: ARGS'",
                           field=f"{where}.value", **at)
            new = [_caller(call.group(1), call.group(2), names, f"{where}.value", **at)]
        elif role == "observation":
            new = [{"role": "observation", "content": value}]
        elif role == "conclusion":
            if not value.strip():
                raise fail("empty_target", "empty final answer", field=f"{where}.value", **at)
            new = [{"role": "summarizer", "answer": value}]
        else:
            raise fail("unknown_role", f"unknown turn role {role!r} (expected user, assistant, "
                       "caller, observation or conclusion)", field=f"{where}.from", **at)
        turns += new
        origins += [where] * len(new)
    if not instruction:
        raise fail("missing_field", "no user turn holding the instruction", field="conversations",
                   **at)
    meta = {"unmarked_turns": unmarked} if unmarked else {}
    if implied:
        meta["implied_decision_turns"] = implied  # canonical indices of kept unmarked turns
    return assemble(source=SOURCE, tools=tools, instruction=instruction, turns=turns,
                    origins=origins, meta=meta or None, **at)


def _from_messages(messages, tools, prefix, query="", *, file, index):
    """OpenAI-style messages (system/user/assistant/function) -> (instruction, turns, origins,
    unmarked assistant-message indices). The first user message is the instruction (`query`
    stands in for it if there is none)."""
    at = dict(file=file, index=index)
    names = {tool["name"] for tool in tools}
    instruction, turns, origins, unmarked = None, [], [], []
    for i, msg in enumerate(messages):
        where = f"{prefix}[{i}]"
        role = take(msg, "role", str, field=f"{where}.role", **at)
        content = take(msg, "content", str, field=f"{where}.content", default="", **at)
        if role == "system":
            continue
        if role == "user":
            if instruction is None:
                instruction = _strip_wrapper(content)
                continue
            new = [{"role": "user", "content": content}]
        elif role == "assistant":
            call = take(msg, "function_call", dict, field=f"{where}.function_call", default={},
                        **at)
            if not call:
                if not content.strip():
                    raise fail("empty_target", "assistant message has neither a thought nor a "
                               "function call", field=f"{where}.content", **at)
                unmarked.append(i)
                continue
            new = _decision(content, call, names, f"{where}.function_call", **at)
        elif role == "function":
            new = [_observation(content)]
        else:
            raise fail("unknown_role", f"unknown message role {role!r} (expected system, user, "
                       "assistant or function)", field=f"{where}.role", **at)
        turns += new
        origins += [where] * len(new)
    instruction = instruction or query
    if not instruction:
        raise fail("missing_field", "no user message holding the instruction", field=prefix, **at)
    return instruction, turns, origins, unmarked


def _decision(thought, call, names, where, *, file, index) -> list[dict]:
    at = dict(file=file, index=index)
    name = take(call, "name", str, field=f"{where}.name", **at)
    arguments = as_text(take(call, "arguments", (str, dict), field=f"{where}.arguments", **at))
    if name != FINISH:
        return [{"role": "planner", "thought": thought, "decision": "call"},
                _caller(name, arguments, names, f"{where}.name", **at)]
    try:
        finish = json.loads(arguments)
    except json.JSONDecodeError as exc:
        raise fail("invalid_json", f"Finish arguments are not JSON: {exc.msg}",
                   field=f"{where}.arguments", **at) from None
    return_type = take(finish, "return_type", str, field=f"{where}.arguments.return_type", **at)
    if return_type == "give_up_and_restart":
        return [{"role": "planner", "thought": thought, "decision": "give_up"}]
    if return_type != "give_answer":
        raise fail("invalid_value", f"unknown Finish return_type {return_type!r}",
                   field=f"{where}.arguments.return_type", **at)
    answer = finish.get("final_answer")
    if not isinstance(answer, str) or not answer.strip():
        raise fail("empty_target", "empty final answer",
                   field=f"{where}.arguments.final_answer", **at)
    return [{"role": "planner", "thought": thought, "decision": "conclusion"},
            {"role": "summarizer", "answer": answer}]


def _caller(name, arguments, names, where, *, file, index) -> dict:
    if not name.strip():
        raise fail("empty_target", "empty tool name", file=file, index=index, field=where)
    if name not in names:
        raise fail("unknown_tool", f"call to tool {name!r}, which is not in the record's tools",
                   file=file, index=index, field=where)
    return {"role": "caller", "name": name, "arguments": arguments}


def _observation(content: str) -> dict:
    """ToolBench function output is JSON {"error", "response"}; anything else (e.g. the many
    outputs ToolBench truncated to 1024 characters) is kept verbatim."""
    try:
        parsed = json.loads(content)
    except ValueError:
        parsed = None
    if not (isinstance(parsed, dict) and set(parsed) == {"error", "response"}):
        return {"role": "observation", "content": content}
    turn = {"role": "observation", "content": as_text(parsed["response"])}
    if parsed["error"]:
        turn["error"] = as_text(parsed["error"])
    return turn


def _strip_wrapper(text: str) -> str:
    """ToolBench wraps the query as "\\n{query}\\nBegin!\\n"."""
    text = text.strip()
    return text[:-len("Begin!")].rstrip() if text.endswith("Begin!") else text


# ---- tools -------------------------------------------------------------------------------------

def convert_tools(raw: list, *, file, index, field) -> list[dict]:
    """Compact {Name, function, input:{param: "type, description"}} or native OpenAI function specs
    {name, description, parameters} -> canonical tools; the Finish pseudo-tool is dropped."""
    tools = []
    for i, tool in enumerate(raw):
        where = f"{field}[{i}]"
        if isinstance(tool, dict) and "Name" in tool:
            name = take(tool, "Name", str, field=f"{where}.Name", file=file, index=index)
            params = take(tool, "input", dict, field=f"{where}.input", default={}, file=file,
                          index=index)
            converted = {"name": name, "description": as_text(tool.get("function") or ""),
                         "parameters": {"type": "object", "required": [], "properties": {
                             p: _compact_param(spec) for p, spec in params.items()}}}
        else:
            name = take(tool, "name", str, field=f"{where}.name", file=file, index=index)
            converted = {"name": name, "description": as_text(tool.get("description") or ""),
                         "parameters": take(tool, "parameters", dict, field=f"{where}.parameters",
                                            default={"type": "object", "properties": {}},
                                            file=file, index=index)}
        if not name.strip():
            raise fail("missing_field", "empty tool name", file=file, index=index, field=where)
        if name != FINISH:
            tools.append(converted)
    return tools


def _compact_param(spec) -> dict:
    if isinstance(spec, dict):
        return spec
    typ, _, description = str(spec).partition(",")
    return {"type": TYPE_MAP.get(typ.strip().lower(), "string"), "description": description.strip()}
