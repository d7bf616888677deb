"""One home for every default: a stage's settings are completed once (core.stage_config), from the
recipe schema's `default`s and the signatures of what the sections configure, and no other place
restates a default."""
import ast
import inspect

import pytest

from conftest import QUICKSTART, REPO
from core.batch_plan import BatchPlan
from core.build_sites import SITES
from core.instantiate import locate
from core.recipe import load_recipe
from core.schema import section_defaults
from core.stage_config import SECTIONS, stage_settings
from pipeline.stage_setup import build_datamodule

SHIPPED = sorted((REPO / "recipes").glob("*.yaml"))
BUILT = {site.section: site for site in SITES if site.section in SECTIONS}


# ----- (a) the batch a recipe asks for is the batch it trains ------------------------------------
@pytest.mark.parametrize("left_out", [
    [],
    ["~data.micro_batch_size"],
    ["~trainer.accumulate_grad_batches"],
    ["~data.micro_batch_size", "~trainer.accumulate_grad_batches"],
    ["~data.micro_batch_size", "data.packing.enabled=true"],
])
def test_examples_per_optimizer_step_equal_the_global_batch_size(left_out, tmp_path, bpe_tokenizer):
    recipe = load_recipe([QUICKSTART], [f"run.dir={tmp_path}", f"data.cache_dir={tmp_path / 'cache'}",
                                        "data.global_batch_size=8", *left_out])
    settings = stage_settings(recipe, "backbone")
    assert BatchPlan.of(settings, world_size=1).examples_per_step == 8
    assert BatchPlan.of(settings, world_size=2).examples_per_step == 8
    dm = build_datamodule(recipe, settings, bpe_tokenizer)
    dm.prepare_data()
    per_step = [sum(b["num_examples"] for b in step) for step in dm.train_dataloader()]
    assert len(per_step) > 1 and set(per_step[:-1]) == {8}, per_step


def test_a_left_out_micro_batch_size_has_one_value():
    r = load_recipe([QUICKSTART], ["~data.micro_batch_size"])
    s = stage_settings(r, "backbone")
    assert s["data"]["micro_batch_size"] == section_defaults("data")["micro_batch_size"]


# ----- (b) schema defaults and signature defaults are two homes for disjoint keys -----------------
def _shipped_stage_settings():
    for path in SHIPPED:
        recipe = load_recipe([path])
        for name in recipe["stages"]:
            yield path.name, name, stage_settings(recipe, name)


def test_schema_defaults_of_a_built_section_are_only_for_keys_its_builder_consumes():
    """A key the callable takes has its default in the callable's signature; the schema holds the
    defaults of the keys the builder takes out first (nothing else would state them)."""
    for section, site in BUILT.items():
        for key in section_defaults(section):
            assert key in site.consumed, (f"{section}.{key} has a schema default but {site.section}'s "
                                          "callable takes it: its signature is its home")


def test_every_completed_key_agrees_with_the_signature_of_what_it_configures():
    for recipe, stage, settings in _shipped_stage_settings():
        for section, site in BUILT.items():
            node = settings[section]
            fn = locate(node.get("_target_") or site.default_target)
            params = inspect.signature(fn).parameters
            for key, value in site.defaults(node).items():
                assert params[key].default == value
                schema = section_defaults(section)
                assert key not in schema, f"{recipe} {stage}: {section}.{key} has two homes"
            for key in section_defaults(section):  # consumed keys never reach the callable
                assert key not in params or key in site.consumed, f"{section}.{key} ({recipe} {stage})"


def test_settings_the_code_reads_itself_are_completed_from_the_schema():
    s = stage_settings(load_recipe([QUICKSTART], ["~checkpoint.every_n_train_steps"]), "backbone")
    for section in ("checkpoint", "loss"):
        assert section_defaults(section) and section_defaults(section).items() <= \
            {k: s[section][k] for k in section_defaults(section)}.items()
    assert s["checkpoint"]["every_n_train_steps"] == section_defaults("checkpoint")["every_n_train_steps"]
    assert s["seed"] == s["data"]["seed"]  # data.seed is run.seed unless set


def test_a_required_setting_says_so():
    from core.recipe import RecipeError
    with pytest.raises(RecipeError, match=r"missing required key 'data.sources' .*ToolUseDataModule needs it"):
        load_recipe([QUICKSTART], ["~data.sources"])


