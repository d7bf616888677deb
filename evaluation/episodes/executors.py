"""Tool executors: anything with `execute(name, arguments) -> {"content": str, "error": str}`
(and optionally `close()` and a `counters` mapping). One executor per episode.

- `ReplayExecutor`: answers from a recorded canonical trajectory (ToolBench static sets);
- simulated: the simulator's LLM-played API (simulators.SimulatedToolExecutor), from
  each API's OpenAPI spec (ToolAlpaca's `eval_simulated.json`);
- `HttpExecutor` (http_executor.py): real HTTP calls built from the spec, off unless asked for;
- world: the tool world's deterministic APIs (simulators/world), from its world.json.
`executor_factory(cfg, test_file, recorded)` turns the episodes config's `executor:` node into a
function task -> executor.
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Callable, Mapping

from .. import EvaluationError

EXECUTOR_TYPES = ("simulated", "http", "replay", "world")


def _args_key(arguments) -> str:
    try:
        value = json.loads(arguments) if isinstance(arguments, str) else arguments
        return json.dumps(value, sort_keys=True, ensure_ascii=False)
    except (ValueError, TypeError):
        return str(arguments).strip()


class ReplayExecutor:
    """Answers calls from a recorded canonical trajectory: the recorded observation of the same
    call (name and arguments, compared as JSON); else the next unused recorded call of the same
    name, in order; else an error observation."""

    def __init__(self, trajectory: Mapping):
        turns = trajectory["turns"]
        self.records = []
        for i, turn in enumerate(turns):
            if turn["role"] == "caller":
                obs = turns[i + 1] if i + 1 < len(turns) and turns[i + 1]["role"] == "observation" else None
                self.records.append({"name": turn["name"], "key": _args_key(turn["arguments"]),
                                     "content": obs["content"] if obs else "",
                                     "error": (obs.get("error") or "") if obs else "no recorded observation"})
        self.used = [False] * len(self.records)
        self.log: list[dict] = []

    def execute(self, name: str, arguments: str) -> dict:
        key = _args_key(arguments)
        match, how = None, "error"
        exact = [i for i, r in enumerate(self.records) if r["name"] == name and r["key"] == key]
        if exact:
            match = next((i for i in exact if not self.used[i]), exact[0])
            how = "exact"
        else:
            match = next((i for i, r in enumerate(self.records)
                          if r["name"] == name and not self.used[i]), None)
            how = "order" if match is not None else "error"
        self.log.append({"name": name, "arguments": arguments, "match": how, "record": match})
        if match is None:
            return {"content": "", "error": f"replay: no recorded response for a call to {name!r} "
                                            f"with arguments {arguments}"}
        self.used[match] = True
        rec = self.records[match]
        return {"content": rec["content"], "error": rec["error"]}


class WithPseudoTools:
    """An API executor plus replies for pseudo-tools that no spec has (ToolAlpaca's agent always
    offers `getDetails`, which asks the user for details missing from the request)."""

    def __init__(self, inner, pseudo_tools: Mapping[str, str], owns_inner: bool = True):
        self.inner, self.pseudo_tools, self.owns_inner = inner, dict(pseudo_tools), owns_inner
        self.counters = getattr(inner, "counters", Counter())

    def execute(self, name: str, arguments: str) -> dict:
        if name in self.pseudo_tools and name not in self.inner.toolset.tools:
            self.counters["pseudo_tool_calls"] += 1
            return {"content": self.pseudo_tools[name], "error": ""}
        return self.inner.execute(name, arguments)

    def close(self):
        if self.owns_inner:  # a simulated executor's LLM client is the run's, closed by the run
            self.inner.close()


def api_toolsets(path) -> dict:
    """{API name: Toolset} from a file of ToolAlpaca API records (OpenAPI spec in `Documentation`)."""
    from simulators import SpecError, toolset_from_toolalpaca
    try:
        records = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise EvaluationError(f"{path}: cannot read the API records: {exc}") from None
    if not isinstance(records, list):
        raise EvaluationError(f"{path}: expected a list of API records (ToolAlpaca format)")
    out = {}
    for i, rec in enumerate(records):
        try:
            ts = toolset_from_toolalpaca(rec, source=f"{path} record {i}")
        except SpecError as exc:
            raise EvaluationError(str(exc)) from None
        out[ts.name] = ts
    return out


def executor_factory(cfg: Mapping, test_file, recorded: Mapping[str, Mapping]
                     ) -> tuple[Callable[[Mapping], object], Callable[[], dict]]:
    """(make(task) -> executor, stats() -> counters of the run's shared LLM client) for the
    `executor:` node; `recorded` maps task ids to their recorded trajectories (for replay)."""
    kind = cfg.get("type", "replay")
    if kind not in EXECUTOR_TYPES:
        raise EvaluationError(f"executor.type {kind!r}: expected one of {', '.join(EXECUTOR_TYPES)}")
    if kind == "replay":
        return (lambda task: ReplayExecutor(recorded[task["id"]])), dict
    if kind == "world":  # executor.world: a world folder or world.json; null: the test set's folder
        from simulators.world import World, WorldExecutor
        world = World.load(cfg.get("world") or Path(test_file).parent)
        return (lambda task: WorldExecutor(world, task)), dict
    toolsets = api_toolsets(cfg.get("apis") or test_file)
    pseudo = dict(cfg.get("pseudo_tools") or {})

    def toolset_of(task):
        api = (task.get("meta") or {}).get("api")
        if api not in toolsets:
            raise EvaluationError(f"task {task['id']}: no API spec named {api!r} in "
                                  f"{cfg.get('apis') or test_file}")
        return toolsets[api]

    if kind == "http":
        from .http_executor import HttpExecutor
        http = dict(cfg.get("http") or {})
        if not http.get("enabled", False):
            raise EvaluationError("executor.type http makes real network calls: set "
                                  "executor.http.enabled=true to allow them")
        urls = dict(http.get("base_urls") or {})

        def make_http(task):
            ts = toolset_of(task)
            return WithPseudoTools(HttpExecutor(ts, base_url=urls.get(ts.name),
                                             timeout_s=float(http["timeout_s"]),
                                             max_response_bytes=int(http["max_response_bytes"]),
                                             headers=http.get("headers"),
                                             validation=cfg.get("validation")), pseudo)
        return make_http, dict
    from omegaconf import OmegaConf

    from core.llm_client import LLMClient, LLMError
    from simulators import load_settings
    try:
        settings = OmegaConf.to_container(load_settings(dict(cfg.get("simulator") or {})), resolve=True)
        llm = LLMClient(settings["llm"])
    except (ValueError, LLMError) as exc:
        raise EvaluationError(f"executor.simulator: {exc}") from None
    from simulators import SimulatedToolExecutor

    def make_simulated(task):
        return WithPseudoTools(SimulatedToolExecutor(toolset_of(task), llm, settings), pseudo,
                               owns_inner=False)
    return make_simulated, lambda: dict(llm.stats)
