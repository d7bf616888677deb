"""The LLM generator: weak variants, queries, flipped queries and call arguments through any
OpenAI-compatible endpoint (core.llm_client), with the prompts of the recipe's `prompts:` node.

A reply that cannot be parsed is asked again (`parse_retries`) and counted; a weak variant that is
not a valid tool schema and arguments that break the tool's parameters are rejected and counted
by reason. Nothing malformed is fatal: the pair or the query is left out.
"""
from __future__ import annotations

import json
from collections import Counter

from core.llm_client import LLMClient

from ..prompts import ParseError, extract_json, render
from .offline import weak_arguments
from .validation import arguments_problem, tool_problem


class LLMGenerator:
    def __init__(self, llm: LLMClient, cfg: dict):
        self.llm, self.cfg = llm, cfg
        self.prompts, self.gen = cfg["prompts"], cfg["llm_generation"]

    async def _json(self, prompt: str, counters: Counter, want: type):
        """The first JSON value of a reply, of type `want`; None after the retries."""
        messages = [{"role": "user", "content": prompt}]
        for _ in range(int(self.gen["parse_retries"]) + 1):
            reply = await self.llm.chat(messages, temperature=float(self.gen["temperature"]),
                                        max_tokens=int(self.gen["max_tokens"]))
            try:
                value = extract_json(reply.text)
                if isinstance(value, want):
                    return value
                problem = f"expected a JSON {'object' if want is dict else 'array'}"
            except ParseError as exc:
                problem = str(exc)
            counters["malformed_reply"] += 1
            messages += [{"role": "assistant", "content": reply.text},
                         {"role": "user", "content": render(self.prompts["fix_format"], problem=problem)}]
        return None

    async def weak_variant(self, tool: dict, counters: Counter) -> tuple[dict | None, str]:
        weak = await self._json(render(self.prompts["weak_variant"], tool=_js(tool)), counters, dict)
        if weak is None:
            return None, "weak_variant_unparseable"
        weak = {k: weak.get(k) for k in ("name", "description", "parameters")}
        problem = tool_problem(weak, strong=tool)
        return (None, f"weak_{problem}") if problem else (weak, "")

    async def queries(self, tool: dict, n: int, counters: Counter) -> list[str]:
        if n <= 0:
            return []
        out = await self._json(render(self.prompts["queries"], tool=_js(tool), n=n), counters, list)
        return [q.strip() for q in out or [] if isinstance(q, str) and q.strip()][:n]

    async def flipped(self, strong: dict, weak: dict, n: int, counters: Counter) -> list[str]:
        out = await self._json(render(self.prompts["flipped_queries"], strong=_js(strong),
                                      weak=_js(weak), n=n), counters, list)
        return [q.strip() for q in out or [] if isinstance(q, str) and q.strip()][:n]

    async def arguments(self, query: str, tool: dict, counters: Counter) -> dict | None:
        args = await self._json(render(self.prompts["arguments"], query=query, tool=_js(tool)),
                                counters, dict)
        if args is None:
            counters["arguments_unparseable"] += 1
            return None
        problem = arguments_problem(tool, args)
        if problem:
            counters[problem] += 1
            return None
        return args

    async def pair(self, base, n_queries: int, n_flipped: int, counters: Counter) -> tuple[dict | None, str]:
        """A pair record (strong, weak, original and flipped queries with arguments), or
        (None, reason) when the weak variant cannot be had."""
        strong = base.tool
        weak, reason = await self.weak_variant(strong, counters)
        if weak is None:
            return None, reason
        originals = []
        for query, args in base.cases[:n_queries]:
            problem = arguments_problem(strong, args)
            if problem:
                counters[f"source_{problem}"] += 1
                continue
            originals.append((query, args))
        for query in await self.queries(strong, n_queries - len(originals), counters):
            args = await self.arguments(query, strong, counters)
            if args is not None:
                originals.append((query, args))
        rows = []
        for query, args in originals:
            wargs = weak_arguments(weak, args)
            if arguments_problem(weak, wargs):
                wargs = await self.arguments(query, weak, counters)
            if wargs is not None:
                rows.append({"query": query, "args": args, "weak_args": wargs})
        flipped = []
        for query in await self.flipped(strong, weak, n_flipped, counters):
            args = await self.arguments(query, weak, counters)
            if args is not None:
                flipped.append({"query": query, "args": args})
        if not rows and not flipped:
            return None, "no_valid_queries"
        return {"strong": strong, "weak": weak, "originals": rows, "flipped": flipped}, ""


def _js(obj) -> str:
    return json.dumps(obj, ensure_ascii=False)