# ----- (c) nothing else restates a default -----------------------------------------------------
# Keys whose default had more than one home; each now has one (the schema, or the signature of
# the callable named here): no `.get(key, <literal>)`, `.setdefault(key, <literal>)` or parameter
# `key=<literal>` elsewhere.
HOMES = {"micro_batch_size": None, "global_batch_size": None, "accumulate_grad_batches": None,
         "gradient_clip_val": None, "every_n_train_steps": None, "save_weights_only": None,
         "export_dtype": None, "check_disk_space": None, "add_bos": None, "chunk_size": None,
         "weight_decay": None, "max_new_tokens": None, "batch_size": None, "seed": None, "strategy": None,
         "dtype": "lightning_modules/causal_lm.py", "cache_dir": "datamodules/tool_use_datamodule.py",
         "val_fraction": "datamodules/tool_use_datamodule.py",
         "max_length": "datamodules/tool_use_datamodule.py"}
# Known restatements left for now, each said why (the list may only shrink).
OTHER_MEANINGS: set[tuple[str, str, str]] = set()
CODE_DIRS = ("core", "trajectories", "prompting", "datamodules", "lightning_modules", "simulators",
             "evaluation", "pipeline", "cli")


def _restatements(source: str, rel: str) -> list[str]:
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                and node.func.attr in ("get", "setdefault") and len(node.args) == 2:
            key, value = node.args
            if isinstance(key, ast.Constant) and key.value in HOMES and HOMES[key.value] != rel \
                    and isinstance(value, ast.Constant) and value.value is not None:
                out.append(f"{rel}:{node.lineno}: {ast.unparse(node)}")
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            a = node.args
            pos = a.posonlyargs + a.args
            pairs = list(zip(pos[len(pos) - len(a.defaults):], a.defaults)) + list(zip(a.kwonlyargs, a.kw_defaults))
            for arg, value in pairs:
                if arg.arg in HOMES and HOMES[arg.arg] != rel and (rel, node.name, arg.arg) not in OTHER_MEANINGS \
                        and isinstance(value, ast.Constant) and value.value is not None:
                    out.append(f"{rel}:{node.lineno}: {node.name}({arg.arg}={value.value!r})")
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.FloorDiv) and rel != "core/context_budget.py" \
                and isinstance(node.right, ast.Constant) and node.right.value == 4 \
                and "max_length" in ast.unparse(node.left):
            out.append(f"{rel}:{node.lineno}: {ast.unparse(node)} (ContextBudget.of is the context reserve's home)")
        if isinstance(node, ast.Constant) and node.value == ".cache/datasets" \
                and rel != "datamodules/tool_use_datamodule.py":
            out.append(f"{rel}:{node.lineno}: '.cache/datasets' (data.cache_dir's home is ToolUseDataModule)")
    return out


def test_no_default_is_restated_outside_its_home():
    files = [p for d in CODE_DIRS for p in sorted((REPO / d).rglob("*.py"))]
    files += sorted(REPO.glob("*.py"))
    found = [line for p in files for line in _restatements(p.read_text(), p.relative_to(REPO).as_posix())]
    assert not found, "defaults restated outside their home:\n" + "\n".join(found)


def test_the_scan_sees_a_restated_default():
    source = 'def f(d, micro_batch_size=1):\n    return d.get("seed", 42), d["max_length"] // 4, ".cache/datasets"\n'
    assert len(_restatements(source, "pipeline/probe.py")) == 4
    assert _restatements('def build(dtype="float32"): ...', "lightning_modules/causal_lm.py") == []


def test_print_config_of_a_stage_shows_its_completed_settings(capsys):
    import yaml

    import train
    assert train.main([str(QUICKSTART), "~data.micro_batch_size", "--print-config", "--stage", "planner"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["name"] == "planner" and printed["init_from"] == "stage:backbone"
    assert printed["data"]["micro_batch_size"] == section_defaults("data")["micro_batch_size"]
    assert printed["model"]["dtype"] and printed["checkpoint"]["every_n_train_steps"]
    assert train.main([str(QUICKSTART), "--print-config", "--stage", "nope"]) == 2
    assert "--stage nope: the recipe has no such stage" in capsys.readouterr().err
