"""The one OpenAI-compatible client of the project (simulator agents, endpoint roles, the judge):
chat (`/chat/completions`) and text (`/completions`) requests with a concurrency cap, a
per-request deadline and counted retries (exponential backoff with jitter) on 429, 5xx, timeouts,
connection errors and malformed replies.

The openai client's own retries are off (max_retries=0) so every retry is ours, and counted.
The API key is read from the environment variable the settings name; it is never stored
elsewhere, logged or written out. With `require_key: false` (local servers: vLLM, `transformers
serve`) an unset variable sends a placeholder instead of stopping.

Synchronous callers (the agent loop's roles and executors, from worker threads) run coroutines
with `run_sync`, on one background event loop that every client of the process shares.
"""
from __future__ import annotations

import asyncio
import json
import os
import random
import threading
from collections import Counter
from dataclasses import dataclass

import openai
from openai import AsyncOpenAI

from core.errors import ProjectError

RETRY_STATUSES = {408, 409, 429}


TRANSPORT = {"timeouts", "server_errors", "connection_errors", "rate_limited"}


class LLMError(ProjectError, RuntimeError):
    """A request that failed for good (retries exhausted, or an error not worth retrying).
    `reason` is the last failure's kind (TRANSPORT ones say the endpoint, not the request, failed)."""
    exit_code = 1  # the endpoint failed, not the input

    def __init__(self, message: str, *, reason: str | None = None, url: str | None = None):
        super().__init__(message)
        self.reason, self.url = reason, url


@dataclass
class Reply:
    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    retries: int = 0


