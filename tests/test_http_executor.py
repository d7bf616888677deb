"""Real HTTP calls built from an OpenAPI spec, against a local server on 127.0.0.1 only: path,
query, header and body parameters where the spec puts them, errors as observations, a timeout and
a response size cap; the episodes config keeps it off unless enabled."""
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import pytest

from evaluation import EvaluationError
from evaluation.episodes.executors import executor_factory
from evaluation.episodes.http_executor import HttpExecutor
from simulators import toolset_from_spec

SPEC = {
    "openapi": "3.0.0", "info": {"title": "Pets", "version": "1"},
    "servers": [{"url": "https://example.invalid/api"}],
    "paths": {
        "/pets/{petId}": {"get": {
            "operationId": "getPet", "parameters": [
                {"name": "petId", "in": "path", "required": True, "schema": {"type": "string"}},
                {"name": "fields", "in": "query", "schema": {"type": "string"}},
                {"name": "X-Trace", "in": "header", "schema": {"type": "string"}}],
            "responses": {"200": {"description": "ok"}}}},
        "/pets": {"post": {
            "operationId": "addPet",
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "type": "object", "required": ["name"],
                "properties": {"name": {"type": "string"}, "age": {"type": "integer"}}}}}},
            "responses": {"201": {"description": "created"}}}},
        "/big": {"get": {"operationId": "big", "responses": {"200": {"description": "ok"}}}},
        "/slow": {"get": {"operationId": "slow", "responses": {"200": {"description": "ok"}}}},
    },
}


class Server:
    def __init__(self):
        self.seen = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _reply(self, status, data: bytes):
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                url = urlparse(self.path)
                outer.seen.append({"method": "GET", "path": url.path, "query": parse_qs(url.query),
                                   "trace": self.headers.get("X-Trace")})
                if url.path.endswith("/big"):
                    return self._reply(200, b"x" * 5000)
                if url.path.endswith("/slow"):
                    time.sleep(1.0)
                    return self._reply(200, b"{}")
                if url.path.endswith("/pets/404"):
                    return self._reply(404, b'{"message": "no such pet"}')
                return self._reply(200, json.dumps({"id": url.path.rsplit("/", 1)[1]}).encode())

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.seen.append({"method": "POST", "path": self.path, "body": body})
                self._reply(201, json.dumps({"created": body["name"]}).encode())

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True).start()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/api"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


def test_calls_follow_the_spec(server):
    ex = HttpExecutor(toolset_from_spec(SPEC), base_url=server.url, timeout_s=0.5,
                      max_response_bytes=1000)
    try:
        got = ex.execute("getPet", '{"petId": "a b/7", "fields": "name", "X-Trace": "t1"}')
        assert got == {"content": '{"id": "a%20b%2F7"}', "error": ""}
        assert server.seen[-1] == {"method": "GET", "path": "/api/pets/a%20b%2F7",
                                   "query": {"fields": ["name"]}, "trace": "t1"}
        assert ex.execute("addPet", '{"name": "Rex", "age": 3}') == {"content": '{"created": "Rex"}',
                                                                     "error": ""}
        assert server.seen[-1] == {"method": "POST", "path": "/api/pets", "body": {"name": "Rex", "age": 3}}
        missing = ex.execute("getPet", "{}")  # checked before any request: a 400 observation
        assert missing["error"].startswith("400 Bad Request: missing required parameter 'petId'")
        n = len(server.seen)
        assert ex.execute("getPet", '{"petId": "404"}')["error"] == '404 Not Found: {"message": "no such pet"}'
        big = ex.execute("big", "{}")
        assert big["content"] == "x" * 1000 and ex.counters["truncated"] == 1
        slow = ex.execute("slow", "{}")
        assert slow["content"] == "" and slow["error"].startswith("504 Gateway Timeout")
        assert len(server.seen) == n + 3
    finally:
        ex.close()


def test_the_spec_server_is_the_default_base_url():
    ex = HttpExecutor(toolset_from_spec(SPEC))
    assert ex.base_url == "https://example.invalid/api"
    assert str(ex.request("getPet", {"petId": "1"}).url) == "https://example.invalid/api/pets/1"
    ex.close()


def test_http_is_off_unless_enabled(tmp_path):
    apis = tmp_path / "apis.json"
    apis.write_text(json.dumps([{"Name": "Pets", "Description": "pets", "Documentation": json.dumps(SPEC)}]))
    cfg = {"type": "http", "apis": str(apis), "http": {"enabled": False}}
    with pytest.raises(EvaluationError, match="executor.http.enabled=true"):
        executor_factory(cfg, apis, {})
    cfg["http"] = {"enabled": True, "base_urls": {"Pets": "http://127.0.0.1:9/api"}, "timeout_s": 1.0,
                   "max_response_bytes": 100}
    make, _ = executor_factory({**cfg, "pseudo_tools": {"getDetails": "no more details"}}, apis, {})
    ex = make({"id": "t", "meta": {"api": "Pets"}})
    assert ex.inner.base_url == "http://127.0.0.1:9/api"
    assert ex.execute("getDetails", '{"Question": "which pet?"}') == {"content": "no more details", "error": ""}
    ex.close()
