"""Real HTTP calls built from an API's OpenAPI spec (ToolAlpaca's `eval_real.json`-style APIs).

A call `name(arguments)` becomes the operation's request: path parameters substituted into the
path, query and header parameters where the spec puts them, every other argument in a JSON body
(for methods that carry one). The base URL is the spec's first `servers` entry unless the
settings give one. Each request has a timeout and a response size cap; the reply is the
observation (`content` on 2xx, else `error` as "<status> <reason>: <body>"). Off unless the
episodes config asks for it: it reaches whatever the base URL names.
"""
from __future__ import annotations

import json
from collections import Counter
from urllib.parse import quote

import httpx

from simulators.call_validation import check_call, http_error
from simulators.openapi_toolset import Toolset

BODY_METHODS = ("post", "put", "patch")


class HttpExecutor:
    def __init__(self, toolset: Toolset, *, base_url: str | None = None, timeout_s: float = 20.0,
                 max_response_bytes: int = 20000, headers: dict | None = None,
                 validation: dict | None = None, client: httpx.Client | None = None):
        servers = toolset.spec.get("servers") or [{}]
        self.base_url = (base_url or servers[0].get("url") or "").rstrip("/")
        if not self.base_url.startswith(("http://", "https://")):
            raise ValueError(f"API {toolset.name!r}: no http(s) base URL (the spec's servers "
                             "has none; give executor.base_urls.{name})")
        self.toolset, self.timeout_s, self.cap = toolset, timeout_s, int(max_response_bytes)
        self.headers = dict(headers or {})
        self.validation = dict(validation or {})
        self.client = client or httpx.Client(timeout=timeout_s, follow_redirects=True)
        self.counters: Counter = Counter()

    def locations(self, name: str) -> dict[str, str]:
        """{parameter: 'path' | 'query' | 'header' | 'cookie'} of an operation (body: absent)."""
        tool = self.toolset.tools[name]
        item = self.toolset.spec["paths"][tool.path]
        params = list(item.get("parameters", [])) + list(item[tool.method].get("parameters", []))
        return {p["name"]: p["in"] for p in params}

    def request(self, name: str, args: dict) -> httpx.Request:
        tool = self.toolset.tools[name]
        where = self.locations(name)
        path, query, headers, body = tool.path, {}, dict(self.headers), {}
        for key, value in args.items():
            place = where.get(key, "body")
            if place == "path":
                path = path.replace("{" + key + "}", quote(str(value), safe=""))
            elif place == "query":
                query[key] = _scalar(value)
            elif place == "header":
                headers[key] = str(value)
            elif place == "body":
                body[key] = value
        if body and tool.method not in BODY_METHODS:  # a GET with stray arguments: send them as query
            query.update({k: _scalar(v) for k, v in body.items()})
            body = {}
        if list(body) == ["body"] and "body" not in where:
            body = body["body"]  # a non-object request body (see openapi_toolset._tool)
        return self.client.build_request(tool.method.upper(), self.base_url + path, params=query,
                                         headers=headers, json=body if body else None)

    def execute(self, name: str, arguments: str) -> dict:
        args, error = check_call(self.toolset, name, arguments, **self.validation)
        if error:
            return {"content": "", "error": error}
        self.counters["http_calls"] += 1
        try:
            resp = self.client.send(self.request(name, args), stream=True)
            try:
                data = b""
                for chunk in resp.iter_bytes():
                    data += chunk
                    if len(data) > self.cap:
                        self.counters["truncated"] += 1
                        break
                text = data[:self.cap].decode(resp.encoding or "utf-8", errors="replace")
                status = resp.status_code
            finally:
                resp.close()
        except httpx.TimeoutException:
            self.counters["http_errors"] += 1
            return {"content": "", "error": http_error(504, f"no response within {self.timeout_s} s")}
        except httpx.HTTPError as exc:
            self.counters["http_errors"] += 1
            return {"content": "", "error": http_error(502, f"request failed: {type(exc).__name__}")}
        if 200 <= status < 300:
            return {"content": text, "error": ""}
        return {"content": "", "error": http_error(status, text)}

    def close(self):
        self.client.close()


def _scalar(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return [_scalar(v) for v in value]
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False)
    return value
