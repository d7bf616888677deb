"""Orchestration: the stage graph, stage handoff exports, strategy checks, sweeps and the preview."""
