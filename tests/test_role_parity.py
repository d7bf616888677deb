"""Per-step role examples against the α-UMi release's per-role records for the same 20 trajectories."""
import json

import pytest

from conftest import DATA, load_template
from prompting.prompt_template import PromptTemplate
from datamodules.views import role_view

REFERENCE = DATA / "toolbench" / "alpha_umi_reference"
COUNTS = {"backbone": 79, "planner": 79, "caller": 59, "summarizer": 14}


def ours(trajectories, role):
    tpl = PromptTemplate(load_template("alpha_umi_reference"))
    return [text for traj in trajectories for ex in role_view(tpl, traj, role, "per_step")
            for text in ex.target_text()]


@pytest.mark.parametrize("role", list(COUNTS))
def test_counts_and_targets_match_reference(chains_trajectories, role):
    reference = [r["target"] for r in json.loads((REFERENCE / f"train_{role}.json").read_text())]
    targets = ours(chains_trajectories, role)
    assert len(targets) == len(reference) == COUNTS[role]
    known = KNOWN_REFERENCE_ERRORS.get(role, {})
    for i, (got, want) in enumerate(zip(targets, reference)):
        if i in known:
            assert known[i](got, want), f"{role} record {i}: the documented difference changed"
        else:
            assert got == " " + want, f"{role} record {i} differs"


# Every target starts with the space the release puts at the end of its prompt ("assistant: "):
# prompts end where tokenizers split (prompting/text_encoder.py). Where the reference is wrong,
# and why we differ:
# - planner 38, 39, 40, 55: the gold thought is empty (ToolBench's content was null). The reference
#   joins the marker with " Next: caller." while every other record uses "\n Next: caller."; we keep
#   one rule for all records.
# - backbone 29: the reference strips the trailing newline of the thought in this conclusion record
#   (but keeps it in the planner record of the same step); we keep the thought verbatim in both.
KNOWN_REFERENCE_ERRORS = {
    "planner": {i: (lambda got, want: got == " \n" + want and want == " Next: caller.") for i in (38, 39, 40, 55)},
    "backbone": {29: lambda got, want: got.replace("\n\nconclusion:", "\nconclusion:") == " " + want},
}


def test_caller_prompt_contains_the_current_thought(chains_trajectories):
    tpl = PromptTemplate(load_template("alpha_umi_reference"))
    traj = chains_trajectories[0]
    ex = role_view(tpl, traj, "caller", "per_step")[0]
    thought = next(t["thought"] for t in traj["turns"] if t["role"] == "planner")
    context = "".join(s.text for s in ex.context if s.text)
    assert f"Current thought: {thought}" in context


def test_folded_layout_refuses_a_template_with_cues(chains_trajectories):
    from prompting.prompt_template import TemplateError
    tpl = PromptTemplate(load_template("alpha_umi_reference"))
    with pytest.raises(TemplateError, match="per_step"):
        role_view(tpl, chains_trajectories[0], "planner", "folded")
