"""Data views: what one role trains on, from a trajectory (`role_view`) or from a tool-selection
record (`selection_view`, GenTool).

A trajectory's view for a role has two layouts:
- `per_step`: one example per step of the role; the context is everything before the step and only
  the step's target (and its EOS) is supervised. With the reference template this reproduces the
  α-UMi release's per-role records.
- `folded`: one sequence per trajectory, every target span of the role supervised. With a
  prefix-consistent template every per-step context is a prefix of this sequence, so the per-token
  losses are those of the per-step layout at about k times fewer tokens for k steps.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Mapping, get_args

from prompting.prompt_template import EOS, ROLES, TARGET_TURNS, PromptTemplate, Segment, TemplateError
from prompting.selection_template import SelectionTemplate

Layout = Literal["folded", "per_step"]
LAYOUTS = get_args(Layout)


@dataclass
class RoleExample:
    id: str
    role: str
    layout: str
    context: list[Segment]                 # per_step: the prompt; folded: the header
    target: list[Segment] = field(default_factory=list)        # per_step only
    steps: list[list[Segment]] = field(default_factory=list)   # folded only: turns grouped by step
    n_header: int = 2                      # leading context segments that form the header

    def is_supervised(self, seg: Segment) -> bool:
        if self.layout == "per_step":
            return False  # the target list carries supervision in this layout
        return seg.producer in TARGET_TURNS[self.role]

    def target_text(self) -> list[str]:
        """The supervised texts (per example, or per span when folded), EOS excluded."""
        segs = self.target if self.layout == "per_step" else [s for step in self.steps for s in step]
        spans, cur, sup = [], "", self.layout == "per_step"
        for s in segs:
            if s.text is EOS:
                if sup or self.is_supervised(s):
                    spans.append(cur)
                cur = ""
            elif sup or self.is_supervised(s):
                cur += s.text
        return spans


def role_view(template: PromptTemplate, trajectory: Mapping, role: str,
                  layout: str = "folded") -> list[RoleExample]:
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; expected one of {', '.join(ROLES)}")
    if layout == "per_step":
        return _per_step(template, trajectory, role)
    if layout == "folded":
        if not template.prefix_consistent:
            raise TemplateError(f"template '{template.name}' has cues or step_targets, so its per-step "
                                "prompts are not prefixes of one sequence: use layout per_step")
        return _folded(template, trajectory, role)
    raise ValueError(f"unknown layout {layout!r}; expected one of {', '.join(LAYOUTS)}")


def _per_step(template: PromptTemplate, traj: Mapping, role: str) -> list[RoleExample]:
    turns = traj["turns"]
    merged = template.step_targets.get(role)
    out = []
    for i, turn in enumerate(turns):
        if merged is not None:
            if turn["role"] != "planner":
                continue
            context = template.render_history(role, traj, upto=i) + template.cue(role, traj, i)
            if merged.get("prefix"):
                context.append(Segment(merged["prefix"]))
            fields = template.fields(turn)
            follow = turns[i + 1] if i + 1 < len(turns) else {}
            fields.update({k: v for k, v in follow.items() if k != "role"})
            target = template.body(merged[turn["decision"]], fields, "planner", i)
            target.append(Segment(EOS, target[-1].kind, "planner", i))
        elif turn["role"] in TARGET_TURNS[role]:
            prefix, target, _ = template.turn_segments(turn, i)
            context = template.render_history(role, traj, upto=i) + template.cue(role, traj, i) + prefix
        else:
            continue
        n_header = len(template.header(role, traj["tools"], traj["instruction"]))
        out.append(RoleExample(f"{traj['id']}#{role}@{i}", role, "per_step", context, target,
                               n_header=n_header))
    return out


def _folded(template: PromptTemplate, traj: Mapping, role: str) -> list[RoleExample]:
    steps = template.turn_steps(traj)
    example = RoleExample(f"{traj['id']}#{role}", role, "folded",
                          template.header(role, traj["tools"], traj["instruction"]), steps=steps)
    has_target = any(example.is_supervised(s) for step in steps for s in step)
    return [example] if has_target else []


def selection_view(template: SelectionTemplate, record: Mapping, role: str) -> list[RoleExample]:
    """A tool-selection record's one per-step example: the prompt as context, the ranking, the call,
    or both (role `ranking_selection`) as target."""
    return [RoleExample(f"{record['id']}#{role}", role, "per_step", template.prompt(role, record),
                        template.target(role, record))]


def selection_texts(template: SelectionTemplate, record: Mapping) -> list[str]:
    """Every text the joint view of a record renders (to train a BPE tokenizer)."""
    segs = template.prompt("ranking_selection", record) + template.target("ranking_selection", record)
    return [s.text for s in segs if s.text]
