"""One context for every step, at training and at inference: on the shipped training dialogs,
every prompt the evaluation builds (planner, caller and summarizer, α-UMi and single-LLM) is a
token prefix of a training row of that role, and the token after it is supervised, including
under a budget tight enough to trim turns and split trajectories into several rows."""
import pytest

from conftest import QUICKSTART, load_template
from core.recipe import compose
from core.vocabulary import IGNORE_INDEX, TRAINED_ROLES
from datamodules.views import role_view
from datamodules.span_tokenization import EncodeStats, encode_example
from datamodules.step_context import ContextBudget, folded_rows, history_start, trim_unit, units
from evaluation.agent import generation
from evaluation.agent.members import LocalMember, PromptFit
from test_static_inference import greedy
from evaluation.agent.team import Team
from evaluation.steps.teacher_forced import step_trajectory
from evaluation.steps.extract import trajectory_steps
from prompting.prompt_template import PromptTemplate
from prompting.segment_encoder import SegmentEncoder

QUICKSTART_DATA = compose([QUICKSTART])[0].data
BUDGETS = {"quickstart": (QUICKSTART_DATA.max_length,
                          QUICKSTART_DATA.context_reserve or QUICKSTART_DATA.max_length // 4),
           "tight": (640, 128)}


class _Stub:  # LocalMember needs no model when generation is replaced
    config = None


@pytest.mark.parametrize("budget_name", list(BUDGETS))
@pytest.mark.parametrize("mode", ["alpha_umi", "single"])
def test_every_evaluation_prompt_is_a_prefix_of_a_supervised_training_row(
        chains_trajectories, bpe_tokenizer, monkeypatch, budget_name, mode):
    max_length, reserve = BUDGETS[budget_name]
    budget = ContextBudget(max_length, reserve)
    tpl, enc = PromptTemplate(load_template()), SegmentEncoder(bpe_tokenizer)
    stats = EncodeStats()
    rows = {role: [row for traj in chains_trajectories for ex in role_view(tpl, traj, role)
                   for row in encode_example(ex, enc, budget, stats)] for role in TRAINED_ROLES}
    prompts = []

    def fake_generate(model, tokenizer, ids, **kw):
        prompts.extend((model.role, p) for p in ids)
        return [generation.Generation("", [], True, len(p)) for p in ids]

    monkeypatch.setattr(generation, "generate", fake_generate)

    def role(name):
        stub = _Stub()
        stub.role = name
        return LocalMember(model=stub, tokenizer=bpe_tokenizer, role=name,
                           fit=PromptFit(max_length, reserve, True), decoding=greedy(reserve))

    team = Team(tpl, role("backbone")) if mode == "single" else \
        Team(tpl, role("planner"), role("caller"), role("summarizer"))
    for traj in chains_trajectories:
        for step in trajectory_steps(traj, traj["id"]):
            context = step_trajectory(step)
            team.plan([context])
            planned = {**context, "turns": context["turns"] + [
                {"role": "planner", "thought": step["thought"], "decision": "call"
                 if step["plan"] == "call" else "conclusion"}]}
            if step["plan"] == "call":
                team.call([planned])
            elif step["plan"] == "conclusion":
                team.conclude([planned])
    assert len(prompts) > 100
    missing = [(r, len(ids)) for r, ids in prompts
               if not any(row["input_ids"][:len(ids)] == ids and len(row["labels"]) > len(ids)
                          and row["labels"][len(ids)] != IGNORE_INDEX for row in rows[r])]
    assert not missing, f"{len(missing)} of {len(prompts)} prompts are not a supervised row prefix"
    assert all(len(ids) < max_length for _, ids in prompts)
    if budget_name == "tight":  # the rules were exercised, not bypassed
        assert stats.dropped["context_trimmed(kept)"] > 0
        assert stats.dropped["split_into_rows(kept)"] > 0


def test_trim_unit_cuts_context_left_to_right_and_never_a_target():
    pieces = [[1] * 5, [2] * 8, [3] * 4, [4] * 9]
    sup = [False, True, False, False]
    assert trim_unit(pieces, sup, 20) == [[1] * 5, [2] * 8, [3] * 4, [4] * 3]
    assert trim_unit(pieces, sup, 3) == [[1] * 3, [2] * 8, [], []]
    # what a prefix of the unit looks like does not depend on what follows it
    assert trim_unit(pieces[:2], sup[:2], 3) == trim_unit(pieces, sup, 3)[:2]


def test_units_and_rows_overlap_in_context_only_and_supervise_every_target_once():
    assert units([False, True, True, False, True, False]) == [(0, 3), (3, 5), (5, 6)]
    assert units([False, True]) == [(0, 2), (2, 2)]
    header = [[9] * 4]
    pieces = [[k // 2 + 1] * (6 if k % 2 == 0 else 3) for k in range(12)]  # 6 units of 6 + 3
    sup = [k % 2 == 1 for k in range(12)]
    budget = ContextBudget(40, 6)  # room: 40 - 4 - 6 = 30 tokens of units
    head, trimmed, rows = folded_rows(header, pieces, sup, budget, n_bos=0)
    supervised = [i for _, first, b in rows for i in range(first, b) if sup[i]]
    assert supervised == [i for i in range(12) if sup[i]]  # each target in exactly one row
    for a, first, b in rows:
        assert a <= first and sum(map(len, trimmed[a:b])) + 4 <= 40
    assert history_start([9] * 6, 0, 6, 30) == 0
    assert history_start([9] * 6, 5, 6, 30) == 3  # 3 units of 9 + 6 context tokens fit 30
