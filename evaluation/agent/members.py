"""Members of an agent team: one model each, completing rendered prompts for the role it plays.

`complete(prompts, n_header=1) -> list[str]` completes prompts given as lists of Segments from
`PromptTemplate.render_prompt` (the function that renders training data); the first `n_header`
segments are the header, kept if a prompt must be cut. A member's `role` picks the system prompt
it is rendered with (planner / caller / summarizer, or backbone for a single-LLM agent).
- `LocalMember`: a local Hugging Face export, batched greedy generation (a batch may hold prompts
  of many episodes: the episodes runner batches across them).
- `EndpointMember`: an OpenAI-compatible server's `/completions` (vLLM, `transformers serve`, ...)
  through the project's one client (core/llm_client.py: its retries, its key handling), the
  prompt as one string with the tokenizer's EOS text where training has an EOS token, stopping
  at EOS; a batch's prompts are sent concurrently.

How members generate and fit prompts is given once, as `Decoding` and `PromptFit` (settings
validated where they are read: the recipe's `evaluate:` node or the command line).
"""
from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass
from typing import Mapping, Protocol, Sequence

from core.llm_client import LLMClient, run_sync
from core.stage_config import shared_settings
from prompting.prompt_template import EOS, Segment


@dataclass(frozen=True)
class Decoding:
    """How members generate: the length per generated turn (planner / caller / summarizer),
    prompts per batch, greedy or sampled."""
    max_new_tokens: Mapping[str, int]
    batch_size: int
    do_sample: bool
    temperature: float
    top_p: float
    seed: int | None

    def new_tokens(self, turn: str | None) -> int:
        """The length for `turn`; a prompt that names no turn gets the longest."""
        return int(self.max_new_tokens.get(turn) or max(self.max_new_tokens.values()))


@dataclass(frozen=True)
class PromptFit:
    """The context budget training fitted its rows to (the run's `data.max_length` and
    `data.context_reserve`, `tokenizer.add_bos`), or `max_prompt_tokens` to cut prompts to."""
    max_length: int | None
    context_reserve: int | None
    add_bos: bool
    max_prompt_tokens: int | None = None

    @classmethod
    def of_recipe(cls, recipe: Mapping, max_prompt_tokens: int | None = None) -> "PromptFit":
        data = shared_settings(recipe, "data") if recipe.get("data") else {}
        return cls(data.get("max_length"), data.get("context_reserve"),
                   shared_settings(recipe, "tokenizer")["add_bos"], max_prompt_tokens)


class Member(Protocol):
    role: str

    def complete(self, prompts: Sequence[list[Segment]], n_header: int = 1) -> list[str]: ...


class LocalMember:
    """A local HF export (path) or an already loaded (model, tokenizer); loads lazily."""
    serial = True  # one generate() at a time: the episodes runner gathers requests into batches

    def __init__(self, path: str | None = None, *, role: str, fit: PromptFit, decoding: Decoding,
                 device: str | None = None, dtype: str | None = None, model=None, tokenizer=None):
        if path is None and model is None:
            raise ValueError("LocalMember needs a path or a model and tokenizer")
        self.path, self.role = path, role
        self.model, self.tokenizer = model, tokenizer
        self.fit, self.decoding = fit, decoding
        self.device, self.dtype = device, dtype
        self.last: list = []  # Generation records of the last complete() call
        self.calls = 0
        self._lock = threading.Lock()  # one generate() at a time per model

    def load(self):
        from .generation import load_model, prepare_tokenizer
        if self.model is None:
            self.model, self.tokenizer = load_model(self.path, self.device, self.dtype)
        else:
            prepare_tokenizer(self.tokenizer)
        return self

    def release(self) -> None:
        """Drop the model (when loaded from a path) to free memory; it reloads on next use."""
        if self.path is not None and self.model is not None:
            self.model = None
            self.tokenizer = None
            import gc
            gc.collect()
            try:
                import torch
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
            except Exception:  # noqa: BLE001 - freeing memory is best effort
                pass

    @property
    def eos_text(self) -> str:
        self.load()
        return self.tokenizer.eos_token

    def budget(self, new_tokens: int):
        from .generation import context_budget
        return context_budget(self.model, new_tokens, self.fit.max_prompt_tokens,
                              self.fit.max_length, self.fit.context_reserve)

    def complete(self, prompts: Sequence[list[Segment]], n_header: int = 1) -> list[str]:
        """Completions of rendered prompts, each fitted to the context budget exactly as training
        fitted its rows (datamodules.step_context.prompt_ids) and generating up to the length for
        the turn it is for; a plain list's first `n_header` segments form its header."""
        from datamodules.step_context import prompt_ids
        from prompting.segment_encoder import SegmentEncoder

        from .generation import generate
        if not prompts:
            return []
        d = self.decoding
        with self._lock:
            self.load()
            enc = SegmentEncoder(self.tokenizer, add_bos=self.fit.add_bos)
            lengths = [d.new_tokens(getattr(p, "next_turn", None)) for p in prompts]
            self.last = [None] * len(prompts)
            for n in sorted(set(lengths)):
                idx = [i for i, m in enumerate(lengths) if m == n]
                budget = self.budget(n)
                ids = [prompt_ids(enc, prompts[i], self.role, budget, n_header) for i in idx]
                gens = generate(self.model, self.tokenizer, ids, max_new_tokens=n,
                                batch_size=d.batch_size, do_sample=d.do_sample,
                                temperature=d.temperature, top_p=d.top_p, seed=d.seed)
                for i, g in zip(idx, gens):
                    self.last[i] = g
            self.calls += len(prompts)
            return [g.text for g in self.last]


class EndpointMember:
    """An OpenAI-compatible completions endpoint. `llm` is the client's settings (base_url, model,
    api_key_env, timeout and retry settings: recipes/eval/endpoint.yaml); the API key is read from
    the environment variable `api_key_env` only (a placeholder when unset: local servers ignore it)."""

    def __init__(self, llm: Mapping, *, role: str, decoding: Decoding, eos_text: str,
                 bos_text: str = "", client: LLMClient | None = None):
        self.role, self.decoding = role, decoding
        self.eos_text, self.bos_text = eos_text, bos_text
        self.llm_cfg = {**llm, "require_key": False, "temperature": decoding.temperature,
                        "max_tokens": max(decoding.max_new_tokens.values())}
        self._client = client
        self.calls = 0

    def __repr__(self):
        return f"EndpointMember({self.role}: {self.llm_cfg['model']!r} at {self.llm_cfg['base_url']!r})"

    @property
    def client(self) -> LLMClient:
        if self._client is None:
            self._client = LLMClient(self.llm_cfg)
        return self._client

    def prompt_text(self, segments: list[Segment]) -> str:
        return self.bos_text + "".join(self.eos_text if s.text is EOS else s.text for s in segments)

    async def _one(self, segments: list[Segment]) -> str:
        d = self.decoding
        reply = await self.client.complete(self.prompt_text(segments),
                                           max_tokens=d.new_tokens(getattr(segments, "next_turn", None)),
                                           temperature=d.temperature if d.do_sample else 0.0,
                                           top_p=d.top_p, stop=[self.eos_text])
        cut = reply.text.find(self.eos_text)  # servers that ignore `stop`
        return reply.text[:cut] if cut >= 0 else reply.text

    def complete(self, prompts: Sequence[list[Segment]], n_header: int = 1) -> list[str]:
        if not prompts:
            return []
        self.calls += len(prompts)
        return run_sync(_gather([self._one(p) for p in prompts]))


async def _gather(coros):
    return list(await asyncio.gather(*coros))
