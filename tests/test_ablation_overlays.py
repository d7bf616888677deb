"""Each ablation overlay composes to what it claims, over the quickstart and the paper's 7B base:
the enabled stages, where each starts (base model or the backbone's export), and its data
(instruction part, data fraction, multitask union); and the evaluation serves the right models."""
from pathlib import Path

import pytest

from conftest import ABLATIONS, QUICKSTART, RECIPES
from evaluation.agent.exports import find_exports, resolve_mode
from core.recipe import enabled_stages, load_recipe
from core.run_dir import RunDir
from core.build_sites import DATA
from core.stage_config import resolve_init, stage_settings

BASES = {"quickstart": QUICKSTART, "7b": RECIPES / "llama2_7b_toolbench.yaml"}
BASE_MODEL = {"quickstart": None, "7b": "meta-llama/Llama-2-7b-hf"}  # model.init_from of the base
ROLES3 = ("planner", "caller", "summarizer")


def compose(base: str, overlay: str | None, *overrides):
    files = [BASES[base]] + ([ABLATIONS / f"{overlay}.yaml"] if overlay else [])
    return load_recipe(files, list(overrides))


def stages(recipe) -> dict:
    """{stage: (role, init_from, resolved init, instruction_part, data_fraction)}"""
    out = {}
    for name in enabled_stages(recipe):
        s = stage_settings(recipe, name)
        out[name] = (s["role"], s["init_from"], resolve_init(recipe, s), s["data"]["instruction_part"],
                     s["data"]["data_fraction"])
    return out


def glpft_stages(recipe, base, part1="all", part2="all", fraction=1.0):
    backbone = str(RunDir.of(recipe).stage("backbone").export)
    return {"backbone": ("backbone", None, BASE_MODEL[base], part1, fraction),
            **{r: (r, "stage:backbone", backbone, part2, fraction) for r in ROLES3}}


def test_every_overlay_is_covered():
    assert {p.stem for p in ABLATIONS.glob("*.yaml")} == {
        "alpha_umi", "alpha_umi_no_reuse", "multi_llm_one_stage", "single_llm",
        "single_llm_multitask", "data_fraction",
        "alpha_umi_lora",  # covered in test_lora.py
        # GenTool's, covered in test_gentool_recipes.py
        "gentool_selection_only", "gentool_joint", "gentool_alpha_umi_mix"}


@pytest.mark.parametrize("base", BASES)
def test_alpha_umi_is_the_base_glpft_recipe(base):
    r = compose(base, "alpha_umi")
    assert r == compose(base, None)  # "nothing to change": the overlay only names the variant
    assert enabled_stages(r)[0] == "backbone" and set(enabled_stages(r)) == {"backbone", *ROLES3}
    assert stages(r) == glpft_stages(r, base)


@pytest.mark.parametrize("base", BASES)
def test_alpha_umi_no_reuse_splits_the_instructions(base):
    r = compose(base, "alpha_umi_no_reuse")
    assert stages(r) == glpft_stages(r, base, part1="global", part2="local")
    # only the data changes: optimisation settings are the base recipe's
    ref = compose(base, "alpha_umi")
    for name in enabled_stages(r):
        a, b = stage_settings(r, name), stage_settings(ref, name)
        assert (a["optimizer"], a["scheduler"], a["trainer"]) == (b["optimizer"], b["scheduler"], b["trainer"])


def train_ids(recipe, stage) -> set:
    """Ids of the training trajectories a stage's datamodule selects (no tokenizer needed)."""
    from datamodules.tool_use_datamodule import ToolUseDataModule
    s = stage_settings(recipe, stage)
    data = {k: v for k, v in s["data"].items() if k != "_target_" and k not in DATA.consumed}
    dm = ToolUseDataModule(role=s["role"], template=recipe["template"], add_bos=True, **data)
    return {t["id"] for t in dm.load_split_trajectories()["train"]}


def test_no_reuse_parts_are_disjoint_and_cover_the_training_split():
    r = compose("quickstart", "alpha_umi_no_reuse")
    stage1, stage2 = train_ids(r, "backbone"), train_ids(r, "planner")
    everything = train_ids(compose("quickstart", "alpha_umi"), "planner")
    assert stage1 and stage2 and not stage1 & stage2
    assert stage1 | stage2 == everything
    reuse = compose("quickstart", "alpha_umi")
    assert train_ids(reuse, "backbone") == train_ids(reuse, "planner") == everything


@pytest.mark.parametrize("base", BASES)
def test_data_fraction_applies_to_every_stage(base):
    r = compose(base, "data_fraction")
    assert stages(r) == glpft_stages(r, base, fraction=0.5)
    r = compose(base, "data_fraction", "data.data_fraction=0.25")
    assert {v[4] for v in stages(r).values()} == {0.25}


def test_data_fraction_subsamples_the_training_trajectories():
    full = train_ids(compose("quickstart", "alpha_umi"), "planner")
    half = train_ids(compose("quickstart", "data_fraction"), "planner")
    assert half < full and 0 < len(half) < len(full)


