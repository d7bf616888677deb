"""Recipe composition, overrides and validation errors that name the key and its file."""
import pytest

import train
from conftest import QUICKSTART, RECIPES, REPO
from core.recipe import RecipeError, compose, load_recipe, redact
from train import COMPOSED_DIR, COMPOSED_HEADER, main, shipped_recipes


def test_every_shipped_recipe_validates():
    assert {p.name for p in shipped_recipes()} >= {"quickstart.yaml", "llama2_7b_toolbench.yaml",
                                                   "llama2_13b_toolbench.yaml"}
    assert main(["--validate"]) == 0


def test_composed_recipes_are_current(capsys):
    """recipes/composed/NAME.yaml holds, under its header, what `python train.py recipes/NAME.yaml
    --print-config` prints, for every shipped recipe and no other file."""
    problems = []
    for path in shipped_recipes():
        assert main([str(path), "--print-config"]) == 0
        printed = capsys.readouterr().out
        composed = COMPOSED_DIR / path.name
        if not composed.is_file():
            problems.append(f"{composed.relative_to(REPO)} is missing")
        elif composed.read_text() != COMPOSED_HEADER.format(name=path.name) + printed:
            problems.append(f"{composed.relative_to(REPO)} is stale")
    for extra in sorted(set(COMPOSED_DIR.glob("*.yaml")) - {COMPOSED_DIR / p.name for p in shipped_recipes()}):
        problems.append(f"{extra.relative_to(REPO)} has no recipes/{extra.name}")
    assert not problems, "; ".join(problems) + "; regenerate: python train.py --write-composed"


def test_write_composed_rewrites_the_folder_or_nothing(tmp_path, monkeypatch):
    out = tmp_path / "composed"
    monkeypatch.setattr(train, "COMPOSED_DIR", out)
    out.mkdir()
    (out / "removed_recipe.yaml").write_text("run: {name: x}\n")
    assert main(["--write-composed"]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in shipped_recipes())
    assert (out / "quickstart.yaml").read_text() == (COMPOSED_DIR / "quickstart.yaml").read_text()
    # a recipe that does not compose: an error, and no file is touched
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: {max_lenght: 512}\n")
    (out / "quickstart.yaml").write_text("old\n")
    monkeypatch.setattr(train, "shipped_recipes", lambda: [QUICKSTART, bad])
    assert main(["--write-composed"]) == 2
    assert (out / "quickstart.yaml").read_text() == "old\n"
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in shipped_recipes())


def test_paper_settings_in_the_7b_recipe():
    r = load_recipe([RECIPES / "llama2_7b_toolbench.yaml"])
    st = r["stages"]
    assert r["data"]["global_batch_size"] == 48 and r["data"]["max_length"] == 4096
    assert r["trainer"]["precision"].startswith("bf16")
    assert st["backbone"]["optimizer"]["lr"] == 5e-5 and st["backbone"]["trainer"]["max_epochs"] == 2
    assert st["backbone"]["scheduler"]["warmup_ratio"] == 0.4
    for role, epochs, warmup in (("planner", 1, 0.2), ("caller", 1, 0.2), ("summarizer", 2, 0.4)):
        assert st[role]["optimizer"] == {"lr": 1e-5, "weight_decay": 0.01}
        assert st[role]["trainer"]["max_epochs"] == epochs and st[role]["scheduler"]["warmup_ratio"] == warmup
        assert st[role]["init_from"] == "stage:backbone"


def test_fragments_then_file_then_overrides():
    r = load_recipe([QUICKSTART], ["stages.planner.trainer.max_epochs=3", "run.name=abc"])
    assert r["stages"]["planner"]["trainer"]["max_epochs"] == 3
    assert r["run"]["dir"] == "runs/abc"  # interpolation sees the override
    assert r["model"]["config"]["model_type"] == "llama"  # from the model fragment
    assert r["stages"]["backbone"]["optimizer"]["lr"] == 3e-3  # quickstart overrides stages/glpft


def test_overlay_files_merge_left_to_right(tmp_path):
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text("stages:\n  caller: {enabled: false}\ndata: {max_length: 256}\n")
    r = load_recipe([QUICKSTART, overlay])
    assert r["stages"]["caller"]["enabled"] is False and r["data"]["max_length"] == 256


@pytest.mark.parametrize("override,message", [
    ("trainer.max_epoch=3", "unknown key 'trainer.max_epoch' (from command line)"),
    ("data.micro_batch_size=two", "key 'data.micro_batch_size': 'two' is not of type 'integer' (from command line)"),
    ("stages.planner.role=critic", "key 'stages.planner.role'"),
    ("stages.planner.init_from=stage:nowhere", "stage 'nowhere' is not an enabled stage"),
])
def test_bad_overrides_name_the_key(override, message):
    with pytest.raises(RecipeError) as err:
        load_recipe([QUICKSTART], [override])
    assert message in str(err.value)


def test_errors_name_the_file_the_key_came_from(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"defaults: [{QUICKSTART}]\noptimizer: {{lr: 1.0e-4, _target_: torch.optim.AdamW}}\n"
                   "data: {max_lenght: 512}\n")
    with pytest.raises(RecipeError, match=r"unknown key 'data.max_lenght' \(from .*bad.yaml\)"):
        load_recipe([bad])
    missing = tmp_path / "missing.yaml"
    missing.write_text("run: {name: x, dir: y}\n")
    with pytest.raises(RecipeError, match="missing required key 'model'"):
        load_recipe([missing])


def test_unknown_fragment_and_bad_yaml(tmp_path):
    f = tmp_path / "r.yaml"
    f.write_text("defaults: [model/nonexistent]\n")
    with pytest.raises(RecipeError, match="model/nonexistent.*not found"):
        compose([f])
    f.write_text("a: [1, 2\n")
    with pytest.raises(RecipeError, match="cannot parse YAML"):
        compose([f])


def test_cli_reports_errors_and_prints_config(capsys):
    assert main([str(QUICKSTART), "trainer.max_epoch=3", "--validate"]) == 2
    assert "trainer.max_epoch" in capsys.readouterr().err
    assert main([str(QUICKSTART), "--print-config"]) == 0
    assert "stages:" in capsys.readouterr().out


def test_secrets_are_redacted():
    assert redact({"wandb": {"api_key": "abc", "api_key_env": "WANDB_API_KEY"}, "lr": 1}) == \
        {"wandb": {"api_key": "***", "api_key_env": "WANDB_API_KEY"}, "lr": 1}
