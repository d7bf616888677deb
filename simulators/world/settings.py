"""The world's settings, typed: the recipe's `simulator:` node (corpus: world) over
recipes/simulator/world.yaml, which holds every default."""
from __future__ import annotations

import hashlib
import json
import math
import random
from dataclasses import asdict, dataclass
from pathlib import Path

from omegaconf import OmegaConf

from core.errors import ProjectError

DEFAULT_RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "simulator" / "world.yaml"
SPLITS = ("train", "held-in", "unseen-apis", "unseen-real-specs")
TASK_KINDS = ("lookup", "top", "count", "pair", "chain", "chain3", "chain4", "no_tool", "failing")


class WorldSettingsError(ProjectError, ValueError):
    """Bad world settings; names the key."""


@dataclass(frozen=True)
class WorldSettings:
    seed: int
    domains: tuple
    entities_per_type: int
    unseen_api_fraction: float
    failing_api_fraction: float
    distractors: int
    parameter_descriptions: bool
    real_specs: tuple
    tasks: dict
    task_mix: dict
    lexicon: dict
    attributes: dict
    groups: dict
    names: dict
    wording: dict
    output_dir: str

    @classmethod
    def load(cls, settings=None, overrides: list[str] | None = None) -> "WorldSettings":
        """From a recipe file, a mapping (its `simulator:` node or the node itself) or None (the
        defaults), with `key=value` overrides."""
        base = OmegaConf.load(DEFAULT_RECIPE).simulator
        node = OmegaConf.create({})
        if isinstance(settings, (str, Path)):
            loaded = OmegaConf.load(settings)
            node = loaded.simulator if "simulator" in loaded else loaded
        elif settings is not None:
            node = OmegaConf.create(OmegaConf.to_container(settings, resolve=True)
                                    if OmegaConf.is_config(settings) else dict(settings))
            node = node.simulator if "simulator" in node else node
        cfg = OmegaConf.merge(base, node)
        if overrides:
            cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist([o.removeprefix("simulator.")
                                                               for o in overrides]))
        return cls.of(OmegaConf.to_container(cfg, resolve=True))

    @classmethod
    def of(cls, d: dict) -> "WorldSettings":
        d = with_invented_domains(d)

        def need(cond, key, what):
            if not cond:
                raise WorldSettingsError(f"simulator.{key}: {what} (recipes/simulator/world.yaml "
                                         f"shows the form)")
        need(set(d["domains"]) <= set(d["lexicon"]), "domains",
             f"unknown domain(s) {sorted(set(d['domains']) - set(d['lexicon']))}; "
             f"known: {sorted(d['lexicon'])}")
        need(d["domains"], "domains", "name at least one domain")
        need(0 <= d["unseen_api_fraction"] < 1, "unseen_api_fraction", "must be in [0, 1)")
        need(0 <= d["failing_api_fraction"] < 1, "failing_api_fraction", "must be in [0, 1)")
        need(set(d["tasks"]) <= set(SPLITS), "tasks", f"splits are {', '.join(SPLITS)}")
        need(all(isinstance(n, int) and n >= 0 for n in d["tasks"].values()), "tasks",
             "counts must be non-negative integers")
        need(set(d["task_mix"]) <= set(TASK_KINDS), "task_mix", f"kinds are {', '.join(TASK_KINDS)}")
        need(d["entities_per_type"] >= 2, "entities_per_type", "must be at least 2")
        types = {e for dom in d["domains"] for e in d["lexicon"][dom]}
        combos = len(d["names"]["first"]) * len(d["names"]["second"])
        need(combos >= len(types) * d["entities_per_type"], "names",
             f"{combos} name combinations for {len(types)} entity types x {d['entities_per_type']} "
             "entities; add words to names.first / names.second (or lower entities_per_type)")
        for dom in d["domains"]:
            for ent, spec in d["lexicon"][dom].items():
                need(spec["group"] in d["groups"], f"lexicon.{dom}.{ent}.group",
                     f"{spec['group']!r} is not in groups")
                missing = [a for a in spec["attributes"] if a not in d["attributes"]]
                need(not missing, f"lexicon.{dom}.{ent}.attributes", f"{missing} not in attributes")
        return cls(seed=int(d["seed"]), domains=tuple(d["domains"]),
                   entities_per_type=int(d["entities_per_type"]),
                   unseen_api_fraction=float(d["unseen_api_fraction"]),
                   failing_api_fraction=float(d["failing_api_fraction"]),
                   distractors=int(d["distractors"]),
                   parameter_descriptions=bool(d["parameter_descriptions"]),
                   real_specs=tuple(d["real_specs"] or ()),
                   tasks=dict(d["tasks"]), task_mix=dict(d["task_mix"]),
                   lexicon={k: d["lexicon"][k] for k in d["domains"]}, attributes=d["attributes"],
                   groups=d["groups"], names=d["names"], wording=d["wording"],
                   output_dir=str(d["output"]["dir"]))

    def hash(self) -> str:
        data = {k: v for k, v in asdict(self).items() if k != "output_dir"}
        return hashlib.sha256(json.dumps(data, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:12]


def with_invented_domains(d: dict) -> dict:
    """The settings with `invented.domains` domains of invented entity types added to `lexicon`
    and `domains`, and invented words added to `names` for their entities (seeded by `seed`)."""
    inv = d.get("invented") or {}
    if not inv.get("domains"):
        return d
    rng = random.Random(f"{d['seed']}-invented")
    taken = {e for dom in d["lexicon"].values() for e in dom}

    def word(syllables: int) -> str:
        while True:
            w = "".join(rng.choice(inv["onsets"]) + rng.choice(inv["vowels"]) + rng.choice(inv["codas"])
                        for _ in range(syllables))
            if w not in taken:
                taken.add(w)
                return w

    lexicon, domains = dict(d["lexicon"]), list(d["domains"])
    attributes, groups = sorted(d["attributes"]), sorted(d["groups"])
    for i in range(int(inv["domains"])):
        name = f"invented_{i + 1}"
        lexicon[name] = {word(rng.choice(inv["syllables"])): {
            "group": rng.choice(groups), "attributes": rng.sample(attributes, rng.choice(inv["attributes_per_type"]))}
            for _ in range(int(inv["types_per_domain"]))}
        domains.append(name)
    entities = sum(len(lexicon[dom]) for dom in domains) * int(d["entities_per_type"])
    per_list = math.isqrt(entities) + 1
    names = {k: list(d["names"][k]) + [word(2).capitalize() for _ in range(per_list)] for k in ("first", "second")}
    return {**d, "lexicon": lexicon, "domains": domains, "names": names}
