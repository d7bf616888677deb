"""From synthesized pairs to tool-selection examples: the zero-to-one triples, the flipped
(weak-to-strong) examples, the toolsets, and the four-scenario split.

Splits (all decided by the seed): a held-out share of base tools is *unseen* (neither it nor its
weak variant is offered in any training toolset) and a held-out share of queries is *unseen*
(never in training). A seen query of an unseen tool is trained only in its zero form (no suitable
tool offered: generate_response), so the test asks for a tool the model has never been shown.
Test examples get toolsets drawn afresh (their own random stream), also for seen/seen.
"""
from __future__ import annotations

import hashlib
import json
import random

from core.stable_split import stable_fraction
from trajectories.selection import validate_selection

from .toolsets import Similarity

KINDS_OF_ORIGINAL = ("zero", "partial", "original")


def split_tools(names: list[str], fraction: float, seed: int) -> set[str]:
    """The held-out (unseen) base tools: a seeded share of them, at least one when fraction > 0."""
    order = sorted(names)
    random.Random(f"tools:{seed}").shuffle(order)
    n = round(fraction * len(order))
    if fraction > 0 and len(order) > 1:
        n = max(1, min(n, len(order) - 1))
    return set(order[:n])


def query_is_unseen(query: str, fraction: float, seed: int) -> bool:
    return stable_fraction(query.strip().lower(), f"query:{seed}") < fraction


class ExampleBuilder:
    def __init__(self, pairs: list[dict], unseen_tools: set[str], cfg: dict):
        self.pairs, self.unseen_tools, self.cfg = pairs, unseen_tools, cfg
        self.k = int(cfg["toolset"]["k"])
        self.pool_size = int(cfg["toolset"]["distractor_pool"])
        self.gr = dict(cfg["generate_response"])
        seen_pool = [t for p in pairs if p["strong"]["name"] not in unseen_tools
                     for t in (p["strong"], p["weak"])]
        all_pool = [t for p in pairs for t in (p["strong"], p["weak"])]
        self.sim = {"train": Similarity(seen_pool, cfg["toolset"]) if seen_pool else None,
                    "test": Similarity(all_pool, cfg["toolset"])}
        self.by_name = {t["name"]: t for t in all_pool}
        self.weak_of = {p["strong"]["name"]: p["weak"]["name"] for p in pairs}
        self.seed = int(cfg["seed"])

    def toolset(self, pair: dict, offered: list[dict], split: str, rng: random.Random) -> list[dict]:
        exclude = {pair["strong"]["name"], pair["weak"]["name"], *pair.get("siblings", ())}
        exclude |= {self.weak_of[n] for n in pair.get("siblings", ()) if n in self.weak_of}
        sim = self.sim[split]
        ranked = [n for n in sim.ranked(pair["strong"]) if n not in exclude] if sim else []
        candidates = ranked[:self.pool_size]
        need = max(0, self.k - len(offered))
        distractors = [self.by_name[n] for n in rng.sample(candidates, min(need, len(candidates)))]
        tools = offered + distractors
        rng.shuffle(tools)
        return tools + [self.gr]

    def example(self, pair, query, kind, split, scenario, rng) -> dict:
        strong, weak, gr = pair["strong"], pair["weak"], self.gr["name"]
        if kind == "zero":
            offered, relevant, call = [], [gr], (gr, {})
        elif kind == "partial":
            offered, relevant, call = [weak], [weak["name"], gr], (weak["name"], query["weak_args"])
        elif kind == "original":
            offered, relevant, call = [strong, weak], [strong["name"], weak["name"], gr], (strong["name"], query["args"])
        else:  # flipped: the weak variant is the right tool
            offered, relevant, call = [strong, weak], [weak["name"], strong["name"], gr], (weak["name"], query["args"])
        tools = self.toolset(pair, offered, split, rng)
        ranking = relevant + [t["name"] for t in tools if t["name"] not in relevant]
        ident = hashlib.sha256(f"{strong['name']}|{query['query']}|{kind}|{split}".encode()).hexdigest()[:16]
        record = {"id": f"gentool-{ident}", "source": "gentool", "query": query["query"],
                  "toolset": tools, "ranking": ranking, "relevant": relevant,
                  "call": {"name": call[0], "arguments": json.dumps(call[1], ensure_ascii=False)},
                  "meta": {"kind": kind, "split": split, **({"scenario": scenario} if scenario else {}),
                           "base_tool": strong["name"], "strong": strong["name"], "weak": weak["name"]}}
        return validate_selection(record)

    def build(self) -> tuple[list[dict], list[dict]]:
        train, test = [], []
        frac = float(self.cfg["split"]["heldout_query_fraction"])
        for pair in self.pairs:
            name = pair["strong"]["name"]
            tool_unseen = name in self.unseen_tools
            rng_train = random.Random(f"train:{self.seed}:{name}")
            rng_test = random.Random(f"test:{self.seed}:{name}")
            queries = [(q, KINDS_OF_ORIGINAL) for q in pair["originals"]] + \
                      [(q, ("flipped",)) for q in pair["flipped"]]
            for query, kinds in queries:
                q_unseen = query_is_unseen(query["query"], frac, self.seed)
                scenario = f"{'unseen' if q_unseen else 'seen'}_query/{'unseen' if tool_unseen else 'seen'}_tool"
                if not q_unseen:
                    # A seen query of an unseen tool is trained with no suitable tool offered only.
                    for kind in (("zero",) if tool_unseen else kinds):
                        train.append(self.example(pair, query, kind, "train", None, rng_train))
                for kind in kinds:
                    test.append(self.example(pair, query, kind, "test", scenario, rng_test))
        return train, test
