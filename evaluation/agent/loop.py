"""Live agent runs: planner -> caller -> tool -> observation -> ... -> summarizer (or give up).

An episode is a generator (`episode_steps`) that yields what it needs next — a `TeamRequest`
(the planner, caller or summarizer member acts on the trajectory so far: team.py) or a
`ToolRequest` (a call for the tool executor: evaluation/episodes/executors.py) — and is sent the
answer. `run_episode` drives one episode at a time; the episodes runner
(evaluation/episodes/runner.py) drives many at once and batches their requests. Either way the
result is a schema-valid canonical trajectory with `meta.termination` (conclusion / give_up /
max_steps / unparseable_plan / invalid_call; the runner adds error) and the raw outputs.

A canonical trajectory cannot hold a call to a tool it does not offer, so an unparseable caller
output or a call to an unknown tool ends the episode (`invalid_call`, details in meta) after the
planner's call turn.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Generator, Mapping, Protocol, Union

from trajectories.trajectory import validate_trajectory

from .team import Team

class ToolExecutor(Protocol):
    """What answers an episode's tool calls (evaluation/episodes/executors.py has the kinds):
    `{"content": str, "error": str}` for a call (optionally `close()` and a `counters` mapping)."""
    def execute(self, name: str, arguments: str) -> dict: ...


@dataclass(frozen=True)
class TeamRequest:
    """The member playing `role` (planner / caller / summarizer) acts on `trajectory`."""
    role: str
    trajectory: dict


@dataclass(frozen=True)
class ToolRequest:
    """A tool call for the episode's executor."""
    name: str
    arguments: str


Request = Union[TeamRequest, ToolRequest]
TERMINATIONS = ("conclusion", "give_up", "max_steps", "unparseable_plan", "invalid_call", "error")


def task_of(trajectory: Mapping) -> dict:
    """The start of an episode: id, tools, instruction and the user turns before the first
    generated turn of a recorded trajectory (its meta kept for the executor and the judge)."""
    lead = []
    for turn in trajectory["turns"]:
        if turn["role"] != "user":
            break
        lead.append(copy.deepcopy(turn))
    task = {"id": trajectory["id"], "tools": copy.deepcopy(trajectory["tools"]),
            "instruction": trajectory["instruction"], "turns": lead}
    if trajectory.get("meta"):
        task["meta"] = copy.deepcopy(trajectory["meta"])
    return task


def new_trajectory(task: Mapping, max_steps: int) -> dict:
    return {"id": task["id"], "tools": copy.deepcopy(task["tools"]),
            "instruction": task["instruction"], "turns": copy.deepcopy(list(task.get("turns", []))),
            "meta": {"termination": None, "steps": 0, "max_steps": max_steps, "outputs": [],
                     "lead_turns": len(task.get("turns", []))}}


def finish(traj: dict, termination: str, **extra) -> dict:
    meta = traj["meta"]
    meta["steps"] = sum(1 for t in traj["turns"][meta["lead_turns"]:] if t["role"] == "planner")
    meta.update(termination=termination, **extra)
    return traj


def episode_steps(traj: dict) -> Generator[Request, object, dict]:
    """Run agent steps on `traj` (from new_trajectory, filled in place) until a conclusion, a
    give-up or `meta.max_steps` planner turns; return the validated trajectory."""
    outputs = traj["meta"]["outputs"]
    tool_names = {t["name"] for t in traj["tools"]}
    for _ in range(traj["meta"]["max_steps"]):
        plan = yield TeamRequest("planner", traj)
        outputs.append({"role": "planner", "raw": plan.planner.raw})
        turn = plan.turn
        if turn is None:
            return validate_trajectory(finish(traj, "unparseable_plan"))
        traj["turns"].append(turn)
        if turn["decision"] == "give_up":
            return validate_trajectory(finish(traj, "give_up"))
        if turn["decision"] == "conclusion":
            if plan.merged:
                answer = plan.answer or ""
            else:
                answer, raw = yield TeamRequest("summarizer", traj)
                outputs.append({"role": "summarizer", "raw": raw})
            traj["turns"].append({"role": "summarizer", "answer": answer})
            return validate_trajectory(finish(traj, "conclusion"))
        call = plan.call if plan.merged else (yield TeamRequest("caller", traj))
        if not plan.merged:
            outputs.append({"role": "caller", "raw": call.raw if call else ""})
        if call is None or call.name is None or (tool_names and call.name not in tool_names):
            bad = {"name": call.name if call else None, "arguments": call.arguments if call else None,
                   "raw": call.raw if call else ""}
            return validate_trajectory(finish(traj, "invalid_call", invalid_call=bad))
        traj["turns"].append({"role": "caller", "name": call.name, "arguments": call.arguments})
        result = yield ToolRequest(call.name, call.arguments)
        obs = {"role": "observation", "content": str(result.get("content") or "")}
        if result.get("error"):
            obs["error"] = str(result["error"])
        traj["turns"].append(obs)
    return validate_trajectory(finish(traj, "max_steps"))


def answer_request(team: Team, executor: ToolExecutor, request: Request):
    """The answer to one request of an episode, asked alone (no batching)."""
    if isinstance(request, ToolRequest):
        return executor.execute(request.name, request.arguments)
    return team.act(request.role, [request.trajectory])[0]


def run_episode(team: Team, task: Mapping, executor: ToolExecutor, max_steps: int = 8) -> dict:
    """One episode, start to end; returns the canonical trajectory (validated) with meta
    {termination, steps, max_steps, outputs, ...}."""
    steps = episode_steps(new_trajectory(task, max_steps))
    request = next(steps)
    while True:
        try:
            request = steps.send(answer_request(team, executor, request))
        except StopIteration as done:
            return done.value
