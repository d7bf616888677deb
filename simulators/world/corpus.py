"""Writing the world: world.json, one canonical JSONL per split and stats.json (written last: a
folder whose stats.json has the settings' hash is finished and reused).

Splits by API: `train` and `held-in` draw on the held-in generated APIs (no test instruction
appears in training; the test splits are drawn first, so they do not change with `tasks.train`), `unseen-apis` on the generated APIs held out of training, and
`unseen-real-specs` on the functions of the shipped OpenAPI specs; no unseen API is ever offered
in training. Same settings, byte-identical files."""
from __future__ import annotations

import fcntl
import json
import random
from pathlib import Path

from core.atomic_files import write_json_atomic
from trajectories.trajectory import validate_trajectory, write_jsonl_atomic

from .apis import api_key, generated_apis, real_spec_apis, split_apis
from .database import build_database
from .executor import World
from .settings import SPLITS, WorldSettings
from .tasks import TaskMaker, spec_task

ATTEMPTS = 50  # draws per wanted task before a split is left short (its pool is too small)


def make_world(s: WorldSettings) -> tuple[World, dict, list[str]]:
    """The world, its API pools per split ({split: [API]}) and the real-spec APIs skipped."""
    held, unseen = split_apis(generated_apis(s), s)
    specs, skipped = real_spec_apis(s)
    apis = {api_key(a): a for a in held + unseen + specs}
    world = World(s.seed, apis, build_database(s), s.attributes, s.wording["errors"])
    pools = {"train": held, "held-in": held, "unseen-apis": unseen, "unseen-real-specs": specs}
    return world, pools, skipped


def make_splits(s: WorldSettings, world: World, pools: dict) -> dict[str, list[dict]]:
    kinds = sorted(s.task_mix)
    weights = [float(s.task_mix[k]) for k in kinds]
    seen: set[str] = set()
    out = {}
    for split in SPLITS[1:] + SPLITS[:1]:  # test splits first: they do not depend on the training size
        want = int(s.tasks.get(split, 0))
        rng = random.Random(f"{s.seed}-{split}")
        records = []
        if split == "unseen-real-specs":
            by_api: dict[str, list] = {}
            for a in pools[split]:
                by_api.setdefault(a["api"], []).append(a)
            makers = [lambda a=a: spec_task(s, world, a, by_api[a["api"]], rng) for a in pools[split]]
        else:
            maker = TaskMaker(s, world, pools[split], rng)
            makers = None
        for _ in range(want * ATTEMPTS):
            if len(records) >= want:
                break
            if makers is not None:
                task = rng.choice(makers)() if makers else None
            else:
                task = maker.make(rng.choices(kinds, weights)[0])
            if task is None or task["instruction"] in seen:
                continue
            seen.add(task["instruction"])
            record = {"id": f"world-{split}-{len(records):05d}", "source": "world",
                      "tools": task["tools"], "instruction": task["instruction"],
                      "turns": task["turns"], "meta": {**task["meta"], "split": split}}
            records.append(validate_trajectory(record))
        out[split] = records
    return {split: out[split] for split in SPLITS}


def world_paths(out_dir) -> dict[str, Path]:
    out = Path(out_dir)
    return {**{split: out / f"{split}.jsonl" for split in SPLITS},
            "world": out / "world.json", "stats": out / "stats.json"}


def build_world(settings, out_dir=None) -> Path:
    """Write (or reuse) the world of `settings` (a WorldSettings, a mapping or a recipe path) in
    `out_dir` (default: its output.dir); return the training corpus's path."""
    s = settings if isinstance(settings, WorldSettings) else WorldSettings.load(settings)
    paths = world_paths(out_dir or s.output_dir)
    paths["stats"].parent.mkdir(parents=True, exist_ok=True)
    with open(paths["stats"].parent / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if paths["stats"].is_file() and all(paths[k].is_file() for k in SPLITS):
            try:
                if json.loads(paths["stats"].read_text(encoding="utf-8")).get("settings_hash") == s.hash():
                    return paths["train"]
            except ValueError:
                pass
        world, pools, skipped = make_world(s)
        splits = make_splits(s, world, pools)
        write_json_atomic(paths["world"], world.to_json(), indent=None)
        for split, records in splits.items():
            write_jsonl_atomic(paths[split], records)
        write_json_atomic(paths["stats"], stats(s, pools, splits, skipped))
    return paths["train"]


def stats(s: WorldSettings, pools: dict, splits: dict, skipped: list[str]) -> dict:
    def kinds(records):
        out: dict[str, int] = {}
        for r in records:
            k = r["meta"]["world"]["kind"]
            out[k] = out.get(k, 0) + 1
        return dict(sorted(out.items()))
    return {"settings_hash": s.hash(), "complete": True,
            "apis": {split: len(pool) for split, pool in pools.items() if split != "held-in"},
            "failing_apis": {split: sum(a["failing"] for a in pool) for split, pool in pools.items()
                             if split != "held-in"},
            "real_specs_skipped": skipped,
            "tasks": {split: len(r) for split, r in splits.items()},
            "wanted": dict(s.tasks),
            "kinds": {split: kinds(r) for split, r in splits.items()},
            "calls_per_task": {split: round(sum(len(r["meta"]["world"]["calls"]) for r in recs)
                                            / max(1, len(recs)), 2) for split, recs in splits.items()}}
