"""An LLM judge of whole episodes, on any OpenAI-compatible endpoint (core/llm_client.py: the
simulator's client, retries and key handling), with the prompts in the episodes config YAML.

Two kinds, one machinery:
- `process_answer` (ToolAlpaca's Proc. / Ans.): the judge sees the API documentation, the
  instruction, the golden process (function + arguments per step) and the agent's solution (calls,
  arguments, returns, final response) and answers `Process:` and `Answer:`, each Yes / No /
  Uncertain;
- `pass_rate` (ToolEval style, ToolBench instructions): the judge sees the tools, the instruction
  and the solution and answers `Solved:` Yes / No / Uncertain.
An unparseable verdict is re-asked (`reask` times) with the format reminder, then counted as
`unparseable`. Episodes whose termination is in `fail_without_judging` (a crash, the step limit)
are not sent: they fail, as ToolAlpaca counts them.
"""
from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from typing import Mapping, Sequence

from core.llm_client import LLMClient, run_sync
from simulators.prompts import render

from .. import EvaluationError

KINDS = {"process_answer": ("process", "answer"), "pass_rate": ("solved",)}
WORLD_KIND = "world"  # verdicts computed by the tool world (simulators/world/verdicts.py), no LLM
JUDGE_KINDS = (*KINDS, WORLD_KIND)  # what an episodes config's judge.kind may say
LABELS = {"process": "Process", "answer": "Answer", "solved": "Solved"}
VALUES = ("yes", "no", "uncertain")


class Judge:
    def __init__(self, cfg: Mapping, documentation: Mapping[str, str] | None = None,
                 client: LLMClient | None = None):
        self.cfg = dict(cfg)
        self.kind = self.cfg.get("kind", "process_answer")
        if self.kind not in KINDS:
            raise EvaluationError(f"judge.kind {self.kind!r}: expected one of {', '.join(KINDS)}")
        self.fields = KINDS[self.kind]
        self.prompts = self.cfg["prompts"]
        self.documentation = dict(documentation or {})
        self.llm = client or LLMClient(self.cfg["llm"])

    def verdict(self, reference: Mapping | None, trajectory: Mapping) -> dict:
        return run_sync(self.averdict(reference, trajectory))

    async def averdict(self, reference: Mapping | None, trajectory: Mapping) -> dict:
        messages = [{"role": "user", "content": self.prompt(reference, trajectory)}]
        text, calls = "", 0
        for attempt in range(int(self.cfg.get("reask", 1)) + 1):
            reply = await self.llm.chat(messages, temperature=self.cfg["llm"].get("temperature"),
                                        max_tokens=self.cfg["llm"].get("max_tokens"))
            text, calls = reply.text, calls + 1
            parsed = self.parse(text)
            if parsed is not None:
                return {**parsed, "asks": attempt + 1, "llm_calls": calls, "raw": text}
            messages += [{"role": "assistant", "content": text},
                         {"role": "user", "content": self.prompts["fix"]}]
        return {**{f: "unparseable" for f in self.fields}, "asks": calls, "llm_calls": calls,
                "raw": text}

    def parse(self, text: str) -> dict | None:
        out = {}
        for f in self.fields:
            m = re.search(rf"^[\W_]*{LABELS[f]}[\w ]*?[\W_]*[:：][\W_]*(yes|no|uncertain)\b",
                          text, re.I | re.M)
            if not m:
                return None
            out[f] = m.group(1).lower()
        return out

    def prompt(self, reference: Mapping | None, trajectory: Mapping) -> str:
        api = (trajectory.get("meta") or {}).get("api") or ((reference or {}).get("meta") or {}).get("api")
        docs = self.documentation.get(api) or describe_tools(trajectory["tools"])
        values = {"documentation": docs, "instruction": trajectory["instruction"],
                  "solution": solution_text(trajectory, int(self.cfg.get("max_observation_chars", 2000))),
                  "final_answer": final_answer(trajectory)}
        if self.kind == "process_answer":
            values["golden"] = golden_text(reference)
        return render(self.prompts[self.kind], **values)


