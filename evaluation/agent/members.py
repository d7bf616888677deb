"""Roles: one model each, completing rendered prompts.

`complete(prompts, n_header=1) -> list[str]` completes prompts given as lists of Segments from
`PromptTemplate.render_prompt` (the function that renders training data); the first `n_header`
segments are the header, kept if a prompt must be cut. A role's `prompt_role` picks the system
prompt it is rendered with (planner / caller / summarizer, or backbone for a single-LLM agent).
- `LocalRole`: a local Hugging Face export, batched greedy generation (a batch may hold prompts
  of many episodes: the episodes runner batches across them).
- `EndpointRole`: an OpenAI-compatible server's `/completions` (vLLM, `transformers serve`, ...)
  through the project's one client (core/llm_client.py: its retries, its key handling), the
  prompt as one string with the tokenizer's EOS text where training has an EOS token, stopping
  at EOS; a batch's prompts are sent concurrently.
"""
from __future__ import annotations

import asyncio
import threading
from typing import Mapping, Protocol, Sequence

from core.llm_client import LLMClient, run_sync
from prompting.prompt_template import EOS, Segment


class Role(Protocol):
    prompt_role: str

    def complete(self, prompts: Sequence[list[Segment]], n_header: int = 1) -> list[str]: ...


class LocalRole:
    """A local HF export (path) or an already loaded (model, tokenizer); loads lazily."""
    serial = True  # one generate() at a time: the episodes runner gathers requests into batches

    def __init__(self, path: str | None = None, *, prompt_role: str, model=None, tokenizer=None,
                 add_bos: bool = True, max_new_tokens: int = 256, batch_size: int = 8,
                 do_sample: bool = False, temperature: float = 1.0, top_p: float = 1.0,
                 seed: int | None = 0, device: str | None = None, dtype: str | None = None,
                 max_prompt_tokens: int | None = None, max_length: int | None = None,
                 context_reserve: int | None = None):
        if path is None and model is None:
            raise ValueError("LocalRole needs a path or a model and tokenizer")
        self.path, self.prompt_role = path, prompt_role
        self.model, self.tokenizer = model, tokenizer
        self.add_bos, self.device, self.dtype = add_bos, device, dtype
        # one length, or one per generated turn ({planner: n, caller: n, summarizer: n})
        self.max_new_tokens = max_new_tokens
        self.gen = dict(batch_size=batch_size, do_sample=do_sample, temperature=temperature,
                        top_p=top_p, seed=seed)
        self.max_prompt_tokens, self.max_length = max_prompt_tokens, max_length
        self.context_reserve = context_reserve
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

    def new_tokens(self, turn: str | None) -> int:
        return new_tokens_for(self.max_new_tokens, turn)

    def budget(self, new_tokens: int):
        from .generation import context_budget
        return context_budget(self.model, new_tokens, self.max_prompt_tokens, self.max_length,
                              self.context_reserve)

    def complete(self, prompts: Sequence[list[Segment]], n_header: int = 1) -> list[str]:
        """Greedy (by default) completions of rendered prompts, each fitted to the context
        budget exactly as training fitted its rows (datamodules.step_context.prompt_ids) and
        generating up to the length for the turn it is for; a plain list's first `n_header`
        segments form its header."""
        from datamodules.step_context import prompt_ids
        from prompting.segment_encoder import SegmentEncoder

        from .generation import generate
        if not prompts:
            return []
        with self._lock:
            self.load()
            enc = SegmentEncoder(self.tokenizer, add_bos=self.add_bos)
            lengths = [self.new_tokens(getattr(p, "next_turn", None)) for p in prompts]
            self.last = [None] * len(prompts)
            for n in sorted(set(lengths)):
                idx = [i for i, m in enumerate(lengths) if m == n]
                budget = self.budget(n)
                ids = [prompt_ids(enc, prompts[i], self.prompt_role, budget, n_header) for i in idx]
                for i, g in zip(idx, generate(self.model, self.tokenizer, ids, max_new_tokens=n,
                                              **self.gen)):
                    self.last[i] = g
            self.calls += len(prompts)
            return [g.text for g in self.last]


def new_tokens_for(max_new_tokens, turn: str | None) -> int:
    """One length for every turn, or {turn: length} (a turn without one: the longest)."""
    n = max_new_tokens
    return int(n.get(turn) or max(n.values())) if isinstance(n, Mapping) else int(n)


class EndpointRole:
    """An OpenAI-compatible completions endpoint. The API key is read from the environment
    variable `api_key_env` only (a placeholder when unset: local servers ignore it)."""

    def __init__(self, base_url: str, model: str, *, prompt_role: str, eos_text: str = "</s>",
                 bos_text: str = "", api_key_env: str = "OPENAI_API_KEY", max_new_tokens: int = 256,
                 temperature: float = 0.0, top_p: float = 1.0, timeout_s: float = 120.0,
                 max_retries: int = 2, concurrency: int = 4, backoff_base_s: float = 0.5,
                 backoff_max_s: float = 8.0, jitter: float = 0.5, client: LLMClient | None = None):
        self.base_url, self.model, self.prompt_role = base_url, model, prompt_role
        self.eos_text, self.bos_text = eos_text, bos_text
        self.max_new_tokens, self.temperature, self.top_p = max_new_tokens, temperature, top_p
        self.llm_cfg = {"base_url": base_url, "model": model, "api_key_env": api_key_env,
                        "require_key": False, "timeout_s": timeout_s, "max_retries": max_retries,
                        "concurrency": concurrency, "backoff_base_s": backoff_base_s,
                        "backoff_max_s": backoff_max_s, "jitter": jitter,
                        "temperature": temperature, "max_tokens": max_new_tokens}
        self._client = client
        self.calls = 0

    def __repr__(self):
        return f"EndpointRole({self.prompt_role}: {self.model!r} at {self.base_url!r})"

    @property
    def client(self) -> LLMClient:
        if self._client is None:
            self._client = LLMClient(self.llm_cfg)
        return self._client

    def prompt_text(self, segments: list[Segment]) -> str:
        return self.bos_text + "".join(self.eos_text if s.text is EOS else s.text for s in segments)

    async def _one(self, segments: list[Segment]) -> str:
        n = new_tokens_for(self.max_new_tokens, getattr(segments, "next_turn", None))
        reply = await self.client.complete(self.prompt_text(segments), max_tokens=n,
                                           temperature=self.temperature, top_p=self.top_p,
                                           stop=[self.eos_text])
        cut = reply.text.find(self.eos_text)  # servers that ignore `stop`
        return reply.text[:cut] if cut >= 0 else reply.text

    def complete(self, prompts: Sequence[list[Segment]], n_header: int = 1) -> list[str]:
        if not prompts:
            return []
        self.calls += len(prompts)
        return run_sync(_gather([self._one(p) for p in prompts]))


async def _gather(coros):
    return list(await asyncio.gather(*coros))
