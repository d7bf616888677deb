"""Runs GenTool synthesis and writes its corpus.

Output (one folder per settings hash, `<out_dir>/gentool-<hash>/`): pairs.jsonl (one record per
base tool: its weak variant, original and flipped queries with their arguments), rejected.jsonl
(base tools left out, with the reason), train.jsonl and test.jsonl (tool-selection examples,
trajectories/selection_schema.json), stats.json (counts, rejections by reason) and settings.yaml.
pairs.jsonl and rejected.jsonl are append-only and fsynced per record: a rerun skips the base tools
already there, so a killed run loses nothing and repeats nothing; train/test are rebuilt from the
pairs (cheap, deterministic) and written atomically.
"""
from __future__ import annotations

import asyncio
import json
import logging
import random
from collections import Counter
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from core.atomic_files import write_json_atomic
from core.llm_client import LLMClient, LLMError
from trajectories.trajectory import write_jsonl_atomic

from core.append_log import AppendLog
from core.dir_lock import DirLock
from ..settings import merge_checked, settings_hash
from .examples import ExampleBuilder, split_tools
from .llm_generator import LLMGenerator
from .offline import OfflineGenerator, weak_arguments
from .tool_sources import BaseTool, load_base_tools
from .validation import arguments_problem, tool_problem

log = logging.getLogger(__name__)
DEFAULT_RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "simulator" / "gentool.yaml"


def load_gentool_settings(settings, overrides: list[str] | None = None, where: str = "") -> dict:
    """The `simulator:` node of a GenTool recipe merged over recipes/simulator/gentool.yaml,
    checked against simulators/settings_schema.json ($defs.gentool)."""
    origin = str(settings) if isinstance(settings, (str, Path)) else (where or "the settings")
    if isinstance(settings, (str, Path)):
        settings = OmegaConf.load(settings)
    cfg = settings if isinstance(settings, DictConfig) else OmegaConf.create(dict(settings))
    if "simulator" in cfg:
        cfg = cfg.simulator
    base_path = cfg.get("base") or DEFAULT_RECIPE
    base = OmegaConf.load(base_path)
    layers = [(base.simulator if "simulator" in base else base, str(base_path)), (cfg, origin)]
    if overrides:
        layers.append((OmegaConf.from_dotlist([o.removeprefix("simulator.") for o in overrides]), "command line"))
    return OmegaConf.to_container(merge_checked(layers, "gentool", where), resolve=True)


def run_dir_for(cfg: dict, out_dir: Path) -> Path:
    return Path(out_dir) / f"gentool-{settings_hash(OmegaConf.create(cfg))}"


def corpus_paths(settings, out_dir: Path) -> dict[str, Path]:
    cfg = load_gentool_settings(settings)
    d = run_dir_for(cfg, out_dir)
    return {"dir": d, "train": d / "train.jsonl", "test": d / "test.jsonl", "stats": d / "stats.json"}


