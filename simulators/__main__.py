"""python -m simulators RECIPE.yaml [key=value ...]

Reads the recipe (its `simulator:` node, else the whole file), applies the dot-list overrides
(relative to that node: llm.model=..., instructions_per_api=2) and writes the corpus under
<output.dir>/simulator-<settings hash>/. Prints the corpus path and a summary. Bad settings or specs
stop with one or two lines and exit code 2 (an LLM endpoint that fails for good: 1); --debug (or
ALPHA_UMI_DEBUG=1) shows the traceback.

python -m simulators world [key=value ...] writes the tool world of recipes/simulator/world.yaml
(simulators/world) into its output.dir.
"""
import json
import logging
import sys
from pathlib import Path

from core.errors import run_cli

from .corpus import build_corpus, corpus_kind, run_dir_for
from .settings import load_settings


def main(argv: list[str]) -> int:
    return run_cli("python -m simulators", _main, argv)


def _main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "httpx2", "openai"):  # one line per request otherwise
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if argv[0] == "world":
        from .world.settings import DEFAULT_RECIPE
        argv = [str(DEFAULT_RECIPE), *argv[1:]]
    if corpus_kind(argv[0]) == "world":
        from .world import WorldSettings, build_world
        settings = WorldSettings.load(argv[0], overrides=argv[1:])
        train = build_world(settings)
        print(train.parent)
        print((train.parent / "stats.json").read_text(encoding="utf-8").strip())
        return 0
    if corpus_kind(argv[0]) == "gentool":
        from .gentool.build import load_gentool_settings
        settings = load_gentool_settings(argv[0], overrides=argv[1:])
        train = build_corpus(settings, Path(settings["output"]["dir"]))
        stats = json.loads((train.parent / "stats.json").read_text(encoding="utf-8"))
        print(train)
        print(json.dumps(stats))
        return 0 if stats["complete"] else 1
    settings = load_settings(argv[0], overrides=argv[1:])
    out_dir = Path(settings["output"]["dir"])
    corpus = build_corpus(settings, out_dir)
    stats_path = run_dir_for(settings, out_dir) / settings["output"]["stats"]
    stats = json.loads(stats_path.read_text(encoding="utf-8"))
    print(corpus)
    print(json.dumps({k: stats[k] for k in ("complete", "planned", "kept", "filtered",
                                            "filtered_by_reason", "errors_this_run", "tokens")}))
    return 0 if stats["complete"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