class LLMClient:
    def __init__(self, cfg):
        """`cfg` is the settings' `llm:` node (any mapping)."""
        self.cfg = cfg
        env = cfg.get("api_key_env") or "OPENAI_API_KEY"
        key = os.environ.get(env)
        if not key:
            if cfg.get("require_key", True):
                raise LLMError(f"no API key: set the environment variable {env}")
            key = "EMPTY"  # local servers ignore it
        self.timeout = float(cfg["timeout_s"])
        self.max_retries = int(cfg["max_retries"])
        self.max_reply_chars = cfg.get("max_reply_chars")  # longer replies are cut (and counted)
        self.client = AsyncOpenAI(api_key=key, base_url=cfg["base_url"], max_retries=0,
                                  timeout=self.timeout + 1.0)
        self.semaphore = asyncio.Semaphore(int(cfg["concurrency"]))
        self.rng = random.Random()
        self.stats = Counter()  # calls, retries, timeouts, rate_limited, server_errors, malformed, tokens

    def __repr__(self):  # keep the client (and its key) out of any log line
        return f"LLMClient(base_url={self.cfg['base_url']!r}, model={self.cfg['model']!r})"

    async def chat(self, messages: list[dict], *, temperature: float | None = None,
                   max_tokens: int | None = None, seed: int | None = None) -> Reply:
        kwargs = {"model": self.cfg["model"], "messages": messages,
                  "temperature": self.cfg["temperature"] if temperature is None else temperature,
                  self.cfg.get("max_tokens_field") or "max_tokens": int(max_tokens or self.cfg["max_tokens"])}
        if seed is not None and self.cfg.get("send_seed", False):
            kwargs["seed"] = int(seed)
        return await self._request("/chat/completions", kwargs, _reply)

    async def complete(self, prompt: str | list[int], *, max_tokens: int | None = None,
                       temperature: float | None = None, top_p: float | None = None,
                       stop: list[str] | None = None) -> Reply:
        """A text completion of `prompt` (the legacy `/completions` API that serves trained
        exports: the prompt is rendered exactly as in training, no chat template involved), or of
        the token ids `prompt` (servers that take them: vLLM)."""
        body = {"model": self.cfg["model"], "prompt": prompt,
                "max_tokens": int(max_tokens or self.cfg["max_tokens"]),
                "temperature": self.cfg["temperature"] if temperature is None else temperature}
        if top_p is not None:
            body["top_p"] = top_p
        if stop:
            body["stop"] = list(stop)
        return await self._request("/completions", body, lambda resp: _reply(resp, chat=False))

    async def _request(self, path: str, body: dict, parse) -> Reply:
        retries, url = 0, self.cfg.get("base_url")
        deadline = None  # timeout x attempts in wall time, backoff included, from the first send
        while True:
            retry_after = None
            try:
                async with self.semaphore:
                    self.stats["calls"] += 1
                    loop = asyncio.get_running_loop()
                    deadline = deadline or loop.time() + self.timeout * (self.max_retries + 1)
                    resp = await asyncio.wait_for(self._create(path, body),
                                                  max(0.0, min(self.timeout, deadline - loop.time())))
                reply = parse(resp)
                if reply is not None:
                    reply.retries = retries
                    if self.max_reply_chars is not None and len(reply.text) > int(self.max_reply_chars):
                        reply.text = reply.text[:int(self.max_reply_chars)]
                        self.stats["truncated_replies"] += 1
                    self.stats["prompt_tokens"] += reply.prompt_tokens
                    self.stats["completion_tokens"] += reply.completion_tokens
                    return reply
                reason = "malformed"
            except (asyncio.TimeoutError, openai.APITimeoutError):
                reason = "timeouts"
            except openai.APIStatusError as exc:
                if exc.status_code < 500 and exc.status_code not in RETRY_STATUSES:
                    self.stats["failed"] += 1
                    raise LLMError(f"{url}: HTTP {exc.status_code}: {exc.message}",
                                   reason=f"http_{exc.status_code}", url=url) from None
                reason = "rate_limited" if exc.status_code == 429 else "server_errors"
                retry_after = _retry_after(exc)
            except openai.APIConnectionError:
                reason = "connection_errors"
            except (openai.APIResponseValidationError, json.JSONDecodeError):
                reason = "malformed"
            self.stats[reason] += 1
            left = deadline - asyncio.get_running_loop().time() if deadline else 0.0
            if retries >= self.max_retries or left <= 0:
                self.stats["failed"] += 1
                raise LLMError(f"{url}: giving up after {retries} retries (last: {reason})", reason=reason, url=url)
            retries += 1
            self.stats["retries"] += 1
            await asyncio.sleep(min(left, self.backoff(retries, retry_after)))

    async def _create(self, path: str, body: dict) -> dict:
        # POST through the client's documented `post` (auth, base URL, error
        # types as in `chat.completions.create`), minus create()'s walk over the typed params and
        # its pydantic reply model: together ~1.3 ms of CPU a call, which is most of the budget
        # with 16 calls in flight on a fast local server.
        return json.loads(await self.client.post(path, body=body, cast_to=str))

    def backoff(self, attempt: int, retry_after: float | None = None) -> float:
        base, cap = float(self.cfg["backoff_base_s"]), float(self.cfg["backoff_max_s"])
        delay = min(cap, base * 2 ** (attempt - 1))
        jitter = float(self.cfg.get("jitter", 0.5))
        delay *= 1 - jitter * self.rng.random()
        return min(cap, max(delay, retry_after or 0.0))

    async def aclose(self):
        await self.client.close()


def _reply(resp: dict, chat: bool = True) -> Reply | None:
    """The first choice's text (a chat message's content, or a `/completions` text) and the usage,
    or None when the reply is not of that kind."""
    try:
        choice = resp["choices"][0]
        text = choice["message"]["content"] if chat else choice["text"]
    except (KeyError, IndexError, TypeError):
        return None
    if not isinstance(text, str):
        return None
    usage = resp.get("usage") or {}
    return Reply(text, int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0))


def _retry_after(exc) -> float | None:
    try:
        return float(exc.response.headers.get("retry-after"))
    except (AttributeError, TypeError, ValueError):
        return None


# ----- one background event loop for synchronous callers ----------------------------------------
_LOOP: asyncio.AbstractEventLoop | None = None
_LOOP_LOCK = threading.Lock()


def background_loop() -> asyncio.AbstractEventLoop:
    """The process's shared event loop, running on a daemon thread (started on first use)."""
    global _LOOP
    with _LOOP_LOCK:
        if _LOOP is None or _LOOP.is_closed():
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="llm-client-loop", daemon=True).start()
            _LOOP = loop
        return _LOOP


def run_sync(coro, timeout: float | None = None):
    """Run a coroutine on the background loop and wait for its result (from any thread but the
    loop's own). Clients used this way stay on that one loop, so their connection pools and
    semaphores are shared by every calling thread."""
    return asyncio.run_coroutine_threadsafe(coro, background_loop()).result(timeout)
