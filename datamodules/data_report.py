"""What the console says about the data: skipped records and dropped examples, and the error when
nothing is left to train on (naming every source and why it gave nothing)."""
from __future__ import annotations

from typing import Mapping


def _counts(counter: Mapping) -> str:
    return ", ".join(f"{k}: {v}" for k, v in sorted(counter.items(), key=lambda kv: -kv[1])) or "none"


def _dropped(split_stats: Mapping | None) -> dict:
    """Examples really lost while tokenizing ("(kept)" reasons were trimmed or split, still trained)."""
    return {k: v for k, v in ((split_stats or {}).get("dropped") or {}).items() if "(kept)" not in k and v}


def _describe_source(src: Mapping) -> str:
    if not src.get("loaded") and not src.get("skipped"):
        return f"{src['path']}: no records (empty file)"
    text = f"{src['path']}: {src.get('loaded', 0)} loaded"
    if src.get("skipped"):
        text += f", {src['skipped']} skipped ({_counts(src.get('skip_reasons', {}))})"
    return text


def no_examples_message(role: str, stats: Mapping) -> str:
    sources = "; ".join(_describe_source(s) for s in stats.get("sources", [])) or "no sources"
    dropped = _dropped(stats.get("train"))
    after = f"; examples dropped while tokenizing: {_counts(dropped)}" if dropped else ""
    return (f"role {role}: no training examples ({sources}{after}); fix the files under data.sources "
            "or the settings that filter them (instruction_part, data_fraction, max_length)")


def skip_lines(role: str, stats: Mapping) -> list[str]:
    lines = [f"[data] {src['path']}: skipped {src['skipped']} record(s) "
             f"({_counts(src.get('skip_reasons', {}))}), loaded {src['loaded']}"
             for src in stats.get("sources", []) if src.get("skipped")]
    for split in ("train", "val"):
        dropped = _dropped(stats.get(split))
        if dropped:
            lines.append(f"[data] role {role}, {split}: dropped {sum(dropped.values())} example(s) "
                         f"({_counts(dropped)})")
    return lines
