"""Show what a role learns: N tokenized examples with the supervised tokens marked.

    python -m pipeline.preview recipes/quickstart.yaml --role caller -n 2
    python -m pipeline.preview recipes/quickstart.yaml --role planner --layout per_step

Supervised text is wrapped in [[ ]] (and coloured on a terminal); the span kind (thought, action,
answer, ranking: core.vocabulary.SPAN_KINDS) follows the closing bracket. Uses the recipe's
template, tokenizer and data.
"""
from __future__ import annotations

import argparse
import sys

from core.errors import run_cli
from core.vocabulary import GENTOOL_ROLES, IGNORE_INDEX, SPAN_KINDS, TRAINED_ROLES


def mark_supervised(row: dict, tokenizer, color: bool = False) -> str:
    out, run, kind = [], [], 0

    def flush():
        if run:
            text = tokenizer.decode(run)
            mark = SPAN_KINDS[kind] if kind else ""
            out.append(f"\033[1;32m[[{text}]]{mark}\033[0m" if color else f"[[{text}]]{mark}")

    context = []
    for tok, lab, k in zip(row["input_ids"], row["labels"], row["span_kinds"]):
        if lab != IGNORE_INDEX:
            if context:
                out.append(tokenizer.decode(context))
                context = []
            if run and k != kind:
                flush()
                run = []
            run.append(tok)
            kind = k
        else:
            if run:
                flush()
                run = []
            context.append(tok)
    flush()
    if context:
        out.append(tokenizer.decode(context))
    return "".join(out)


def main(argv=None) -> int:
    return run_cli("python -m pipeline.preview", _main, argv)


def _main(argv) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("args", nargs="+", help="recipe files, then key=value overrides")
    parser.add_argument("--role", required=True, choices=TRAINED_ROLES + GENTOOL_ROLES)
    parser.add_argument("--layout", choices=("folded", "per_step"))
    parser.add_argument("-n", type=int, default=2, help="number of examples to print")
    parser.add_argument("--split", default="train", choices=("train", "val"))
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error (or ALPHA_UMI_DEBUG=1)")
    ns = parser.parse_intermixed_args(argv)
    from core.recipe import load_recipe, split_args
    from core.stage_config import resolve_init, stage_settings
    from pipeline.stage_setup import build_datamodule, load_tokenizer
    files, overrides = split_args(ns.args)
    overrides += [f"data.layout={ns.layout}"] if ns.layout else []
    recipe = load_recipe(files, overrides)
    stage = next((n for n, s in recipe["stages"].items() if s["role"] == ns.role), None)
    if stage is None:
        print(f"error: no stage of role {ns.role} in the recipe", file=sys.stderr)
        return 2
    settings = stage_settings(recipe, stage)
    init = resolve_init(recipe, settings)
    if settings["init_from"] and settings["init_from"].startswith("stage:"):
        init = recipe["tokenizer"].get("from_pretrained")  # the base tokenizer: no trained stage needed
    tokenizer = load_tokenizer(recipe, settings, init)
    dm = build_datamodule(recipe, settings, tokenizer)
    dm.setup()
    rows = dm.splits[ns.split]
    color = sys.stdout.isatty()
    for i in range(min(ns.n, len(rows))):
        row = rows[i]
        n_sup = sum(l != IGNORE_INDEX for l in row["labels"])
        print(f"===== {row['id']}  ({len(row['input_ids'])} tokens, {n_sup} supervised) =====")
        print(mark_supervised(row, tokenizer, color))
    print(f"----- {ns.split}: {len(rows)} sequences; stats: {dm.stats.get(ns.split)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
