"""GenTool synthesis: weak tool variants, flipped queries, call arguments and zero-to-one triples,
from tools of any source the repo reads, by an LLM-free seeded generator or through any
OpenAI-compatible endpoint; written as tool-selection examples split over four scenarios.

build_gentool_corpus(settings, out_dir) -> Path     run or reuse; returns train.jsonl (test.jsonl next to it)
corpus_paths(settings, out_dir) -> {dir, train, test, stats}
"""
from .build import build_gentool_corpus, corpus_paths, load_gentool_settings

__all__ = ["build_gentool_corpus", "corpus_paths", "load_gentool_settings"]
