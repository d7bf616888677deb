"""Live agent runs: planner -> caller -> tool -> observation -> ... -> summarizer (or give up).

Pieces:
- Roles serve one model each: `complete(prompts, n_header=1) -> list[str]` completes rendered
  prompts (lists of Segments from `PromptTemplate.render_prompt`, the function that renders
  training data; the first `n_header` segments are the header, kept if a prompt must be cut):
  `LocalRole` (a local Hugging Face export, batched greedy generation) and `EndpointRole` (an
  OpenAI-compatible server through `openai`'s `completions.create`, the prompt as one string with
  the tokenizer's EOS text where training has an EOS token, stopping at EOS). A role's
  `prompt_role` picks the system prompt it is rendered with (planner / caller / summarizer, or
  backbone for a single-LLM agent).
- `Team`: the three roles (α-UMi) or one backbone in all three (single LLM), with batched
  `plan` / `call` / `conclude` steps shared by the static evaluation and the live loop. A template
  with `step_targets` for the planner's prompt role (the α-UMi reference backbone) produces the
  thought and the call or answer in one output.
- Tool executors: anything with `execute(name, arguments) -> {"content": str, "error": str}`;
  `ReplayExecutor` answers from a recorded canonical trajectory.
- `run_episode`: the loop, returning a schema-valid canonical trajectory with `meta.termination`
  (answer / give_up / max_steps / unparseable_plan / invalid_call) and the raw outputs.

A canonical trajectory cannot hold a call to a tool it does not offer, so an unparseable caller
output or a call to an unknown tool ends the episode (`invalid_call`, details in meta) after the
planner's call turn.
"""
from __future__ import annotations

import copy
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Mapping, Protocol, Sequence

from core.vocabulary import TURN_ROLES
from prompting.prompt_template import EOS, PromptTemplate, RenderedPrompt, Segment
from trajectories.trajectory import validate_trajectory

from .output_parsing import CallerOutput, OutputParser, PlannerOutput



# ----- roles ---------------------------------------------------------------------------------
class Role(Protocol):
    prompt_role: str

    def complete(self, prompts: Sequence[list[Segment]], n_header: int = 1) -> list[str]: ...


