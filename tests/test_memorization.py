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
LORA = RECIPES / "adapter" / "lora.yaml"
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
    m = RunDir(run_dir).eval().read_metrics("memorized")
    assert m["inference"]["mode"] == "alpha_umi"
    # generation lengths default to the longest training target of each role
    decoding = m["inference"]["decoding"]
    assert decoding["max_new_tokens"] == decoding["longest_training_target"]
    assert_memorized(m, "alpha_umi")


def test_alpha_umi_mode_memorizes_with_adapters(memorized_run, tmp_path):
    """The adapter fragment: one LoRA adapter per role on the memorized backbone's export (what
    `train.py quickstart memorize adapter/lora` trains after its backbone), evaluated as a team of
    one base and three adapters."""
    _, run_dir = memorized_run
    base, lora_dir = RunDir(run_dir).stage("backbone").export, tmp_path / "lora"
    recipe = load_recipe([QUICKSTART, MEMORIZE, LORA], QUIET + [
        f"run.dir={lora_dir}", "stages.backbone.enabled=false", f"tokenizer.from_pretrained={base}",
        *[f"stages.{role}.init_from={base}" for role in ("planner", "caller", "summarizer")]])
    run_recipe(recipe)
    m = RunDir(lora_dir).eval().read_metrics("memorized")
    assert m["inference"]["mode"] == "alpha_umi"
    assert all(path.endswith("/adapter") for path in m["inference"]["models"].values())
    assert_memorized(m, "alpha_umi with adapters")


def test_single_llm_mode_memorizes(memorized_run):
    from evaluation.steps.teacher_forced import StaticEvaluation, run_static
    recipe, run_dir = memorized_run
    settings = StaticEvaluation.from_node({"test_sets": {"memorized": str(DIALOGS)}, "mode": "single",
                                           "out_dir": str(run_dir / "eval_single")})
    res = run_static(run_dir, recipe, settings)
    assert res["mode"] == "single"
    assert_memorized(res["metrics"]["memorized"], "single")


def test_agent_loop_replays_a_memorized_episode(memorized_run):
    from evaluation.agent.loop import run_episode, task_of
    from evaluation.episodes.executors import ReplayExecutor
    from evaluation.agent.setup import TeamSettings, evaluate_settings, run_team
    from trajectories.sources import load_trajectories
    recipe, run_dir = memorized_run
    team, _ = run_team(run_dir, recipe, TeamSettings.of(evaluate_settings({"mode": "alpha_umi"})))
    recorded = load_trajectories(DIALOGS, format="alpha_umi_conversations").trajectories[0]
    episode = run_episode(team, task_of(recorded), ReplayExecutor(recorded))
    assert episode["meta"]["termination"] == "conclusion"
    assert episode["turns"] == recorded["turns"]


def test_multitask_mode_memorizes(tmp_path):
    run_dir = tmp_path / "multitask"
    recipe = load_recipe([QUICKSTART, *MULTITASK], QUIET + [f"run.dir={run_dir}"])
    assert run_recipe(recipe) == ["multitask"]
    m = RunDir(run_dir).eval().read_metrics("memorized")
    assert m["inference"]["mode"] == "alpha_umi"  # the multitask export serves all three roles
    assert_memorized(m, "multitask")
