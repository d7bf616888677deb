"""The tool world: procedurally generated APIs (plus the shipped OpenAPI specs) over a seeded
database, executed deterministically; tasks of 1-4 calls as canonical trajectories, split by API;
computed answer / process verdicts of episodes. No LLM anywhere.

build_world(settings, out_dir) -> Path      write (or reuse) the world; returns train.jsonl
World.load(path), WorldExecutor(world, task) the executor of `evaluate.py episodes` (type: world)
verdict(reference, trajectory)              {"process": yes/no, "answer": yes/no, ...}
"""
from .corpus import build_world, world_paths
from .executor import World, WorldExecutor
from .settings import WorldSettings, WorldSettingsError
from .verdicts import verdict

__all__ = ["build_world", "world_paths", "World", "WorldExecutor", "WorldSettings",
           "WorldSettingsError", "verdict"]
