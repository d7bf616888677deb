"""The memorization check ("overfit a small batch", end to end): the embedded default trained on
two shipped training dialogs until it has memorized them must score near 100 on those same
dialogs through the real inference path (template rendering, the one context budget, EOS,
generation stopping, output parsing) in α-UMi, single-LLM and multitask mode, and replay one
whole episode. A failure points at a difference between training and inference.
~10 minutes of CPU: marked slow, run by .ci/run."""

import pytest

from core.run_dir import RunDir

from conftest import ABLATIONS, QUICKSTART, RECIPES, REPO
from core.recipe import load_recipe
from pipeline.stage_runner import run_recipe

pytestmark = pytest.mark.slow

MEMORIZE = RECIPES / "checks" / "memorize.yaml"
MULTITASK = [ABLATIONS / "single_llm_multitask.yaml", MEMORIZE,
             RECIPES / "checks" / "memorize_multitask.yaml"]
DIALOGS = REPO / "data" / "toolbench" / "memorize_conversations.json"
QUIET = ["logger.progress_bar=false"]


def assert_memorized(m: dict, mode: str):
    got = {k: m[k] for k in ("plan_acc", "act_em", "hallu", "arg_f1", "rouge_l")}
    assert m["n_steps"] == 4 and m["n_missing"] == 0, mode
    assert got["plan_acc"] >= 95 and got["act_em"] >= 95 and got["hallu"] == 0, (mode, got)
    assert got["arg_f1"] >= 95 and got["rouge_l"] >= 90, (mode, got)
    assert m["generation_hit_limit"] == {"planner": 0, "caller": 0, "summarizer": 0}, mode


@pytest.fixture(scope="module")
def memorized_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("memorize") / "run"
    recipe = load_recipe([QUICKSTART, MEMORIZE], QUIET + [f"run.dir={run_dir}"])
    run_recipe(recipe)
    return recipe, run_dir


def test_alpha_umi_mode_memorizes(memorized_run):
    _, run_dir = memorized_run
    m = RunDir(run_dir).eval().read_metrics()
    assert m["inference"]["mode"] == "alpha_umi"
    # generation lengths default to the longest training target of each role
    decoding = m["inference"]["decoding"]
    assert decoding["max_new_tokens"] == decoding["longest_training_target"]
    assert_memorized(m, "alpha_umi")


def test_single_llm_mode_memorizes(memorized_run):
    from evaluation.steps.teacher_forced import run_static
    recipe, run_dir = memorized_run
    res = run_static(run_dir, DIALOGS, recipe=recipe, mode="single", out_dir=run_dir / "eval_single")
    assert res["mode"] == "single"
    assert_memorized(res["metrics"], "single")


def test_agent_loop_replays_a_memorized_episode(memorized_run):
    from evaluation.agent.loop import run_episode, task_of
    from evaluation.episodes.executors import ReplayExecutor
    from evaluation.agent.team import build_team
    from evaluation.agent.exports import find_exports, generation_lengths
    from prompting.prompt_template import PromptTemplate
    from trajectories.sources import load_trajectories
    recipe, run_dir = memorized_run
    exports = find_exports(run_dir, recipe)
    lengths, _ = generation_lengths(None, exports, "alpha_umi")
    team = build_team(PromptTemplate(recipe["template"]), "alpha_umi", exports,
                      max_new_tokens=lengths, max_length=recipe["data"]["max_length"],
                      context_reserve=recipe["data"]["context_reserve"])
    recorded = load_trajectories(DIALOGS, format="alpha_umi_conversations").trajectories[0]
    episode = run_episode(team, task_of(recorded), ReplayExecutor(recorded))
    assert episode["meta"]["termination"] == "answer"
    assert episode["turns"] == recorded["turns"]


def test_multitask_mode_memorizes(tmp_path):
    run_dir = tmp_path / "multitask"
    recipe = load_recipe([QUICKSTART, *MULTITASK], QUIET + [f"run.dir={run_dir}"])
    assert run_recipe(recipe) == ["multitask"]
    m = RunDir(run_dir).eval().read_metrics()
    assert m["inference"]["mode"] == "alpha_umi"  # the multitask export serves all three roles
    assert_memorized(m, "multitask")
