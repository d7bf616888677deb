"""Members of an agent team: one model each, completing rendered prompts for the role it plays.

`complete(prompts, n_header=1) -> list[str]` completes prompts given as lists of Segments from
`PromptTemplate.render_prompt` (the function that renders training data); the first `n_header`
segments are the header, kept if a prompt must be cut. A member's `role` picks the system prompt
it is rendered with (planner / caller / summarizer, or backbone for a single-LLM agent).
- `LocalMember`: a local Hugging Face export, batched greedy generation (a batch may hold prompts
  of many episodes: the episodes runner batches across them).
- `EndpointMember`: an OpenAI-compatible server's `/completions` (vLLM, `transformers serve`, ...)
  through the project's one client (core/llm_client.py: its retries, its key handling). With the
  export's tokenizer it fits prompts with the same function as `LocalMember` (`fitted_prompts`)
  and sends their token ids as `prompt` (`prompt_as: token_ids`, or `auto` where the server takes
  them) or their fitted text (whose ids are the prompt's: fitting cuts text at character
  boundaries), and warns (once) when the server counts other prompt tokens or the text sent would
  tokenize to other ids; without a tokenizer it sends the rendered text unfitted. It stops at EOS; a batch's prompts are sent
  concurrently.

How members generate and fit prompts is given once, as `Decoding` and `PromptFit` (settings
validated where they are read: the recipe's `evaluate:` node or the command line).
"""
from __future__ import annotations

import asyncio
import sys
import threading
from dataclasses import dataclass
from typing import Mapping, Protocol, Sequence

from core.llm_client import LLMClient, LLMError, run_sync
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


@dataclass(frozen=True)
class FittedPrompts:
    ids: list[list[int]]   # token ids of each prompt (BOS included): the tokenizer's ids of its text
    lengths: list[int]     # the generation length of each prompt's turn
    texts: list[str]       # each prompt's text fitted to the budget (without BOS)


def fitted_prompts(tokenizer, fit: PromptFit, decoding: Decoding, positions: int | None, role: str,
                   prompts: Sequence[list[Segment]], n_header: int) -> FittedPrompts:
    """Every member's prompts: rendered segments tokenized as training tokenizes its rows (the
    whole text) and fitted to the context budget by the rules training's rows follow
    (datamodules.step_context.prompt_ids), each leaving room for its turn's generation length."""
    from datamodules.step_context import fitted_text
    from prompting.text_encoder import TextEncoder

    from .generation import context_budget
    enc = TextEncoder(tokenizer, add_bos=fit.add_bos)
    lengths = [decoding.new_tokens(getattr(p, "next_turn", None)) for p in prompts]
    budgets = {n: context_budget(positions, n, fit.max_prompt_tokens, fit.max_length, fit.context_reserve)
               for n in set(lengths)}
    texts = [fitted_text(enc, p, role, budgets[n], n_header) for p, n in zip(prompts, lengths)]
    return FittedPrompts([enc.bos + enc.ids(t) for t in texts], lengths, texts)


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


    def complete(self, prompts: Sequence[list[Segment]], n_header: int = 1) -> list[str]:
        """Completions of rendered prompts, each fitted to the context budget exactly as training
        fitted its rows (datamodules.step_context.prompt_ids) and generating up to the length for
        the turn it is for; a plain list's first `n_header` segments form its header."""
        from .generation import generate
        if not prompts:
            return []
        d = self.decoding
        with self._lock:
            self.load()
            positions = getattr(self.model.config, "max_position_embeddings", None)
            fitted = fitted_prompts(self.tokenizer, self.fit, self.decoding, positions, self.role,
                                    prompts, n_header)
            self.last = [None] * len(prompts)
            for n in sorted(set(fitted.lengths)):
                idx = [i for i, m in enumerate(fitted.lengths) if m == n]
                ids = [fitted.ids[i] for i in idx]
                gens = generate(self.model, self.tokenizer, ids, max_new_tokens=n,
                                batch_size=d.batch_size, do_sample=d.do_sample,
                                temperature=d.temperature, top_p=d.top_p, seed=d.seed)
                for i, g in zip(idx, gens):
                    self.last[i] = g
            self.calls += len(prompts)
            return [g.text for g in self.last]


PROMPT_AS = ("auto", "token_ids", "text")  # what an endpoint member sends as `prompt`


