"""Write a world settings file with many invented entity types, so that the world has far more
API names than a small model can memorize and naming an unseen API needs the tool list (the
experiment of bench/world_learning.md, "Many APIs").

    python bench/world_many_apis.py /tmp/many/world.yaml --domains 8 --types 20
    python -m simulators /tmp/many/world.yaml output.dir=/tmp/many/world

Entity types are pronounceable invented words (seeded), each with two or three of the world's
attributes and one of its groups, and entity names are pairs of invented words (so neither can be
memorized); everything else is recipes/simulator/world.yaml's.
"""
from __future__ import annotations

import argparse
import random
from pathlib import Path

from omegaconf import OmegaConf

from simulators.world.settings import DEFAULT_RECIPE

ONSETS = ["b", "br", "d", "dr", "f", "g", "gl", "k", "l", "m", "n", "p", "pl", "r", "s", "st", "t", "tr", "v", "z"]
VOWELS = ["a", "e", "i", "o", "u"]
CODAS = ["", "n", "r", "l", "m", "s", "k"]


def invented_word(rng: random.Random, syllables: int) -> str:
    return "".join(rng.choice(ONSETS) + rng.choice(VOWELS) + rng.choice(CODAS) for _ in range(syllables))


def many_api_lexicon(domains: int, types: int, seed: int) -> tuple[list[str], dict, dict]:
    base = OmegaConf.to_container(OmegaConf.load(DEFAULT_RECIPE).simulator)
    attributes, groups = sorted(base["attributes"]), sorted(base["groups"])
    rng, taken = random.Random(seed), set()
    lexicon = {}
    for d in range(domains):
        entities = {}
        while len(entities) < types:
            word = invented_word(rng, rng.choice([2, 3]))
            if word in taken:
                continue
            taken.add(word)
            entities[word] = {"group": rng.choice(groups),
                              "attributes": rng.sample(attributes, rng.choice([2, 3]))}
        lexicon[f"domain{d}"] = entities
    need = int((domains * types * base["entities_per_type"]) ** 0.5) + 1
    words = set()
    while len(words) < 2 * need:
        if (w := invented_word(rng, 2).capitalize()) not in taken:
            words.add(w)
    words = sorted(words)
    rng.shuffle(words)
    return list(lexicon), lexicon, {"first": words[:need], "second": words[need:]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", help="the settings file to write")
    p.add_argument("--domains", type=int, default=8)
    p.add_argument("--types", type=int, default=20, help="entity types per domain")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train-tasks", type=int, default=3600)
    ns = p.parse_args(argv)
    domains, lexicon, names = many_api_lexicon(ns.domains, ns.types, ns.seed)
    node = {"simulator": {"corpus": "world", "domains": domains, "lexicon": lexicon, "names": names,
                          "tasks": {"train": ns.train_tasks}}}
    Path(ns.out).parent.mkdir(parents=True, exist_ok=True)
    Path(ns.out).write_text(OmegaConf.to_yaml(OmegaConf.create(node)))
    print(f"{ns.out}: {ns.domains * ns.types} entity types over {ns.domains} domains")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
