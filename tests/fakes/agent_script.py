"""Scripted agent, tool executor and judge for the episodes runner, as rules of the fake server.

The agent replays each task's golden calls (found by the task's instruction in the prompt), one
per step, then concludes; `wrong_calls(instruction)` makes its calls carry a wrong argument,
`wrong_answer(instruction)` its final answer a non-answer. The judge compares the solution's calls
with the golden process (Process) and says Answer: Yes when the process matched and the final
response is an answer.
"""
from __future__ import annotations

import re

PLANNER, CALLER, SUMMARIZER = "Planner:", "Caller:", "Conclusion:"  # prompts end at the header
JUDGE = "You grade an assistant"
EXECUTOR = "You play the server"


def _instruction(prompt: str) -> str:
    m = re.search(r"^Task: (.*)$", prompt, re.M)
    return m.group(1) if m else ""


def agent_reply(golden: dict, wrong_calls=lambda i: False, wrong_answer=lambda i: False):
    """golden: {instruction: [(name, arguments), ...]} -> a /completions reply function."""
    def reply(body):
        prompt = body["prompt"]
        calls = golden[_instruction(prompt)]
        done = prompt.count("\nObservation: ")
        if prompt.endswith(PLANNER):
            if done < len(calls):
                return "I need the next function.\nNext: caller.</s>"
            return "I have what I need.\nNext: conclusion.</s>"
        if prompt.endswith(CALLER):
            name, args = calls[done]
            if wrong_calls(_instruction(prompt)):
                args = '{"no_such_argument": 1}'
            return f"Action: {name}\nAction Input: {args}</s>"
        if wrong_answer(_instruction(prompt)):
            return "Sorry, I cannot tell.</s>"
        return f"Done: {_instruction(prompt)[:30]}</s>"
    return reply


def judge_reply(body) -> str:
    text = body["messages"][0]["content"]
    ref = text.split("A reference solution", 1)[1].split("What the assistant did", 1)
    golden = re.findall(r"^\d+\. (.*?)(?: \[optional\])?$", ref[0], re.M)
    steps = re.findall(r"^Step \d+: (.*)$", ref[1], re.M)
    answer = "Final response: Done" in ref[1] and golden == steps
    return (f"Process: {'Yes' if golden == steps else 'No'}\n"
            f"Answer: {'Yes' if answer else 'No'}\nReasons: scripted.")


def rules(golden: dict, wrong_calls=lambda i: False, wrong_answer=lambda i: False, extra=()) -> list[dict]:
    return [*extra,
            {"match": JUDGE, "reply": judge_reply},
            {"match": EXECUTOR, "reply": 'Status Code: 200\nResponse: {"ok": true}'},
            {"match": "Task: ", "reply": agent_reply(golden, wrong_calls, wrong_answer)}]
