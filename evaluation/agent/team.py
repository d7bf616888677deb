"""The team: three members (α-UMi: planner, caller, summarizer) or one backbone playing all three
(single LLM), with batched `plan` / `call` / `conclude` shared by the teacher-forced evaluation,
the live loop and the episodes runner. A template with `step_targets` for the planner member's
role (the α-UMi reference backbone) produces the thought and the call or answer in one output."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

from core.vocabulary import TEAM_ROLES
from prompting.prompt_template import PromptTemplate, RenderedPrompt, Segment

from .adapters import adapter_members
from .members import Decoding, EndpointMember, LocalMember, Member, PromptFit
from .output_parsing import CallerOutput, OutputParser, PlannerOutput

MODES = ("alpha_umi", "single")


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
    def __init__(self, template: PromptTemplate, planner: Member, caller: Member | None = None,
                 summarizer: Member | None = None):
        self.template = template
        self.planner = planner
        self.caller = caller or planner
        self.summarizer = summarizer or planner
        self.parser = OutputParser(self.template)
        self.merged = self.planner.role in self.template.step_targets

    @property
    def members(self) -> dict[str, Member]:
        """The member acting in each turn role (one backbone fills all three in single mode)."""
        return {"planner": self.planner, "caller": self.caller, "summarizer": self.summarizer}

    def act(self, role: str, trajectories: Sequence[Mapping]) -> list:
        """The `role` member's outputs for trajectories: plan (planner), call (caller) or
        conclude (summarizer)."""
        return {"planner": self.plan, "caller": self.call, "summarizer": self.conclude}[role](trajectories)

    def planner_prompt(self, trajectory: Mapping) -> list[Segment]:
        role = self.planner.role
        if self.merged:  # as the per-step view builds a merged step's context
            merged = self.template.step_targets[role]
            n = len(trajectory["turns"])
            segs = self.template.render_history(role, trajectory) + self.template.cue(role, trajectory, n)
            segs += [Segment(merged["prefix"])] if merged.get("prefix") else []
            return RenderedPrompt(segs, self.n_header(self.planner), False, "planner")
        return self.template.render_prompt(role, trajectory, "planner")

    def n_header(self, member: Member) -> int:
        """How many leading segments of a rendered prompt form its header."""
        return len(self.template.header(member.role, [], "-"))

    def plan(self, trajectories: Sequence[Mapping]) -> list[PlanStep]:
        outs = self.planner.complete([self.planner_prompt(t) for t in trajectories],
                                     n_header=self.n_header(self.planner))
        if self.merged:
            parsed = [self.parser.parse_merged(o, self.planner.role) for o in outs]
            return [PlanStep(p.planner, p.call, p.answer, merged=True) for p in parsed]
        return [PlanStep(self.parser.parse_planner(o)) for o in outs]

    def call(self, trajectories: Sequence[Mapping]) -> list[CallerOutput]:
        """Trajectories ending with a planner turn whose decision is call."""
        prompts = [self.template.render_prompt(self.caller.role, t, "caller") for t in trajectories]
        outs = self.caller.complete(prompts, n_header=self.n_header(self.caller))
        return [self.parser.parse_caller(o) for o in outs]

    def conclude(self, trajectories: Sequence[Mapping]) -> list[tuple[str, str]]:
        """(answer, raw) for trajectories ending with a planner turn whose decision is conclusion."""
        prompts = [self.template.render_prompt(self.summarizer.role, t, "summarizer")
                   for t in trajectories]
        outs = self.summarizer.complete(prompts, n_header=self.n_header(self.summarizer))
        return [(self.parser.parse_summarizer(o), o) for o in outs]


def build_team(template: PromptTemplate, mode: str, exports: Mapping[str, str], *, fit: PromptFit,
               decoding: Decoding, endpoints: Mapping[str, Mapping] | None = None,
               eos_text: str | None = None, device: str | None = None, dtype: str | None = None) -> Team:
    """A Team for `mode` (alpha_umi or single) from export paths by role (planner, caller,
    summarizer / backbone); `endpoints` maps a role to the LLM client settings of the server that
    plays it instead of the local export (its prompts end turns with `eos_text`, default: the
    export's tokenizer's EOS). Exports that are adapter folders load their base once."""
    endpoints = dict(endpoints or {})
    local = [r for r in (TEAM_ROLES if mode == "alpha_umi" else ("backbone",)) if r not in endpoints]
    adapters = adapter_members(exports, local, dict(fit=fit, decoding=decoding, device=device, dtype=dtype))

    def member(role: str) -> Member:
        if role in adapters:  # adapters of one base share it (evaluation.agent.adapters)
            return adapters[role]
        if role in endpoints:
            tok = served_tokenizer(exports.get(role), endpoints[role].get("model"))
            eos = eos_text or (tok.eos_token if tok is not None else None) or "</s>"
            return EndpointMember(endpoints[role], role=role, decoding=decoding, eos_text=eos,
                                  fit=fit, tokenizer=tok)
        if role not in exports:
            raise ValueError(f"no model for the {role} role")
        return LocalMember(exports[role], role=role, fit=fit, decoding=decoding, device=device,
                           dtype=dtype)

    if mode == "single":
        backbone = member("backbone")
        return Team(template, backbone, backbone, backbone)
    if mode == "alpha_umi":
        return Team(template, *(member(r) for r in TEAM_ROLES))
    raise ValueError(f"unknown mode {mode!r} (expected one of {', '.join(MODES)})")


def served_tokenizer(export: str | None, model_name: str | None):
    """The tokenizer of the export a server serves for a role (the run's export of the role, or
    the served model's name when it is a local export folder), or None when there is none."""
    from pathlib import Path
    for path in (export, model_name):
        if path and (Path(path) / "tokenizer_config.json").is_file():
            from transformers import AutoTokenizer
            from .generation import prepare_tokenizer
            return prepare_tokenizer(AutoTokenizer.from_pretrained(path))
    return None