@pytest.mark.parametrize("base", BASES)
def test_multi_llm_one_stage_trains_each_role_from_the_base_model(base):
    r = compose(base, "multi_llm_one_stage")
    assert set(enabled_stages(r)) == set(ROLES3)
    assert stages(r) == {role: (role, None, BASE_MODEL[base], "all", 1.0) for role in ROLES3}


@pytest.mark.parametrize("base", BASES)
def test_single_llm_is_stage_one_only(base):
    r = compose(base, "single_llm")
    assert stages(r) == {"backbone": ("backbone", None, BASE_MODEL[base], "all", 1.0)}
    ref = compose(base, "alpha_umi")
    assert stage_settings(r, "backbone") == stage_settings(ref, "backbone")  # the same stage 1


@pytest.mark.parametrize("base", BASES)
def test_single_llm_multitask_is_one_model_on_the_union(base):
    r = compose(base, "single_llm_multitask")
    assert stages(r) == {"multitask": ("multitask", None, BASE_MODEL[base], "all", 1.0)}
    s = stage_settings(r, "multitask")
    assert s["scheduler"]["warmup_ratio"] == 0.4 and s["trainer"]["max_epochs"] == 2
    if base == "7b":  # the paper's stage-1 settings: lr 5e-5, 2 epochs, warmup 0.4
        assert s["optimizer"]["lr"] == stage_settings(compose(base, "alpha_umi"), "backbone")["optimizer"]["lr"]


def test_multitask_data_is_the_union_of_the_role_datasets():
    from core.vocabulary import TEAM_ROLES as MULTITASK_ROLES
    from datamodules.tool_use_datamodule import ToolUseDataModule
    r = compose("quickstart", "single_llm_multitask")
    s = stage_settings(r, "multitask")
    data = {k: v for k, v in s["data"].items() if k != "_target_" and k not in DATA.consumed}
    dm = ToolUseDataModule(role="multitask", template=r["template"], add_bos=True, **data)
    assert dm.roles == MULTITASK_ROLES == ROLES3
    trajs = dm.load_split_trajectories()["train"]
    # golden-call (reference-only) records are caller data, so the union keeps them
    assert any(t.get("meta", {}).get("reference_only") for t in trajs)
    planner = ToolUseDataModule(role="planner", template=r["template"], add_bos=True, **data)
    assert len(planner.load_split_trajectories()["train"]) < len(trajs)


def test_overlays_compose_with_each_other():
    r = load_recipe([BASES["quickstart"], ABLATIONS / "alpha_umi_no_reuse.yaml", ABLATIONS / "data_fraction.yaml"])
    assert stages(r) == glpft_stages(r, "quickstart", part1="global", part2="local", fraction=0.5)


# ----- which models the evaluation uses ---------------------------------------------------
def _fake_exports(recipe, run_dir: Path):
    for name in enabled_stages(recipe):
        RunDir(run_dir).stage(name).export.mkdir(parents=True)
        (RunDir(run_dir).stage(name).export / "config.json").write_text("{}")
        RunDir(run_dir).stage(name).write_done({"role": recipe["stages"][name]["role"]})


@pytest.mark.parametrize("overlay,mode,models", [
    ("alpha_umi", "alpha_umi", {"planner": "planner", "caller": "caller", "summarizer": "summarizer"}),
    ("alpha_umi_no_reuse", "alpha_umi", {"planner": "planner", "caller": "caller", "summarizer": "summarizer"}),
    ("multi_llm_one_stage", "alpha_umi", {"planner": "planner", "caller": "caller", "summarizer": "summarizer"}),
    ("single_llm", "single", {"backbone": "backbone"}),
    ("single_llm_multitask", "alpha_umi", {"planner": "multitask", "caller": "multitask", "summarizer": "multitask"}),
])
def test_evaluation_mode_and_models(tmp_path, overlay, mode, models):
    run = tmp_path / overlay
    recipe = compose("quickstart", overlay, f"run.dir={run}")
    _fake_exports(recipe, run)
    exports = find_exports(run, recipe)
    assert resolve_mode("auto", exports, run) == mode
    need = ROLES3 if mode == "alpha_umi" else ("backbone",)
    assert {r: exports[r] for r in need} == {r: str(RunDir(run).stage(stage).export) for r, stage in models.items()}
    assert find_exports(run) == exports  # from the DONE markers alone as well


def test_a_role_export_wins_over_the_multitask_one(tmp_path):
    run = tmp_path / "r"
    for name, role in (("multitask", "multitask"), ("planner", "planner")):
        RunDir(run).stage(name).export.mkdir(parents=True)
        (RunDir(run).stage(name).export / "config.json").write_text("{}")
    recipe = {"stages": {"multitask": {"role": "multitask"}, "planner": {"role": "planner"}}}
    export = lambda stage: str(RunDir(run).stage(stage).export)  # noqa: E731
    assert find_exports(run, recipe) == {"planner": export("planner"), "caller": export("multitask"),
                                         "summarizer": export("multitask")}
