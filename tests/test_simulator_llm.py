"""The real openai client against the scripted loopback server: retries on 429/5xx/timeouts and
malformed replies are counted; other errors are not retried; the key comes only from the env."""
import asyncio

import pytest
from fakes.openai_server import FakeOpenAIServer

from core.llm_client import LLMClient, LLMError
from simulators.settings import load_settings

SECRET = "sk-test-do-not-leak-0123456789"


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)


def llm_cfg(base_url, **over):
    cfg = dict(load_settings({})["llm"])
    cfg.update(base_url=base_url, model="fake", timeout_s=0.5, max_retries=4,
               backoff_base_s=0.001, backoff_max_s=0.01)
    cfg.update(over)
    return cfg


def chat(cfg, n=1):
    async def go():
        client = LLMClient(cfg)
        try:
            replies = await asyncio.gather(*[client.chat([{"role": "user", "content": "hi"}])
                                             for _ in range(n)])
            return replies, client.stats
        finally:
            await client.aclose()
    return asyncio.run(go())


def test_429_500_timeouts_and_malformed_replies_are_retried_and_counted():
    rules = [{"status": 429, "times": 2}, {"status": 500, "times": 1}, {"status": 503, "times": 1},
             {"delay": 2.0, "times": 1}, {"malformed": "json", "times": 1},
             {"malformed": "shape", "times": 1}, {"reply": "hello there"}]
    with FakeOpenAIServer(rules) as server:
        (reply,), stats = chat(llm_cfg(server.base_url, max_retries=7))
    assert reply.text == "hello there" and reply.retries == 7
    assert (reply.prompt_tokens, reply.completion_tokens) == (1, 2)
    assert stats["retries"] == 7 and stats["calls"] == 8
    assert (stats["rate_limited"], stats["server_errors"], stats["timeouts"], stats["malformed"]) == (2, 2, 1, 2)


def test_retries_run_out():
    with FakeOpenAIServer([{"status": 500}]) as server:
        with pytest.raises(LLMError, match="giving up after 2 retries"):
            chat(llm_cfg(server.base_url, max_retries=2))
        assert len(server.requests) == 3


def test_client_errors_are_not_retried():
    with FakeOpenAIServer([{"status": 400}]) as server:
        with pytest.raises(LLMError, match="HTTP 400"):
            chat(llm_cfg(server.base_url))
        assert len(server.requests) == 1


def test_concurrency_cap_holds():
    with FakeOpenAIServer([{"reply": "ok"}], latency=0.05) as server:
        import time
        start = time.perf_counter()
        replies, stats = chat(llm_cfg(server.base_url, concurrency=2), n=6)
        elapsed = time.perf_counter() - start
    assert [r.text for r in replies] == ["ok"] * 6
    assert 0.15 <= elapsed < 2.0  # 3 waves of 50 ms with 2 in flight (6 at once would take 50 ms)


def test_backoff_grows_is_capped_and_jittered():
    client = LLMClient(llm_cfg("http://127.0.0.1:9/v1", backoff_base_s=1.0, backoff_max_s=5.0, jitter=0.5))
    delays = [client.backoff(k) for k in (1, 2, 3, 10)]
    assert 0.5 <= delays[0] <= 1.0 and 1.0 <= delays[1] <= 2.0 and 2.0 <= delays[2] <= 4.0
    assert delays[3] <= 5.0
    assert client.backoff(1, retry_after=3.0) == 3.0


def test_key_only_from_the_environment(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY")
    with pytest.raises(LLMError, match="OPENAI_API_KEY"):
        LLMClient(llm_cfg("http://127.0.0.1:9/v1"))
    monkeypatch.setenv("MY_KEY", SECRET)
    client = LLMClient(llm_cfg("http://127.0.0.1:9/v1", api_key_env="MY_KEY"))
    assert SECRET not in repr(client)
    with pytest.raises(ValueError, match="secrets do not belong"):
        load_settings({"llm": {"api_key": SECRET}})
