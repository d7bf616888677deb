"""A scripted OpenAI-compatible server on 127.0.0.1, for tests and benches.

POST /v1/chat/completions and POST /v1/completions (text: the prompt counts as the one and last
message) answer with the first rule that matches the request. A rule is a dict:
  match: str | list[str]  every string must occur in the request's messages (any role)
  last: str               must occur in the last message
  reply: str | callable   the assistant's text (a callable gets the request body)
  status: int             answer with this HTTP error instead (429, 500, ...)
  delay: float            sleep this long first (past the client's timeout, say)
  malformed: "json" | "shape" | "null"   a body that is not JSON / JSON that is not a chat
                          completion / a chat completion whose content is null
  times: int              use the rule this many times, then skip it
An asyncio server on its own thread: waits cost nothing, so added latency stays exact under load.
It is bounded: it stops by itself after `lifetime_s` or `max_requests`.
Run alone: python tests/fakes/openai_server.py --rules rules.json --latency 0.05
"""
from __future__ import annotations

import argparse
import asyncio
import json
import threading
import time
from collections import Counter

# Markers from the prompt templates in recipes/simulator/toolalpaca.yaml, one per agent.
USER = "Write one realistic request"
ASSISTANT = "You are an assistant that solves"
EXECUTOR = "You play the server"
REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 429: "Too Many Requests",
           500: "Internal Server Error", 503: "Service Unavailable"}


def simulator_rules(call: str = "getAxolotlFacts", arguments: str = '{"category": "habitat", "limit": 2}',
                    body: str = '[{"fact": "They live in lake Xochimilco.", "source": "wiki"}]',
                    answer: str = "Axolotls live in lake Xochimilco.") -> list[dict]:
    """A happy path for one simulated instance: instruction, one call, its response, the answer."""
    return [
        {"match": USER, "reply": "Instruction: Where do axolotls live in the wild?"},
        {"match": EXECUTOR, "reply": f"Status Code: 200\nResponse: {body}"},
        {"match": ASSISTANT, "last": "Observation:",
         "reply": f"Thought: I have what I need.\nNext: conclusion.\nFinal Answer: {answer}"},
        {"match": ASSISTANT, "reply": f"Thought: I should look up habitat facts.\nNext: caller.\n"
                                     f"Action: {call}\nAction Input: {arguments}"},
    ]


class FakeOpenAIServer:
    def __init__(self, rules: list[dict], latency: float = 0.0, max_requests: int = 10_000,
                 lifetime_s: float = 120.0):
        self.rules = [dict(r) for r in rules]
        self.latency, self.max_requests, self.lifetime_s = latency, max_requests, lifetime_s
        self.requests: list[dict] = []
        self.hits: Counter = Counter()  # rule index -> times used; -1 for unmatched requests
        self.loop = asyncio.new_event_loop()
        self.server = None
        self.thread = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/v1"

    def start(self) -> "FakeOpenAIServer":
        self.server = self.loop.run_until_complete(
            asyncio.start_server(self._serve, "127.0.0.1", 0, backlog=512))
        self.loop.call_later(self.lifetime_s, self.loop.stop)
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        return self

    def stop(self):
        if self.thread and self.thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=5)
        if not self.loop.is_closed():
            self.server.close()
            pending = asyncio.all_tasks(self.loop)
            for task in pending:
                task.cancel()
            if pending:
                self.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            self.loop.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def pick(self, body: dict) -> dict | None:
        messages = body.get("messages") or [{"content": body.get("prompt", "")}]
        everything = "\n".join(str(m.get("content", "")) for m in messages)
        last = str(messages[-1].get("content", ""))
        self.requests.append(body)
        for i, rule in enumerate(self.rules):
            match = rule.get("match", [])
            match = [match] if isinstance(match, str) else match
            if "times" in rule and rule["times"] <= 0:
                continue
            if all(m in everything for m in match) and rule.get("last", "") in last:
                if "times" in rule:
                    rule["times"] -= 1
                self.hits[i] += 1
                return rule
        self.hits[-1] += 1
        return None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        try:
            while True:  # keep-alive: one connection, many requests
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                path = lines[0].split(" ")[1]
                headers = dict(line.split(":", 1) for line in lines[1:] if ":" in line)
                length = int({k.lower(): v for k, v in headers.items()}.get("content-length", 0))
                body = json.loads(await reader.readexactly(length) or b"{}")
                status, payload, extra = await self._answer(path, body)
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                head = [f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}", "Content-Type: application/json",
                        f"Content-Length: {len(data)}"] + [f"{k}: {v}" for k, v in extra.items()]
                writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + data)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, IndexError, ValueError):
            pass
        finally:
            writer.close()

    async def _answer(self, path: str, body: dict) -> tuple[int, object, dict]:
        if not path.endswith("/completions"):
            return 404, {"error": {"message": "not found"}}, {}
        text_api = not path.endswith("/chat/completions")
        if len(self.requests) >= self.max_requests:
            self.loop.call_soon(self.loop.stop)
            return 503, {"error": {"message": "fake server: request budget spent"}}, {}
        rule = self.pick(body)
        await asyncio.sleep(self.latency + (rule or {}).get("delay", 0.0))
        if rule is None:
            return 400, {"error": {"message": "fake server: no rule matches"}}, {}
        if rule.get("status"):
            extra = {"Retry-After": "0"} if rule["status"] == 429 else {}
            return rule["status"], {"error": {"message": "scripted error", "type": "scripted"}}, extra
        if rule.get("malformed") == "json":
            return 200, b"this is not json {", {}
        if rule.get("malformed") == "null":
            done = _completion("", body)
            done["choices"][0]["message"]["content"] = None
            return 200, done, {}
        if rule.get("malformed"):
            return 200, {"id": "chatcmpl-fake", "object": "chat.completion"}, {}
        reply = rule.get("reply", "")
        text = reply(body) if callable(reply) else reply
        return 200, (_text_completion(text, body) if text_api else _completion(text, body)), {}


def _completion(text: str, body: dict) -> dict:
    prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in body.get("messages", []))
    completion_tokens = len(text.split())
    return {"id": "chatcmpl-fake", "object": "chat.completion", "created": int(time.time()),
            "model": body.get("model", "fake"),
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": text}}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens}}


def _text_completion(text: str, body: dict) -> dict:
    prompt_tokens, completion_tokens = len(str(body.get("prompt", "")).split()), len(text.split())
    return {"id": "cmpl-fake", "object": "text_completion", "created": int(time.time()),
            "model": body.get("model", "fake"),
            "choices": [{"index": 0, "text": text, "finish_reason": "stop", "logprobs": None}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens}}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rules", required=True, help="JSON file with a list of rules")
    ap.add_argument("--latency", type=float, default=0.0)
    ap.add_argument("--lifetime", type=float, default=300.0)
    args = ap.parse_args()
    with open(args.rules) as fh:
        rules = json.load(fh)
    server = FakeOpenAIServer(rules, latency=args.latency, lifetime_s=args.lifetime).start()
    print(server.base_url, flush=True)
    server.thread.join()


if __name__ == "__main__":
    main()