class EndpointMember:
    """An OpenAI-compatible completions endpoint. `llm` is the client's settings (base_url, model,
    api_key_env, timeout and retry settings, prompt_as: recipes/eval/endpoint.yaml); the API key is
    read from the environment variable `api_key_env` only (a placeholder when unset: local servers
    ignore it). `tokenizer` (the served export's) and `fit` make prompts as `LocalMember` makes
    them; without a tokenizer the rendered text is sent as it is."""

    def __init__(self, llm: Mapping, *, role: str, decoding: Decoding, eos_text: str,
                 fit: PromptFit | None = None, tokenizer=None, client: LLMClient | None = None,
                 log=None):
        self.role, self.decoding = role, decoding
        self.eos_text, self.fit, self.tokenizer = eos_text, fit, tokenizer
        # prompt_as (token_ids, text or auto) matters only with a tokenizer to make token ids
        self.prompt_as = llm["prompt_as"] if tokenizer is not None else "text"
        self.llm_cfg = {**llm, "require_key": False, "temperature": decoding.temperature,
                        "max_tokens": max(decoding.max_new_tokens.values())}
        self._client = client
        self._token_ids_taken: bool | None = None if self.prompt_as == "auto" else self.prompt_as == "token_ids"
        self.warned: set[str] = set()
        self.log = log or (lambda m: print(m, file=sys.stderr, flush=True))
        self.calls = 0

    def __repr__(self):
        return f"EndpointMember({self.role}: {self.llm_cfg['model']!r} at {self.llm_cfg['base_url']!r})"

    @property
    def client(self) -> LLMClient:
        if self._client is None:
            self._client = LLMClient(self.llm_cfg)
        return self._client

    def prompt_text(self, segments: list[Segment]) -> str:
        return "".join(self.eos_text if s.text is EOS else s.text for s in segments)

    def warn_once(self, key: str, message: str) -> None:
        if key not in self.warned:
            self.warned.add(key)
            self.log(f"warning: {self.role} endpoint {self.llm_cfg['base_url']}: {message}")

    def served_text(self, text: str, ids: list[int]) -> str:
        """The fitted text as sent: with the BOS text in front when the prompt has BOS and the
        served tokenizer does not add it itself. Warns (once) when the server, tokenizing it,
        would get other ids than `ids`."""
        tok = self.tokenizer
        if ids[:1] == [tok.bos_token_id] and self.fit.add_bos and tok("")["input_ids"][:1] != [tok.bos_token_id]:
            text = tok.bos_token + text
        served = tok(text)["input_ids"]
        if served != ids:
            at = next((i for i, (a, b) in enumerate(zip(served, ids)) if a != b), min(len(served), len(ids)))
            self.warn_once("ids", f"the text sent tokenizes to {len(served)} ids where the prompt has "
                           f"{len(ids)} (first difference at token {at}; warned once)")
        return text

    async def _one(self, segments: list[Segment], ids: list[int] | None, text: str | None,
                   max_tokens: int) -> str:
        d = self.decoding
        kwargs = dict(max_tokens=max_tokens, temperature=d.temperature if d.do_sample else 0.0,
                      top_p=d.top_p, stop=[self.eos_text])
        reply = None
        if ids is not None and self._token_ids_taken is not False:
            try:
                reply = await self.client.complete(ids, **kwargs)
                self._token_ids_taken = True
            except LLMError as exc:
                if self._token_ids_taken:
                    raise
                self._token_ids_taken = False
                self.warn_once("text", f"takes no token ids as prompt ({exc}); sending the fitted text")
        if reply is None:
            reply = await self.client.complete(self.prompt_text(segments) if ids is None
                                               else self.served_text(text, ids), **kwargs)
        if ids is not None and reply.prompt_tokens and reply.prompt_tokens != len(ids):
            self.warn_once("count", f"the server counted {reply.prompt_tokens} prompt tokens where "
                           f"training's tokenizer gives {len(ids)} (warned once)")
        cut = reply.text.find(self.eos_text)  # servers that ignore `stop`
        return reply.text[:cut] if cut >= 0 else reply.text

    def complete(self, prompts: Sequence[list[Segment]], n_header: int = 1) -> list[str]:
        if not prompts:
            return []
        self.calls += len(prompts)
        d = self.decoding
        if self.tokenizer is None:
            ids = texts = [None] * len(prompts)
            lengths = [d.new_tokens(getattr(p, "next_turn", None)) for p in prompts]
        else:
            n = getattr(self.tokenizer, "model_max_length", None)
            fitted = fitted_prompts(self.tokenizer, self.fit, d, n if n and n < 10 ** 9 else None,
                                    self.role, prompts, n_header)
            ids, lengths, texts = fitted.ids, fitted.lengths, fitted.texts
        return run_sync(_gather([self._one(p, i, t, n) for p, i, t, n in zip(prompts, ids, texts, lengths)]))


async def _gather(coros):
    return list(await asyncio.gather(*coros))