def describe_tools(tools: Sequence[Mapping]) -> str:
    return "\n".join(f"- {t['name']}: {t.get('description', '')}\n  parameters: "
                     f"{json.dumps(t.get('parameters', {}), ensure_ascii=False)}" for t in tools)


def golden_text(reference: Mapping | None) -> str:
    if not reference:
        return "(no golden process given)"
    optional = set((reference.get("meta") or {}).get("optional_calls") or [])
    calls = [t for t in reference["turns"] if t["role"] == "caller"]
    lines = [f"{i + 1}. {t['name']}({t['arguments']})" + (" [optional]" if i in optional else "")
             for i, t in enumerate(calls)]
    return "\n".join(lines) or "(no function calls)"


def solution_text(traj: Mapping, max_chars: int) -> str:
    lines, n = [], 0
    for turn in traj["turns"][(traj.get("meta") or {}).get("lead_turns", 0):]:
        if turn["role"] == "caller":
            n += 1
            lines.append(f"Step {n}: {turn['name']}({turn['arguments']})")
        elif turn["role"] == "observation":
            text = turn.get("error") or turn.get("content") or ""
            text = text if len(text) <= max_chars else text[:max_chars] + " [...]"
            lines.append(f"  returned: {text}")
    lines.append(f"Final response: {final_answer(traj)}")
    return "\n".join(lines)


def final_answer(traj: Mapping) -> str:
    last = traj["turns"][-1] if traj["turns"] else {}
    if last.get("role") == "summarizer":
        return last["answer"]
    term = (traj.get("meta") or {}).get("termination")
    return "(none: the agent gave up)" if term == "give_up" else f"(none: the episode ended with {term})"


def api_documentation(path) -> dict[str, str]:
    """{API name: its natural-language documentation} from ToolAlpaca API records, if any."""
    try:
        records = json.loads(open(path, encoding="utf-8").read())
    except (OSError, ValueError):
        return {}
    if not isinstance(records, list):
        return {}
    return {r["Name"]: r.get("NLDocumentation") or r.get("Documentation") or ""
            for r in records if isinstance(r, dict) and "Name" in r}


def judge_metrics(records: Sequence[Mapping], kind: str, uncertain_credit: float = 0.0) -> dict:
    """Proc. / Ans. / both (or the pass rate) in percent over all records; a missing verdict (a
    crash, the step limit, a judge error) counts as no. Per-API breakdowns for process_answer."""
    fields = KINDS[kind]

    def value(rec, f):
        v = rec.get("verdict") or {}
        if not v:
            return "not_judged"  # a crash or the step limit: a failure without asking
        return v.get(f) or ("judge_error" if "error" in v else "unparseable")

    def pct(n, total):
        return round(100.0 * n / total, 2) if total else None

    def block(recs):
        n = len(recs)
        if kind == "pass_rate":
            yes = sum(value(r, "solved") == "yes" for r in recs)
            unsure = sum(value(r, "solved") == "uncertain" for r in recs)
            return {"n": n, "pass_rate": pct(yes + uncertain_credit * unsure, n)}
        proc = [value(r, "process") == "yes" for r in recs]
        ans = [value(r, "answer") == "yes" for r in recs]
        return {"n": n, "proc": pct(sum(proc), n), "ans": pct(sum(ans), n),
                "both": pct(sum(p and a for p, a in zip(proc, ans)), n)}

    out = block(records)
    out["verdicts"] = {f: dict(sorted(Counter(value(r, f) for r in records).items())) for f in fields}
    if kind == "process_answer":
        by_api = defaultdict(list)
        for r in records:
            by_api[r.get("api") or "?"].append(r)
        out["per_api"] = {api: block(rs) for api, rs in sorted(by_api.items())}
    return out
