"""The GenTool recipes and overlays compose to what they claim: ranking -> selection from its
export; selection only from the base model; one joint stage; α-UMi trajectories mixed into the
selection stage with the backbone's view."""
import pytest

from conftest import ABLATIONS as ABL, RECIPES
from core.recipe import load_recipe
from core.build_sites import DATA
from core.stage_config import stage_settings
from pipeline.stage_runner import enabled_stages

BASES = [RECIPES / "gentool.yaml", RECIPES / "gentool_llama3_8b.yaml"]


def roles(recipe):
    return {n: (stage_settings(recipe, n)["role"], stage_settings(recipe, n)["init_from"])
            for n in enabled_stages(recipe)}


@pytest.mark.parametrize("base", BASES)
def test_gentool_recipes_and_overlays(base):
    r = load_recipe([base])
    assert roles(r) == {"ranking": ("ranking", None), "selection": ("selection", "stage:ranking")}
    assert r["evaluate"]["task"] == "gentool" and r["data"]["sources"][0]["settings"]["corpus"] == "gentool"
    assert roles(load_recipe([base, ABL / "gentool_selection_only.yaml"])) == {"selection": ("selection", None)}
    assert roles(load_recipe([base, ABL / "gentool_joint.yaml"])) == {"selection": ("ranking_selection", None)}
    mix = load_recipe([base, ABL / "gentool_alpha_umi_mix.yaml"])
    sel = stage_settings(mix, "selection")["data"]
    assert sel["trajectory_role"] == "backbone"
    assert sel["sources"][0]["settings"] == r["data"]["sources"][0]["settings"]
    assert sel["sources"][1]["format"] == "alpha_umi_chains"
    assert stage_settings(mix, "ranking")["data"]["sources"] == r["data"]["sources"]


def test_mixed_stage_reads_selection_examples_and_trajectories(tmp_path):
    from datamodules.tool_use_datamodule import ToolUseDataModule
    from simulators.sources import resolve_simulated_sources
    mix = load_recipe([BASES[0], ABL / "gentool_alpha_umi_mix.yaml"], [f"run.dir={tmp_path}"])
    s = stage_settings(mix, "selection")
    data = {k: v for k, v in s["data"].items() if k != "_target_" and k not in DATA.consumed}
    data["sources"] = resolve_simulated_sources(data["sources"], None, str(tmp_path / "cache"))
    dm = ToolUseDataModule(role="selection", template=mix["template"], add_bos=True, **data)
    train = dm.load_split_trajectories()["train"]
    assert any("toolset" in t for t in train) and any("turns" in t for t in train)
