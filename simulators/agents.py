"""The three simulated parties: the user, the assistant (planner / caller / summarizer in one
model) and the API server. Their prompts are templates in the recipe YAML (`prompts:`).

Every agent adds what it costs and what went wrong to a `counters` Counter (per instance).
"""
from __future__ import annotations

import json
from collections import Counter

from omegaconf import OmegaConf

from .call_validation import check_call, http_error
from core.llm_client import LLMClient, run_sync
from .openapi_toolset import Toolset
from .prompts import (ParseError, Step, describe_tools, parse_assistant_reply, parse_executor_reply,
                      parse_instruction, render)
from .settings import load_settings


async def ask(llm: LLMClient, messages: list[dict], counters: Counter, cfg, seed=None) -> str:
    reply = await llm.chat(messages, temperature=cfg.get("temperature"),
                           max_tokens=cfg.get("max_tokens"), seed=seed)
    counters["llm_calls"] += 1
    counters["retries"] += reply.retries
    counters["prompt_tokens"] += reply.prompt_tokens
    counters["completion_tokens"] += reply.completion_tokens
    return reply.text


class UserAgent:
    def __init__(self, llm: LLMClient, prompts, cfg):
        self.llm, self.prompts, self.cfg = llm, prompts, cfg

    async def instruction(self, toolset: Toolset, index: int, counters: Counter, seed=None) -> str:
        tools = list(toolset.tools.values())
        styles = list(self.cfg["styles"])
        # Walk the (focus function, style) grid so consecutive instances differ in both.
        prompt = render(self.prompts["user_instruction"], api_name=toolset.name,
                        api_description=toolset.description,
                        tools=describe_tools(toolset.canonical_tools()),
                        focus=tools[index % len(tools)].name,
                        style=styles[(index // len(tools)) % len(styles)], index=index + 1)
        for _ in range(int(self.cfg["parse_retries"]) + 1):
            text = await ask(self.llm, [{"role": "user", "content": prompt}], counters, self.cfg, seed)
            try:
                return parse_instruction(text)
            except ParseError:
                counters["instruction_parse_failures"] += 1
        raise ParseError("the user agent wrote no instruction")

    async def answer(self, instruction: str, question: str, counters: Counter, seed=None) -> str:
        prompt = render(self.prompts["user_answer"], instruction=instruction, question=question)
        text = await ask(self.llm, [{"role": "user", "content": prompt}], counters, self.cfg, seed)
        return text.strip() or "I don't know."


class AssistantAgent:
    def __init__(self, llm: LLMClient, prompts, cfg):
        self.llm, self.prompts, self.cfg = llm, prompts, cfg

    def start(self, toolset: Toolset, instruction: str) -> list[dict]:
        system = render(self.prompts["assistant"], api_name=toolset.name,
                        tools=describe_tools(toolset.canonical_tools()))
        return [{"role": "system", "content": system}, {"role": "user", "content": instruction}]

    async def step(self, messages: list[dict], counters: Counter, seed=None) -> Step:
        """One reply, parsed; a reply that breaks the format is re-asked (without keeping it)."""
        retry: list[dict] = []
        for _ in range(int(self.cfg["parse_retries"]) + 1):
            text = await ask(self.llm, messages + retry, counters, self.cfg, seed)
            try:
                step = parse_assistant_reply(text)
            except ParseError as exc:
                counters["parse_failures"] += 1
                retry = [{"role": "assistant", "content": text},
                         {"role": "user", "content": render(self.prompts["format_error"], error=exc)}]
                continue
            messages.append({"role": "assistant", "content": text})
            return step
        raise ParseError("the assistant's replies did not follow the format")

    def observe(self, messages: list[dict], result: dict):
        text = result["content"] if not result.get("error") else result["error"]
        messages.append({"role": "user", "content": render(self.prompts["observation"], observation=text)})

    def hear(self, messages: list[dict], answer: str):
        messages.append({"role": "user", "content": render(self.prompts["user_reply"], answer=answer)})


class SimulatedToolExecutor:
    """Plays an API: checks each call against the spec, then has the LLM answer it with a status
    and a JSON body shaped by the response schema. `execute(name, arguments)` returns
    {"content": str, "error": str} (content on 2xx, error otherwise). One instance per episode:
    it remembers the session's earlier calls so that answers stay consistent."""

    def __init__(self, toolset: Toolset, llm: LLMClient, settings):
        self.toolset, self.llm = toolset, llm
        self.prompts, self.cfg, self.validation = settings["prompts"], settings["executor"], settings["validation"]
        self.counters: Counter = Counter()
        self.history: list[str] = []

    @classmethod
    def from_settings(cls, settings, toolset: Toolset) -> "SimulatedToolExecutor":
        settings = OmegaConf.to_container(load_settings(settings), resolve=True)
        return cls(toolset, LLMClient(settings["llm"]), settings)

    def reset(self):
        self.history = []

    def execute(self, name: str, arguments: str) -> dict:
        """Synchronous form (from any thread), on the LLM client's shared background loop; call
        `aexecute` from async code."""
        return run_sync(self.aexecute(name, arguments))

    def close(self):
        run_sync(self.llm.aclose())

    async def aexecute(self, name: str, arguments: str, counters: Counter | None = None,
                       seed=None) -> dict:
        counters = self.counters if counters is None else counters
        args, error = check_call(self.toolset, name, arguments, **self.validation)
        if error:
            counters["invalid_calls"] += 1
            return {"content": "", "error": error}
        tool = self.toolset.tools[name]
        schema = tool.response_schema
        prompt = render(self.prompts["executor"], api_name=self.toolset.name,
                        api_description=self.toolset.description, name=name, method=tool.method.upper(),
                        path=tool.path, description=tool.description,
                        parameters=json.dumps(tool.parameters, ensure_ascii=False),
                        arguments=json.dumps(args, ensure_ascii=False),
                        response_schema=json.dumps(schema, ensure_ascii=False) if schema else "any JSON",
                        history="\n".join(self.history[-int(self.cfg["max_history"]):]) or "(none)")
        messages = [{"role": "user", "content": prompt}]
        kept = None
        for _ in range(int(self.cfg["retries"]) + 1):
            text = await ask(self.llm, messages, counters, self.cfg, seed)
            try:
                status, body = parse_executor_reply(text)
                problem = self._mismatch(schema, status, body)
            except ParseError as exc:
                counters["executor_parse_failures"] += 1
                problem = str(exc)
            else:
                if not problem:
                    return self._result(name, args, status, body)
                counters["executor_schema_mismatches"] += 1
                kept = (status, body)
            messages += [{"role": "assistant", "content": text},
                         {"role": "user", "content": render(self.prompts["executor_fix"], error=problem)}]
        if kept is not None and self.cfg["on_mismatch"] == "keep":
            counters["executor_mismatches_kept"] += 1
            return self._result(name, args, *kept)
        counters["executor_failures"] += 1
        return {"content": "", "error": http_error(500, "the simulated server gave no usable response")}

    def _mismatch(self, schema, status: int, body) -> str:
        if not 200 <= status < 300 or not schema:
            return ""
        err = next(iter(self.toolset.validator_class(schema).iter_errors(body)), None)
        if err is None:
            return ""
        where = "/".join(map(str, err.absolute_path)) or "<root>"
        return f"the response body at {where} does not match the response schema: {err.message}"

    def _result(self, name: str, args: dict, status: int, body) -> dict:
        text = json.dumps(body, ensure_ascii=False)
        self.history.append(f"- {name}({json.dumps(args, ensure_ascii=False)}) -> {status} {text}")
        if 200 <= status < 300:
            return {"content": text, "error": ""}
        return {"content": "", "error": http_error(status, text)}
