"""A scripted OpenAI-compatible chat server on 127.0.0.1, for tests and benches.

POST /v1/chat/completions answers with the first rule that matches the request. A rule is a dict:
  match: str | list[str]  every string must occur in the request's messages (any role)
  last: str               must occur in the last message
  reply: str | callable   the assistant's text (a callable gets the request body)
  status: int             answer with this HTTP error instead (429, 500, ...)
  delay: float            sleep this long first (past the client's timeout, say)
  malformed: "json" | "shape"   a body that is not JSON / JSON that is not a chat completion
  times: int              use the rule this many times, then skip it
The server is bounded: it stops by itself after `lifetime_s` or `max_requests`.
Run alone: python tests/fakes/openai_server.py --rules rules.json --latency 0.05
"""
from __future__ import annotations

import argparse
import json
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeOpenAIServer:
    def __init__(self, rules: list[dict], latency: float = 0.0, max_requests: int = 10_000,
                 lifetime_s: float = 120.0):
        self.rules = [dict(r) for r in rules]
        self.latency, self.max_requests, self.lifetime_s = latency, max_requests, lifetime_s
        self.requests: list[dict] = []
        self.hits: Counter = Counter()  # rule index -> times used; -1 for unmatched requests
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.httpd.daemon_threads = True
        self.thread = None
        self.timer = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def start(self) -> "FakeOpenAIServer":
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()
        self.timer = threading.Timer(self.lifetime_s, self.stop)
        self.timer.daemon = True
        self.timer.start()
        return self

    def stop(self):
        if self.timer:
            self.timer.cancel()
        if self.thread and self.thread.is_alive():
            self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def pick(self, body: dict) -> dict | None:
        messages = body.get("messages") or [{}]
        everything = "\n".join(str(m.get("content", "")) for m in messages)
        last = str(messages[-1].get("content", ""))
        with self.lock:
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


# Markers from the prompt templates in recipes/simulator/toolalpaca.yaml, one per agent.
USER = "Write one realistic request"
ASSISTANT = "You are an assistant that solves"
EXECUTOR = "You play the server"


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


def _completion(text: str, body: dict) -> dict:
    prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in body.get("messages", []))
    completion_tokens = len(text.split())
    return {"id": "chatcmpl-fake", "object": "chat.completion", "created": int(time.time()),
            "model": body.get("model", "fake"),
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": text}}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens}}


def _handler(server: FakeOpenAIServer):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def send(self, status: int, payload, headers=None):
            data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            try:
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout)
                pass

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
            if not self.path.endswith("/chat/completions"):
                return self.send(404, {"error": {"message": "not found"}})
            if len(server.requests) >= server.max_requests:
                threading.Thread(target=server.stop, daemon=True).start()
                return self.send(503, {"error": {"message": "fake server: request budget spent"}})
            rule = server.pick(body)
            time.sleep(server.latency + (rule or {}).get("delay", 0.0))
            if rule is None:
                return self.send(400, {"error": {"message": "fake server: no rule matches"}})
            if rule.get("status"):
                headers = {"Retry-After": "0"} if rule["status"] == 429 else None
                return self.send(rule["status"], {"error": {"message": "scripted error",
                                                            "type": "scripted"}}, headers)
            if rule.get("malformed") == "json":
                return self.send(200, b"this is not json {")
            if rule.get("malformed"):
                return self.send(200, {"id": "chatcmpl-fake", "object": "chat.completion"})
            reply = rule.get("reply", "")
            text = reply(body) if callable(reply) else reply
            return self.send(200, _completion(text, body))

    return Handler


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
