"""`evaluate.py gentool --run RUN [--references TEST.jsonl]`: a run's GenTool models over a
tool-selection test set (default: the split the run's synthesis wrote) -> gentool_metrics.json,
gentool_predictions.jsonl and gentool_table.md in the run's eval folder."""
from __future__ import annotations

from evaluation.agent.exports import load_run_recipe
from evaluation.gentool.recipe import evaluate_gentool_recipe


def add_args(p) -> None:
    p.add_argument("--run", required=True, dest="run_dir", help="run directory (with recipe.yaml and <stage>/hf)")
    p.add_argument("--references", help="test examples (selection JSONL); default: the split the "
                                        "run's GenTool synthesis wrote")
    p.add_argument("--train", help="also score these training examples (default with no "
                                   "--references: the synthesized training split)")
    p.add_argument("--recipe", nargs="+", help="recipe files (default: RUN/recipe.yaml)")
    p.add_argument("--out", help="output folder (default: RUN/eval)")
    p.add_argument("--limit", type=int, help="only the first N examples of each set")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--max-new-tokens", type=int,
                   help="generation length (default: each model's longest training target)")
    p.add_argument("--device")
    p.add_argument("--dtype")


def run(args) -> int:
    recipe = load_run_recipe(args.run_dir, args.recipe)
    recipe["run"] = {**(recipe.get("run") or {}), "dir": args.run_dir}
    given = {"references": args.references, "include_train": bool(args.train) or not args.references,
             "limit": args.limit, "batch_size": args.batch_size, "max_new_tokens": args.max_new_tokens,
             "device": args.device, "dtype": args.dtype, "out_dir": args.out}
    evaluate_gentool_recipe(recipe, {k: v for k, v in given.items() if v is not None}, train=args.train)
    return 0
