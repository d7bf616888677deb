"""Prototype behind bench/world_learning.md's a1 row: rename every offered generated API of each
task to `<random word>_<name>` (per task, in its tools, thoughts, calls and gold calls), so that
an API's name can only be written by copying it out of the task's tool list.

    python bench/world_aliases.py TRAIN.jsonl OUT_DIR    # OUT_DIR/{train,held-in,unseen-apis}.jsonl
"""
import json
import random
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SYLLABLES = ["ka", "lo", "mi", "zu", "ter", "vax", "ori", "pel", "dun", "sim", "qua", "rex", "bo",
             "tif", "nar", "gle"]


def alias(rec: dict, generated: set, rng: random.Random) -> dict:
    names = {t["name"]: "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 3))) + "_" + t["name"]
             for t in rec["tools"] if t["name"] in generated}
    if not names:
        return rec
    pattern = re.compile(r"(?<!\w)(" + "|".join(map(re.escape, sorted(names, key=len, reverse=True)))
                         + r")(?!\w)")
    rec = json.loads(json.dumps(rec))
    for t in rec["tools"]:
        t["name"] = names.get(t["name"], t["name"])
    for t in rec["turns"]:
        for key in ("thought", "name", "content"):
            if isinstance(t.get(key), str):
                t[key] = pattern.sub(lambda m: names[m.group(1)], t[key])
    for c in rec["meta"]["world"]["calls"]:
        c["name"] = names.get(c["name"], c["name"])
    return rec


def main(train: str, out_dir: str) -> None:
    world = json.loads((REPO / "data/world/world.json").read_text(encoding="utf-8"))
    generated = {a["name"] for a in world["apis"].values() if a["origin"] == "generated"}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for seed, (src, name) in enumerate([(train, "train"), (REPO / "data/world/held-in.jsonl", "held-in"),
                                        (REPO / "data/world/unseen-apis.jsonl", "unseen-apis")], 1):
        rng = random.Random(seed)
        lines = Path(src).read_text(encoding="utf-8").splitlines()
        (out / f"{name}.jsonl").write_text("".join(json.dumps(alias(json.loads(l), generated, rng)) + "\n"
                                                   for l in lines), encoding="utf-8")


if __name__ == "__main__":
    main(*sys.argv[1:3])
