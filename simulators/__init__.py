"""LLM-simulated tool-use corpora (ToolAlpaca style) in the canonical trajectory form.

build_corpus(settings, out_dir) -> Path      run or reuse a simulation; returns the corpus JSONL
SimulatedToolExecutor.execute(name, args)    an LLM-played API, for evaluation loops
python -m simulators RECIPE.yaml [k=v ...]   the same from the command line
"""
from core.llm_client import LLMClient, LLMError

from .agents import SimulatedToolExecutor
from .call_validation import check_call
from .corpus import build_corpus
from .openapi_toolset import (SpecError, Tool, Toolset, toolset_from_spec, toolset_from_toolalpaca,
                              validate_spec)
from .settings import load_settings, settings_hash

__all__ = ["build_corpus", "SimulatedToolExecutor", "check_call", "LLMClient", "LLMError",
           "SpecError", "Tool", "Toolset", "toolset_from_spec", "toolset_from_toolalpaca",
           "validate_spec", "load_settings", "settings_hash"]