class LocalRole:
    """A local HF export (path) or an already loaded (model, tokenizer); loads lazily."""

    def __init__(self, path: str | None = None, *, prompt_role: str, model=None, tokenizer=None,
                 add_bos: bool = True, max_new_tokens: int = 256, batch_size: int = 8,
                 do_sample: bool = False, temperature: float = 1.0, top_p: float = 1.0,
                 seed: int | None = 0, device: str | None = None, dtype: str | None = None,
                 max_prompt_tokens: int | None = None, max_length: int | None = None,
                 context_reserve: int | None = None):
        if path is None and model is None:
            raise ValueError("LocalRole needs a path or a model and tokenizer")
        self.path, self.prompt_role = path, prompt_role
        self.model, self.tokenizer = model, tokenizer
        self.add_bos, self.device, self.dtype = add_bos, device, dtype
        # one length, or one per generated turn ({planner: n, caller: n, summarizer: n})
        self.max_new_tokens = max_new_tokens
        self.gen = dict(batch_size=batch_size, do_sample=do_sample, temperature=temperature,
                        top_p=top_p, seed=seed)
        self.max_prompt_tokens, self.max_length = max_prompt_tokens, max_length
        self.context_reserve = context_reserve
        self.last: list = []  # Generation records of the last complete() call

    def load(self):
        from .generation import load_model, prepare_tokenizer
        if self.model is None:
            self.model, self.tokenizer = load_model(self.path, self.device, self.dtype)
        else:
            prepare_tokenizer(self.tokenizer)
        return self

    def release(self) -> None:
        """Drop the model (when loaded from a path) to free memory; it reloads on next use."""
        if self.path is not None and self.model is not None:
            self.model = None
            self.tokenizer = None
            import gc
            gc.collect()
            try:
                import torch
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
            except Exception:  # noqa: BLE001 - freeing memory is best effort
                pass

    @property
    def eos_text(self) -> str:
        self.load()
        return self.tokenizer.eos_token

    def new_tokens(self, turn: str | None) -> int:
        n = self.max_new_tokens
        return int(n.get(turn) or max(n.values())) if isinstance(n, Mapping) else int(n)

    def budget(self, new_tokens: int):
        """The context budget training used (the recipe's data.max_length and context_reserve);
        without a recipe, the model's positions less the generation length."""
        from datamodules.step_context import ContextBudget
        if self.max_prompt_tokens:
            return ContextBudget(int(self.max_prompt_tokens) + new_tokens, new_tokens)
        if self.max_length:
            return ContextBudget(self.max_length, self.context_reserve or self.max_length // 4)
        positions = getattr(self.model.config, "max_position_embeddings", None) or 4 * new_tokens
        return ContextBudget(positions, min(new_tokens, positions // 2 - 1))

    def complete(self, prompts: Sequence[list[Segment]], n_header: int = 1) -> list[str]:
        """Greedy (by default) completions of rendered prompts, each fitted to the context
        budget exactly as training fitted its rows (datamodules.step_context.prompt_ids) and
        generating up to the length for the turn it is for; a plain list's first `n_header`
        segments form its header."""
        from datamodules.step_context import prompt_ids
        from prompting.segment_encoder import SegmentEncoder

        from .generation import generate
        if not prompts:
            return []
        self.load()
        enc = SegmentEncoder(self.tokenizer, add_bos=self.add_bos)
        lengths = [self.new_tokens(getattr(p, "next_turn", None)) for p in prompts]
        self.last = [None] * len(prompts)
        for n in sorted(set(lengths)):
            idx = [i for i, m in enumerate(lengths) if m == n]
            budget = self.budget(n)
            ids = [prompt_ids(enc, prompts[i], self.prompt_role, budget, n_header) for i in idx]
            for i, g in zip(idx, generate(self.model, self.tokenizer, ids, max_new_tokens=n,
                                          **self.gen)):
                self.last[i] = g
        return [g.text for g in self.last]


class EndpointRole:
    """An OpenAI-compatible completions endpoint (vLLM, TGI, ...). The API key is read from the
    environment variable `api_key_env` only (a placeholder when unset: local servers ignore it)."""

    def __init__(self, base_url: str, model: str, *, prompt_role: str, eos_text: str = "</s>",
                 bos_text: str = "", api_key_env: str = "OPENAI_API_KEY", max_new_tokens: int = 256,
                 temperature: float = 0.0, top_p: float = 1.0, timeout: float = 120.0,
                 max_retries: int = 2, concurrency: int = 4, client=None):
        self.base_url, self.model, self.prompt_role = base_url, model, prompt_role
        self.eos_text, self.bos_text = eos_text, bos_text
        self.api_key_env = api_key_env
        self.max_new_tokens, self.temperature, self.top_p = max_new_tokens, temperature, top_p
        self.timeout, self.max_retries, self.concurrency = timeout, max_retries, concurrency
        self._client = client

    @property
    def client(self):
        if self._client is None:
            from openai import OpenAI
            self._client = OpenAI(base_url=self.base_url,
                                  api_key=os.environ.get(self.api_key_env) or "EMPTY",
                                  timeout=self.timeout, max_retries=self.max_retries)
        return self._client

    def prompt_text(self, segments: list[Segment]) -> str:
        return self.bos_text + "".join(self.eos_text if s.text is EOS else s.text for s in segments)

    def _one(self, segments: list[Segment]) -> str:
        n = self.max_new_tokens
        if isinstance(n, Mapping):  # one length per generated turn
            n = n.get(getattr(segments, "next_turn", None)) or max(n.values())
        resp = self.client.completions.create(model=self.model, prompt=self.prompt_text(segments),
                                              max_tokens=n,
                                              temperature=self.temperature, top_p=self.top_p,
                                              stop=[self.eos_text])
        text = resp.choices[0].text or ""
        cut = text.find(self.eos_text)  # servers that ignore `stop`
        return text[:cut] if cut >= 0 else text

    def complete(self, prompts: Sequence[list[Segment]], n_header: int = 1) -> list[str]:
        if len(prompts) <= 1 or self.concurrency <= 1:
            return [self._one(p) for p in prompts]
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return list(pool.map(self._one, prompts))


# ----- the team ------------------------------------------------------------------------------
@dataclass
class PlanStep:
    planner: PlannerOutput
    call: CallerOutput | None = None   # merged outputs only
    answer: str | None = None          # merged outputs only
    merged: bool = False

    @property
    def turn(self) -> dict | None:
        """The canonical planner turn, or None when no decision could be parsed."""
        if self.planner.decision is None:
            return None
        return {"role": "planner", "thought": self.planner.thought, "decision": self.planner.decision}


class Team:
    def __init__(self, template: PromptTemplate | Mapping, planner: Role, caller: Role | None = None,
                 summarizer: Role | None = None):
        self.template = template if isinstance(template, PromptTemplate) else PromptTemplate(template)
        self.planner = planner
        self.caller = caller or planner
        self.summarizer = summarizer or planner
        self.parser = OutputParser(self.template)
        self.merged = self.planner.prompt_role in self.template.step_targets

    @classmethod
    def single(cls, template, backbone: Role) -> "Team":
        return cls(template, backbone, backbone, backbone)

    @property
    def roles(self) -> dict:
        return {"planner": self.planner, "caller": self.caller, "summarizer": self.summarizer}

    def planner_prompt(self, trajectory: Mapping) -> list[Segment]:
        role = self.planner.prompt_role
        if self.merged:  # as role_examples._per_step builds a merged step's context
            merged = self.template.step_targets[role]
            n = len(trajectory["turns"])
            segs = self.template.render_history(role, trajectory) + self.template.cue(role, trajectory, n)
            segs += [Segment(merged["prefix"])] if merged.get("prefix") else []
            return RenderedPrompt(segs, self.n_header(self.planner), False, "planner")
        return self.template.render_prompt(role, trajectory, "planner")

    def n_header(self, role: Role) -> int:
        """How many leading segments of a rendered prompt form its header."""
        return len(self.template.header(role.prompt_role, [], "-"))

    def plan(self, trajectories: Sequence[Mapping]) -> list[PlanStep]:
        outs = self.planner.complete([self.planner_prompt(t) for t in trajectories],
                                     n_header=self.n_header(self.planner))
        if self.merged:
            parsed = [self.parser.parse_merged(o, self.planner.prompt_role) for o in outs]
            return [PlanStep(p.planner, p.call, p.answer, merged=True) for p in parsed]
        return [PlanStep(self.parser.parse_planner(o)) for o in outs]

    def call(self, trajectories: Sequence[Mapping]) -> list[CallerOutput]:
        """Trajectories ending with a planner turn whose decision is call."""
        prompts = [self.template.render_prompt(self.caller.prompt_role, t, "caller") for t in trajectories]
        outs = self.caller.complete(prompts, n_header=self.n_header(self.caller))
        return [self.parser.parse_caller(o) for o in outs]

    def conclude(self, trajectories: Sequence[Mapping]) -> list[tuple[str, str]]:
        """(answer, raw) for trajectories ending with a planner turn whose decision is conclusion."""
        prompts = [self.template.render_prompt(self.summarizer.prompt_role, t, "summarizer")
                   for t in trajectories]
        outs = self.summarizer.complete(prompts, n_header=self.n_header(self.summarizer))
        return [(self.parser.parse_summarizer(o), o) for o in outs]


# ----- tool executors ------------------------------------------------------------------------
class ToolExecutor(Protocol):
    def execute(self, name: str, arguments: str) -> dict: ...


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


# ----- the loop ------------------------------------------------------------------------------
def task_of(trajectory: Mapping) -> dict:
    """The start of an episode: id, tools, instruction and the user turns before the first
    generated turn of a recorded trajectory."""
    lead = []
    for turn in trajectory["turns"]:
        if turn["role"] != "user":
            break
        lead.append(copy.deepcopy(turn))
    return {"id": trajectory["id"], "tools": copy.deepcopy(trajectory["tools"]),
            "instruction": trajectory["instruction"], "turns": lead}


def run_episode(team: Team, task: Mapping, executor: ToolExecutor, max_steps: int = 8) -> dict:
    """Run planner steps until an answer, a give-up or `max_steps` planner turns; return the
    canonical trajectory (validated), with meta {termination, steps, outputs, ...}."""
    traj = {"id": task["id"], "tools": copy.deepcopy(task["tools"]),
            "instruction": task["instruction"], "turns": copy.deepcopy(list(task.get("turns", [])))}
    tool_names = {t["name"] for t in traj["tools"]}
    outputs: list[dict] = []
    termination, extra = "max_steps", {}
    for step in range(max_steps):
        plan = team.plan([traj])[0]
        outputs.append({"role": "planner", "raw": plan.planner.raw})
        turn = plan.turn
        if turn is None:
            termination = "unparseable_plan"
            break
        traj["turns"].append(turn)
        decision = turn["decision"]
        if decision == "give_up":
            termination = "give_up"
            break
        if decision == "conclusion":
            if plan.merged:
                answer = plan.answer or ""
            else:
                answer, raw = team.conclude([traj])[0]
                outputs.append({"role": "summarizer", "raw": raw})
            traj["turns"].append({"role": "summarizer", "answer": answer})
            termination = "answer"
            break
        call = plan.call if plan.merged else team.call([traj])[0]
        if not plan.merged:
            outputs.append({"role": "caller", "raw": call.raw if call else ""})
        if call is None or call.name is None or (tool_names and call.name not in tool_names):
            termination = "invalid_call"
            extra["invalid_call"] = {"name": call.name if call else None,
                                     "arguments": call.arguments if call else None,
                                     "raw": call.raw if call else ""}
            break
        traj["turns"].append({"role": "caller", "name": call.name, "arguments": call.arguments})
        result = executor.execute(call.name, call.arguments)
        obs = {"role": "observation", "content": str(result.get("content") or "")}
        if result.get("error"):
            obs["error"] = str(result["error"])
        traj["turns"].append(obs)
    n_steps = sum(1 for t in traj["turns"][len(task.get("turns", [])):] if t["role"] == "planner")
    traj["meta"] = {"termination": termination, "steps": n_steps, "max_steps": max_steps,
                    "outputs": outputs, **extra}
    return validate_trajectory(traj)


# ----- building teams from a run -------------------------------------------------------------
def build_team(template, mode: str, models: Mapping[str, str], *, endpoints: Mapping | None = None,
               **role_kwargs) -> Team:
    """A Team for `mode` (alpha_umi or single) from export paths by role (planner, caller,
    summarizer / backbone); `endpoints` maps a role to EndpointRole kwargs (base_url, model, ...)
    and replaces the local model for that role."""
    endpoints = dict(endpoints or {})
    gen_keys = ("max_new_tokens", "temperature", "top_p")

    def role(name: str, prompt_role: str) -> Role:
        if name in endpoints:
            kw = dict(endpoints[name])
            for k in gen_keys:
                if k in role_kwargs and k not in kw and not (k == "temperature"
                                                             and not role_kwargs.get("do_sample")):
                    kw[k] = role_kwargs[k]
            if "eos_text" not in kw:
                kw["eos_text"] = _eos_text(models.get(name) or next(iter(models.values()), None))
            return EndpointRole(prompt_role=prompt_role, **kw)
        if name not in models:
            raise ValueError(f"no model for the {name} role")
        return LocalRole(models[name], prompt_role=prompt_role, **role_kwargs)

    if mode == "single":
        return Team.single(template, role("backbone", "backbone"))
    if mode == "alpha_umi":
        return Team(template, *(role(r, r) for r in TURN_ROLES))
    raise ValueError(f"unknown mode {mode!r} (expected alpha_umi or single)")


def _eos_text(path: str | None) -> str:
    if path:
        try:
            from transformers import AutoTokenizer
            return AutoTokenizer.from_pretrained(path).eos_token or "</s>"
        except Exception:  # noqa: BLE001 - fall back to the Llama EOS text
            pass
    return "</s>"


# ----- command line (evaluate.py agent) ------------------------------------------------------
def add_agent_args(p) -> None:
    from .run_exports import add_run_args
    add_run_args(p)
    p.add_argument("--trajectory", required=True,
                   help="recorded trajectories (any source format): the task, and the tool "
                        "responses to replay")
    p.add_argument("--index", type=int, default=0, help="which trajectory of the file")
    p.add_argument("--max-steps", type=int, default=8, help="most planner turns")
    p.add_argument("--endpoint", action="append", metavar="ROLE=BASE_URL",
                   help="serve a role from an OpenAI-compatible server instead of a local export")
    p.add_argument("--endpoint-model", action="append", metavar="ROLE=NAME",
                   help="served model name of an endpoint role (default: the role name)")
    p.add_argument("--api-key-env", default="OPENAI_API_KEY",
                   help="environment variable holding the endpoints' API key")
    p.add_argument("--eos-text", help="EOS text in endpoint prompts (default: the export's tokenizer's)")
    p.add_argument("--out", help="append the resulting trajectory to this JSONL file")


def run_agent_cli(args) -> int:
    from trajectories.sources import load_trajectories

    from . import EvaluationError
    from .run_exports import find_exports, load_run_recipe, resolve_mode, role_map

    recipe = load_run_recipe(args.run_dir, args.recipe)
    trajectories = load_trajectories(args.trajectory).trajectories
    if not 0 <= args.index < len(trajectories):
        raise EvaluationError(f"{args.trajectory}: no trajectory {args.index} "
                              f"({len(trajectories)} in the file)")
    recorded = trajectories[args.index]
    endpoints = {r: {"base_url": url, "model": r, "api_key_env": args.api_key_env}
                 for r, url in role_map(args.endpoint, "--endpoint").items()}
    for r, name in role_map(args.endpoint_model, "--endpoint-model").items():
        if r in endpoints:
            endpoints[r]["model"] = name
    if args.eos_text:
        for kw in endpoints.values():
            kw["eos_text"] = args.eos_text
    exports = {**find_exports(args.run_dir, recipe), **role_map(args.model, "--model")}
    mode = resolve_mode(args.mode, {**exports, **{r: "endpoint" for r in endpoints}}, args.run_dir)
    try:
        template = PromptTemplate(recipe["template"])
    except ValueError as exc:
        raise EvaluationError(f"recipe template: {exc}") from None
    team = build_team(template, mode, exports, endpoints=endpoints,
                      add_bos=(recipe.get("tokenizer") or {}).get("add_bos", True),
                      max_new_tokens=args.max_new_tokens, batch_size=1, device=args.device,
                      dtype=args.dtype, max_prompt_tokens=args.max_prompt_tokens,
                      max_length=(recipe.get("data") or {}).get("max_length"))
    traj = run_episode(team, task_of(recorded), ReplayExecutor(recorded), max_steps=args.max_steps)
    traj["meta"]["mode"] = mode
    if args.out:
        from pathlib import Path
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        with open(args.out, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(traj, ensure_ascii=False) + "\n")
    print(json.dumps(traj, indent=2, ensure_ascii=False))
    return 0
