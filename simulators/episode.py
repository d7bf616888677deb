"""One instance: the user writes an instruction, the assistant works on it step by step against
the simulated API, and the result becomes a canonical trajectory (or a rejection reason)."""
from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass

from trajectories.trajectory import TrajectoryError, validate_trajectory

from .agents import AssistantAgent, SimulatedToolExecutor, UserAgent
from core.llm_client import LLMClient
from .openapi_toolset import Toolset
from .prompts import ParseError


def instance_id(api_name: str, index: int, seed: int) -> str:
    return hashlib.sha256(f"{api_name}\n{index}\n{seed}".encode()).hexdigest()[:16]


@dataclass
class Instance:
    id: str
    toolset: Toolset
    index: int
    seed: int  # per instance, derived from the id; sent to the LLM when llm.send_seed


def plan_instances(toolsets: list[Toolset], settings) -> list[Instance]:
    out = []
    for ts in toolsets:
        for i in range(int(settings["instructions_per_api"])):
            iid = instance_id(ts.name, i, int(settings["seed"]))
            out.append(Instance(iid, ts, i, int(iid[:8], 16)))
    return out


class Episode:
    def __init__(self, llm: LLMClient, settings):
        self.llm, self.settings = llm, settings
        self.user = UserAgent(llm, settings["prompts"], settings["user"])
        self.assistant = AssistantAgent(llm, settings["prompts"], settings["assistant"])

    async def run(self, inst: Instance, counters: Counter) -> tuple[dict | None, str]:
        """(record, "") for a kept instance, (None, reason) for a filtered one.
        LLMError (retries exhausted) propagates: the instance is not done and a rerun retries it."""
        s, ts = self.settings, inst.toolset
        try:
            instruction = await self.user.instruction(ts, inst.index, counters, inst.seed)
        except ParseError:
            return None, "instruction_parse_failure"
        executor = SimulatedToolExecutor(ts, self.llm, s)
        messages = self.assistant.start(ts, instruction)
        turns: list[dict] = []
        questions = 0
        for _ in range(int(s["assistant"]["max_steps"])):
            try:
                step = await self.assistant.step(messages, counters, inst.seed)
            except ParseError:
                return None, "parse_failure"
            if step.decision == "call":
                result = await executor.aexecute(step.name, step.arguments, counters, inst.seed)
                turns += [{"role": "planner", "thought": step.thought, "decision": "call"},
                          {"role": "caller", "name": step.name, "arguments": step.arguments},
                          {"role": "observation", "content": result["content"], "error": result["error"]}]
                self.assistant.observe(messages, result)
            elif step.decision == "ask":
                # A clarifying question is the summarizer speaking to the user; the user's answer
                # is a new user turn, and the planner goes on from there.
                if questions >= int(s["user"]["max_clarifications"]):
                    return None, "too_many_questions"
                questions += 1
                counters["clarifications"] += 1
                answer = await self.user.answer(instruction, step.text, counters, inst.seed)
                turns += [{"role": "planner", "thought": step.thought, "decision": "conclusion"},
                          {"role": "summarizer", "answer": step.text},
                          {"role": "user", "content": answer}]
                self.assistant.hear(messages, answer)
            else:
                turns.append({"role": "planner", "thought": step.thought, "decision": step.decision})
                if step.decision == "conclusion":
                    turns.append({"role": "summarizer", "answer": step.text})
                return self._finish(inst, instruction, turns, counters)
        return None, "too_many_steps"

    def _finish(self, inst: Instance, instruction: str, turns: list[dict], counters: Counter):
        filters = self.settings["filters"]
        if turns[-1].get("decision") == "give_up" and not filters["keep_give_up"]:
            return None, "give_up"
        if sum(t["role"] == "caller" for t in turns) < int(filters["min_calls"]):
            return None, "no_calls"
        record = {"id": inst.id, "source": "simulator", "tools": inst.toolset.canonical_tools(),
                  "instruction": instruction, "turns": turns,
                  "meta": {"api": inst.toolset.name, "index": inst.index, "seed": inst.seed}}
        try:
            validate_trajectory(record)
        except TrajectoryError:
            return None, "invalid_trajectory"
        return record, ""
