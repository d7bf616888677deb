"""Train a recipe's stage graph (GLPFT: backbone, then planner / caller / summarizer).

    python train.py recipes/quickstart.yaml
    python train.py recipes/quickstart.yaml stages.planner.trainer.max_epochs=3
    python train.py recipes/quickstart.yaml optimizer._target_=torch.optim.SGD '~optimizer.betas' '~optimizer.eps'
    python train.py recipes/llama2_7b_toolbench.yaml recipes/ablations/single_llm.yaml
    python train.py recipes/quickstart.yaml --stage planner
    python train.py recipes/quickstart.yaml --print-config
    python train.py recipes/quickstart.yaml --print-config --stage planner   # its completed settings
    python train.py --validate            # every shipped recipe, nothing trained
    python train.py --write-composed      # recipes/composed/NAME.yaml: each shipped recipe composed

A bad recipe, data file or run directory stops with one or two lines and exit code 2; --debug
(or ALPHA_UMI_DEBUG=1) shows the traceback.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from core.atomic_files import write_text_atomic
from core.errors import ProjectError, run_cli
from core.recipe import RECIPES_ROOT, RecipeError, load_recipe, redact, split_args, to_yaml

COMPOSED_DIR = RECIPES_ROOT / "composed"
COMPOSED_HEADER = ("# Generated: what `python train.py recipes/{name} --print-config` prints. Do not edit.\n"
                   "# Regenerate every composed recipe: python train.py --write-composed\n")


def shipped_recipes() -> list[Path]:
    """Top-level recipes (fragments and overlays are checked through them)."""
    return sorted(p for p in RECIPES_ROOT.glob("*.yaml"))


def validate_all() -> int:
    from pipeline.preflight import check_embedded_settings
    failed = 0
    for path in shipped_recipes():
        try:
            check_embedded_settings(load_recipe([path]))
            print(f"ok      {path.relative_to(RECIPES_ROOT.parent)}")
        except ProjectError as exc:  # the recipe, or settings it embeds
            failed += 1
            print(f"INVALID {path.relative_to(RECIPES_ROOT.parent)}\n  {exc}")
    return 1 if failed else 0


def composed_text(path: Path) -> str:
    """recipes/composed/NAME.yaml of the shipped recipe `path`: a header, then --print-config's output."""
    return COMPOSED_HEADER.format(name=path.name) + to_yaml(redact(load_recipe([path])))


def write_composed() -> int:
    """Rewrite recipes/composed/ from the shipped recipes: nothing is written unless every recipe
    composes, each file is replaced atomically, and a file whose recipe is gone is removed."""
    texts = {COMPOSED_DIR / p.name: composed_text(p) for p in shipped_recipes()}
    for path in sorted(set(COMPOSED_DIR.glob("*.yaml")) - set(texts)):
        path.unlink()
    for path, text in texts.items():
        write_text_atomic(path, text)
        print(f"wrote   {os.path.relpath(path, RECIPES_ROOT.parent)}")
    return 0


def stage_settings_of(recipe: dict, name: str) -> dict:
    """A stage's completed settings (core.stage_config.stage_settings), or a RecipeError naming the stages."""
    from core.stage_config import stage_settings
    if name not in recipe["stages"]:
        raise RecipeError(f"--stage {name}: the recipe has no such stage ({', '.join(recipe['stages'])})")
    return stage_settings(recipe, name)


def main(argv=None) -> int:
    return run_cli("train.py", _main, argv)


def _main(argv) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("args", nargs="*", help="recipe YAML files (merged in order), then key=value overrides (~key removes a key)")
    parser.add_argument("--stage", help="run only this stage (its init_from stage must be finished); "
                        "with --print-config, print its completed settings")
    parser.add_argument("--print-config", action="store_true",
                        help="print the composed recipe (with --stage: that stage's settings, every default "
                        "filled in) and exit")
    parser.add_argument("--validate", action="store_true",
                        help="validate the given recipe, or every shipped recipe if none is given, and exit")
    parser.add_argument("--write-composed", action="store_true",
                        help="write recipes/composed/NAME.yaml (the composed form) of every shipped recipe and exit")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error (or ALPHA_UMI_DEBUG=1)")
    ns = parser.parse_intermixed_args(argv)
    files, overrides = split_args(ns.args)
    if ns.validate and not files:
        return validate_all()
    if ns.write_composed:
        return write_composed()
    recipe = load_recipe(files, overrides)
    if ns.print_config:
        sys.stdout.write(to_yaml(redact(stage_settings_of(recipe, ns.stage) if ns.stage else recipe)))
        return 0
    if ns.validate:
        from pipeline.preflight import check_embedded_settings, check_model_configs
        check_model_configs(recipe)
        check_embedded_settings(recipe)
        print("ok")
        return 0
    from pipeline.run_summary import quiet_third_party, run_summary
    quiet_third_party()
    from pipeline.stage_runner import enabled_stages, run_recipe  # heavy imports only when training
    ran = run_recipe(recipe, only=ns.stage)
    print("\n" + run_summary(recipe, [ns.stage] if ns.stage else enabled_stages(recipe), ran))
    return 0


if __name__ == "__main__":
    sys.exit(main())