def build_gentool_corpus(settings, out_dir: Path) -> Path:
    """Synthesize (or reuse a finished synthesis with the same settings); return train.jsonl."""
    cfg = load_gentool_settings(settings)
    run_dir = run_dir_for(cfg, out_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    stats_path = run_dir / "stats.json"
    with DirLock(run_dir, what="a simulation", wait=True):  # a second process waits, then reuses the result
        if stats_path.exists() and json.loads(stats_path.read_text()).get("complete") \
                and (run_dir / "train.jsonl").exists():
            return run_dir / "train.jsonl"
        stats = asyncio.run(Synthesis(cfg, run_dir).execute())
    if not stats["complete"]:
        log.warning("gentool synthesis incomplete: %d base tools failed on the LLM; rerun to retry (%s)",
                    stats["llm_errors_this_run"], run_dir)
    return run_dir / "train.jsonl"


class Synthesis:
    def __init__(self, cfg: dict, run_dir: Path):
        self.cfg, self.dir = cfg, Path(run_dir)
        self.pairs: dict[str, dict] = {}
        self.reasons, self.query_reasons = Counter(), Counter()
        self.pair_log = AppendLog(self.dir / "pairs.jsonl", self._on_pair)
        self.rejected = AppendLog(self.dir / "rejected.jsonl", self._on_rejected)
        self.skipped: dict = {}
        self.errors = 0

    def _on_pair(self, rec):
        self.pairs[rec["id"]] = rec
        self.query_reasons.update(rec.get("rejected", {}))

    def _on_rejected(self, rec):
        self.reasons[rec["reason"]] += 1
        self.query_reasons.update(rec.get("rejected", {}))

    def base_tools(self) -> list[BaseTool]:
        tools = load_base_tools(self.cfg["sources"], self.skipped)
        names = sorted(tools)
        random.Random(f"base:{self.cfg['seed']}").shuffle(names)
        if self.cfg.get("max_tools"):
            names = names[:int(self.cfg["max_tools"])]
        return [tools[n] for n in names]

    async def execute(self) -> dict:
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "settings.yaml").write_text(OmegaConf.to_yaml(self.cfg), encoding="utf-8")
        done = self.pair_log.load() | self.rejected.load()
        bases = self.base_tools()
        self.taken = {b.tool["name"] for b in bases}
        llm = LLMClient(self.cfg["llm"]) if self.cfg["generator"] == "llm" else None
        try:
            todo = [b for b in bases if b.tool["name"] not in done]
            if llm is None:
                for base in todo:
                    await self._record(base, *self._offline_pair(base))
            else:
                await self._llm_pairs(todo, llm)
        finally:
            self.pair_log.close()
            self.rejected.close()
            if llm is not None:
                await llm.aclose()
        kept = [self.pairs[b.tool["name"]] for b in bases if b.tool["name"] in self.pairs]
        names = [p["id"] for p in kept]
        unseen = split_tools(names, float(self.cfg["split"]["heldout_tool_fraction"]), int(self.cfg["seed"]))
        train, test = ExampleBuilder(kept, unseen, self.cfg).build()
        write_jsonl_atomic(self.dir / "train.jsonl", train)
        write_jsonl_atomic(self.dir / "test.jsonl", test)
        stats = {"settings_hash": settings_hash(OmegaConf.create(self.cfg)), "complete": self.errors == 0,
                 "generator": self.cfg["generator"], "base_tools": len(bases), "pairs": len(kept),
                 "unseen_tools": sorted(unseen), "rejected_pairs_by_reason": dict(self.reasons),
                 "rejected_queries_by_reason": dict(self.query_reasons),
                 "source_records_skipped": self.skipped, "llm_errors_this_run": self.errors,
                 "llm_this_run": dict(llm.stats) if llm else {},
                 "train_examples": len(train), "test_examples": len(test),
                 "train_by_kind": dict(Counter(r["meta"]["kind"] for r in train)),
                 "test_by_scenario": dict(Counter(r["meta"]["scenario"] for r in test))}
        write_json_atomic(self.dir / "stats.json", stats)
        return stats

    async def _record(self, base: BaseTool, pair: dict | None, reason: str, counters: Counter):
        name = base.tool["name"]
        if pair is None:
            await self.rejected.append({"id": name, "reason": reason, "rejected": dict(counters)})
        else:
            await self.pair_log.append({"id": name, **pair, "siblings": sorted(base.siblings),
                                        "rejected": dict(counters)})

    def _offline_pair(self, base: BaseTool) -> tuple[dict | None, str, Counter]:
        cfg, counters = self.cfg, Counter()
        strong = base.tool
        problem = tool_problem(strong)
        if problem:
            return None, f"source_{problem}", counters
        gen = OfflineGenerator(cfg["offline"])
        rng = random.Random(f"pair:{cfg['seed']}:{strong['name']}")
        n_q = int(cfg["queries_per_tool"])
        originals, seen = [], set()
        for query, args in base.cases:
            problem = arguments_problem(strong, args)
            if problem:
                counters[f"source_{problem}"] += 1
            elif query not in seen and len(originals) < n_q:
                originals.append((query, args))
                seen.add(query)
        for query, args in gen.queries(strong, n_q - len(originals), rng):
            if query not in seen:
                originals.append((query, args))
                seen.add(query)
        weak = gen.weak_variant(strong, [a for _, a in originals], rng, taken=self.taken)
        problem = tool_problem(weak, strong=strong)
        if problem:
            return None, f"weak_{problem}", counters
        rows = []
        for query, args in originals:
            wargs = weak_arguments(weak, args)
            if arguments_problem(weak, wargs):
                counters["weak_arguments_invalid"] += 1
                continue
            rows.append({"query": query, "args": args, "weak_args": wargs})
        flipped = [{"query": q, "args": a} for q, a in gen.flipped(strong, weak, int(cfg["flipped_per_pair"]), rng)
                   if q not in seen and not arguments_problem(weak, a)]
        return {"strong": strong, "weak": weak, "originals": rows, "flipped": flipped}, "", counters

    async def _llm_pairs(self, todo: list[BaseTool], llm: LLMClient):
        gen = LLMGenerator(llm, self.cfg)
        queue = list(todo)

        async def worker():
            while queue:
                base = queue.pop(0)
                counters = Counter()
                try:
                    pair, reason = await gen.pair(base, int(self.cfg["queries_per_tool"]),
                                                  int(self.cfg["flipped_per_pair"]), counters)
                    if pair is not None and pair["weak"]["name"] in self.taken:
                        pair, reason = None, "weak_name_taken"
                except LLMError as exc:
                    log.warning("base tool %s failed on the LLM: %s", base.tool["name"], exc)
                    self.errors += 1
                    continue
                await self._record(base, pair, reason, counters)

        await asyncio.gather(*[worker() for _ in range(int(self.cfg["llm"]["concurrency"]))])
