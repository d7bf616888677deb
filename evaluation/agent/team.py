"""The team: the three roles (α-UMi) or one backbone in all three (single LLM), with batched
`plan` / `call` / `conclude` steps shared by the static evaluation, the live loop and the episodes
runner. A template with `step_targets` for the planner's prompt role (the α-UMi reference backbone)
produces the thought and the call or answer in one output."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

from core.vocabulary import TURN_ROLES
from prompting.prompt_template import PromptTemplate, RenderedPrompt, Segment

from .output_parsing import CallerOutput, OutputParser, PlannerOutput
from .members import EndpointRole, LocalRole, Role


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
