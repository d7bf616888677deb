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
from prompting.text_encoder import TextEncoder

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
    tpl, enc = PromptTemplate(load_template()), TextEncoder(bpe_tokenizer, add_bos=True)
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


def test_trim_unit_keeps_the_turn_boundaries_after_a_cut_piece():
    pieces, sup = [[1] * 5, [2] * 2, [3] * 6, [4] * 1, [5] * 2, [6] * 3], [False] * 5 + [True]
    keep = [False, True, False, True, True, False]
    # 9 tokens of room: the protected pieces after each cut (2 + 1 + 2) are reserved first
    assert trim_unit(pieces, sup, 9, keep=keep) == [[1] * 4, [2] * 2, [], [4], [5] * 2, [6] * 3]
    assert trim_unit(pieces, sup, 5, keep=keep) == [[], [2] * 2, [], [4], [5] * 2, [6] * 3]


def _long_turns(thought: str, n: int = 3) -> dict:
    tools = [{"name": "f", "description": "d", "parameters": {}}]
    turns = []
    for i in range(n):
        turns += [{"role": "planner", "thought": f"{thought} {i}", "decision": "call"},
                  {"role": "caller", "name": "f", "arguments": "{}"},
                  {"role": "observation", "content": f"résultat {i}"}]
    return {"id": "long", "tools": tools, "instruction": "Do it.", "turns": turns}


def test_an_overflowing_caller_context_keeps_the_turn_prefix_in_rows_and_prompts(bpe_tokenizer):
    """A planner thought longer than the room is cut, and the caller's `Caller:` prefix (with the
    planner's EOS and newline before it) stays, in the training row and the inference prompt."""
    from datamodules.step_context import fitted_text, prompt_ids
    tpl, enc = PromptTemplate(load_template()), TextEncoder(bpe_tokenizer, add_bos=True)
    traj = _long_turns("a very long thought " * 80, n=1)
    budget = ContextBudget(300, 60)
    stats = EncodeStats()
    rows = [r for ex in role_view(tpl, traj, "caller") for r in encode_example(ex, enc, budget, stats)]
    assert stats.dropped["context_trimmed(kept)"] > 0 and rows
    text = bpe_tokenizer.decode(rows[0]["input_ids"])
    assert "</s>\nCaller: Action: f" in text
    prompt = tpl.render_prompt("caller", {**traj, "turns": traj["turns"][:1]}, "caller")
    fitted = fitted_text(enc, prompt, "caller", budget)
    assert fitted.endswith("</s>\nCaller:") and "a very long thought" in fitted
    ids = prompt_ids(enc, prompt, "caller", budget)
    assert rows[0]["input_ids"][:len(ids)] == ids and rows[0]["labels"][len(ids)] != IGNORE_INDEX


def test_a_cut_lands_on_a_character_boundary_and_the_ids_are_the_texts(bpe_tokenizer):
    """A context cut inside multi-byte text (byte-level tokens split characters) keeps whole
    characters: the prompt's ids are the tokenizer's ids of its text, which has no U+FFFD."""
    from datamodules.step_context import fitted_text, prompt_ids
    tpl, enc = PromptTemplate(load_template()), TextEncoder(bpe_tokenizer, add_bos=True)
    traj = _long_turns("思考中文字符é" * 60)
    prompt = tpl.render_prompt("planner", traj, "planner")
    seen = set()
    for max_length in range(200, 260, 3):
        budget = ContextBudget(max_length, 40)
        text, ids = fitted_text(enc, prompt, "planner", budget), prompt_ids(enc, prompt, "planner", budget)
        assert "\ufffd" not in text and text.endswith("\nPlanner:")
        assert ids == enc.bos + bpe_tokenizer(text, add_special_tokens=False)["input_ids"]
        assert bpe_tokenizer.decode(ids[1:]) == text
        seen.add(len(text))
    assert len(seen) > 5  # the budgets cut at many places
