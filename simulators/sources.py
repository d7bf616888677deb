"""A recipe's simulator data sources, made files: `{type: simulator, settings: ...}` runs (or reuses)
the simulation its settings describe and becomes a source of the corpus it wrote."""
from __future__ import annotations

from pathlib import Path

from .corpus import build_corpus, corpus_kind


def resolve_simulated_sources(sources: list, simulator_dir: str | None, cache_dir: str) -> list:
    """Sources `{type: simulator, settings: ...}` become canonical files: the simulation is run
    (or its finished corpus reused) under `simulator_dir` (default `<cache_dir>/simulator`)."""
    out = []
    for src in sources:
        if src.get("type") == "simulator":
            path = build_corpus(src["settings"], Path(simulator_dir or Path(cache_dir) / "simulator"))
            fmt = "selection" if corpus_kind(src["settings"]) == "gentool" else "canonical"
            src = {**src, "path": str(path), "format": fmt}
        out.append(src)
    return out
