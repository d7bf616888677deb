"""Runs the simulation at scale and writes the corpus.

Output (in one folder per settings hash): corpus.jsonl (kept trajectories), rejected.jsonl (ids and
reasons of filtered instances), stats.json, settings.yaml. Both JSONL files are append-only,
flushed and fsynced record by record; a rerun reads the ids already there and does only the rest,
so a killed run loses nothing and repeats nothing. Instances whose LLM calls failed for good are
written nowhere: a rerun retries them.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter
from pathlib import Path

from omegaconf import OmegaConf
from tqdm import tqdm

from core.append_log import AppendLog
from core.dir_lock import DirLock
from core.atomic_files import write_json_atomic
from core.repo_paths import resolve_data_path

from .episode import Episode, Instance, plan_instances
from core.llm_client import LLMClient, LLMError
from .openapi_toolset import (SpecError, read_spec_file, spec_files, toolset_from_spec,
                              toolset_from_toolalpaca)
from .settings import SettingsError, load_settings, settings_hash
from .spec_generation import toolset_from_description

log = logging.getLogger(__name__)


async def load_toolsets(settings, llm: LLMClient, run_dir: Path, invalid: list[dict]) -> list:
    toolsets = []

    def add(make, where):
        try:
            toolsets.append(make())
        except SpecError as exc:
            if settings["on_invalid_spec"] == "error":
                raise
            log.warning("skipping %s", exc)
            invalid.append({"source": where, "problems": [f"{p}: {m}" for p, m in exc.problems]})

    for src in settings["sources"]:
        kind = src["type"]
        if kind == "toolalpaca":
            records = json.loads(resolve_data_path(src["path"]).read_text(encoding="utf-8"))
            names = src.get("names")
            records = [r for r in records if not names or r.get("Name") in names]
            for rec in records[:src.get("limit") or None]:
                add(lambda rec=rec: toolset_from_toolalpaca(rec, str(src["path"])), rec.get("Name"))
        elif kind == "openapi":
            for f in spec_files(resolve_data_path(src["path"])):
                add(lambda f=f: toolset_from_spec(read_spec_file(f), name=src.get("name"),
                                                  source=str(f)), str(f))
        elif kind == "description":
            try:
                toolsets.append(await toolset_from_description(
                    llm, settings, src["name"], src["description"], run_dir / "specs"))
            except SpecError as exc:
                if settings["on_invalid_spec"] == "error":
                    raise
                invalid.append({"source": src["name"], "problems": [f"{p}: {m}" for p, m in exc.problems]})
        else:
            raise SettingsError(f"simulator.sources: unknown type {kind!r} (toolalpaca|openapi|description)")
    seen: dict[str, str] = {}
    for ts in toolsets:  # instance ids hash the API name, so names must be unique
        if ts.name in seen:
            raise SettingsError(f"two APIs named {ts.name!r}: {seen[ts.name]} and {ts.source}")
        seen[ts.name] = ts.source
    return toolsets


class Run:
    def __init__(self, settings, run_dir: Path):
        # Plain containers: DictConfig lookups are slow enough to show in the per-call overhead.
        self.settings = OmegaConf.to_container(settings, resolve=True) \
            if OmegaConf.is_config(settings) else settings
        self.dir = Path(run_dir)
        out = settings["output"]
        self.totals, self.reasons = Counter(), Counter()  # over both files, old and new records
        self.corpus = AppendLog(self.dir / out["corpus"],
                                lambda r: self.totals.update(r["meta"].get("counters", {})))
        self.rejected = AppendLog(self.dir / out["rejected"], self._count_rejected)
        self.stats_path = self.dir / out["stats"]
        self.errors = 0            # instances whose LLM calls failed for good (this run)
        self.unrecorded = Counter()  # their counters
        self.invalid_specs: list[dict] = []
        self.planned = 0
        self.started = time.time()
        self.work_seconds = 0.0    # the instances alone, without loading specs or the client

    def _count_rejected(self, record: dict):
        self.totals.update(record.get("counters", {}))
        self.reasons[record["reason"]] += 1

    def stats(self, llm: LLMClient | None, complete: bool) -> dict:
        totals = self.totals + self.unrecorded
        return {"settings_hash": settings_hash(self.settings), "complete": complete,
                "planned": self.planned, "kept": self.corpus.count,
                "filtered": self.rejected.count, "filtered_by_reason": dict(self.reasons),
                "errors_this_run": self.errors, "invalid_specs": self.invalid_specs,
                "totals": dict(sorted(totals.items())),
                "tokens": totals["prompt_tokens"] + totals["completion_tokens"],
                "llm_this_run": dict(llm.stats) if llm else {},
                "seconds_this_run": round(time.time() - self.started, 3),
                "work_seconds_this_run": round(self.work_seconds, 3)}

    async def execute(self) -> dict:
        s = self.settings
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "settings.yaml").write_text(OmegaConf.to_yaml(s), encoding="utf-8")
        done = self.corpus.load() | self.rejected.load()
        llm = LLMClient(s["llm"])
        try:
            toolsets = await load_toolsets(s, llm, self.dir, self.invalid_specs)
            planned = plan_instances(toolsets, s)
            self.planned = len(planned)
            todo = [inst for inst in planned if inst.id not in done]
            await self._work(todo, llm, len(planned) - len(todo))
            stats = self.stats(llm, complete=self.errors == 0)
            write_json_atomic(self.stats_path, stats)
            return stats
        except BaseException:
            write_json_atomic(self.stats_path, self.stats(llm, complete=False))
            raise
        finally:
            self.corpus.close()
            self.rejected.close()
            await llm.aclose()

    async def _work(self, todo: list[Instance], llm: LLMClient, already: int):
        episode = Episode(llm, self.settings)
        queue: asyncio.Queue = asyncio.Queue()
        for inst in todo:
            queue.put_nowait(inst)
        out = self.settings["output"]
        bar = tqdm(total=self.planned, initial=already, unit="inst", desc="simulate",
                   disable=not out["progress"])
        finished = 0

        async def worker():
            nonlocal finished
            while not queue.empty():
                inst = queue.get_nowait()
                counters = Counter()
                try:
                    record, reason = await episode.run(inst, counters)
                except LLMError as exc:
                    log.warning("instance %s (%s #%d) failed: %s", inst.id, inst.toolset.name,
                                inst.index, exc)
                    self.errors += 1
                    self.unrecorded.update(counters)
                else:
                    if record is not None:
                        record["meta"]["counters"] = dict(counters)
                        await self.corpus.append(record)
                    else:
                        await self.rejected.append({"id": inst.id, "api": inst.toolset.name,
                                                    "index": inst.index, "reason": reason,
                                                    "counters": dict(counters)})
                finished += 1
                bar.update(1)
                bar.set_postfix(kept=self.corpus.count, filtered=self.rejected.count,
                                errors=self.errors,
                                tokens=llm.stats["prompt_tokens"] + llm.stats["completion_tokens"])
                if finished % int(out["stats_every"]) == 0:
                    write_json_atomic(self.stats_path, self.stats(llm, complete=False))

        started = time.perf_counter()
        workers = [asyncio.create_task(worker()) for _ in range(int(self.settings["llm"]["concurrency"]))]
        try:
            await asyncio.gather(*workers)
        finally:
            self.work_seconds = time.perf_counter() - started
            for w in workers:
                w.cancel()
            bar.close()


def run_dir_for(settings, out_dir: Path) -> Path:
    return Path(out_dir) / f"simulator-{settings_hash(settings)}"


def corpus_kind(settings) -> str:
    """`gentool` for GenTool synthesis settings, `world` for the tool world's, else `trajectories`
    (the ToolAlpaca-style simulator)."""
    node = OmegaConf.load(settings) if isinstance(settings, (str, Path)) else settings
    node = node.get("simulator", node) if hasattr(node, "get") else {}
    return node.get("corpus") if node.get("corpus") in ("gentool", "world") else "trajectories"


def build_corpus(settings, out_dir: Path) -> Path:
    """Run the simulation (or reuse a finished one with the same settings) and return the path
    of the corpus JSONL. Settings: the recipe's `simulator:` node, a dict or DictConfig; keys it
    leaves out come from its `base:` recipe (default recipes/simulator/toolalpaca.yaml).
    Settings with `corpus: gentool` run GenTool synthesis instead (simulators/gentool) and return
    its train.jsonl of tool-selection examples; `corpus: world` writes the tool world
    (simulators/world) and returns its train.jsonl."""
    if corpus_kind(settings) == "gentool":
        from .gentool import build_gentool_corpus
        return build_gentool_corpus(settings, out_dir)
    if corpus_kind(settings) == "world":  # the tool world (simulators/world), in <out_dir>/world/
        from .world import build_world
        return build_world(settings, Path(out_dir) / "world")
    settings = load_settings(settings)
    run_dir = run_dir_for(settings, out_dir)
    corpus = run_dir / settings["output"]["corpus"]
    stats_path = run_dir / settings["output"]["stats"]
    run_dir.mkdir(parents=True, exist_ok=True)
    with DirLock(run_dir, what="a simulation", wait=True):  # a second process waits, then reuses the result
        if stats_path.exists() and corpus.exists():
            if json.loads(stats_path.read_text(encoding="utf-8")).get("complete"):
                return corpus
        stats = asyncio.run(Run(settings, run_dir).execute())
    if not stats["complete"]:
        log.warning("simulation incomplete: %d instances failed; rerun to retry them (%s)",
                    stats["errors_this_run"], run_dir)
    return corpus
