"""The world's deterministic implementation of every API: an observation is computed from the
call's arguments over the database; bad arguments get the error a real API would give (400 with
the schema problem, 404 for an unknown API or row, 503 for an API that is down).

A world (`World`) is what world.json holds: the APIs by catalog key, the database and the
wording of errors. `WorldExecutor(world, task)` answers one episode's calls (`executor.type:
world` of `evaluate.py episodes`): names are read in the task's scope (a real-spec task's
functions belong to its API)."""
from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import jsonschema

from core.errors import ProjectError

from .apis import api_key
from .database import count_rows, top_row


@dataclass
class World:
    seed: int
    apis: dict          # catalog key -> API
    database: dict      # entity type -> rows
    attributes: dict
    errors: dict        # wording of the errors

    def to_json(self) -> dict:
        return {"seed": self.seed, "apis": self.apis, "database": self.database,
                "attributes": self.attributes, "errors": self.errors}

    @classmethod
    def load(cls, path) -> "World":
        path = Path(path)
        if path.is_dir():
            path = path / "world.json"
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
            return cls(d["seed"], d["apis"], d["database"], d["attributes"], d["errors"])
        except (OSError, ValueError, KeyError) as exc:
            raise ProjectError(f"{path}: not a world file ({exc}); write one with "
                               f"`python -m simulators recipes/simulator/world.yaml`") from None

    def execute(self, name: str, arguments, spec_api: str | None = None) -> dict:
        """{"content": observation JSON, "error": ""} or {"content": "", "error": text}."""
        api = self.apis.get(f"{spec_api}.{name}" if spec_api else name)
        if api is None:
            return self._error("unknown_api", api=name)
        if api["failing"]:
            return self._error("unavailable", api=name)
        if isinstance(arguments, str):
            try:
                args = json.loads(arguments) if arguments.strip() else {}
            except ValueError as exc:
                return self._error("bad_json", problem=str(exc))
        else:
            args = arguments
        if not isinstance(args, dict):
            return self._error("bad_json", problem=f"got {type(args).__name__}")
        problem = _schema_problem(api["parameters"], args)
        if problem:
            return self._error("bad_argument", problem=problem)
        if api["kind"] == "spec":
            digest = hashlib.sha256(json.dumps([self.seed, api_key(api), args], sort_keys=True)
                                    .encode()).hexdigest()
            return _ok({"result": int(digest[:8], 16) % 9000 + 1000})
        rows = self.database[api["entity"]]
        attr = api["attribute"]
        if api["kind"] == "lookup":
            row = next((r for r in rows if r["name"] == args[api["entity"]]), None)
            if row is None:
                return self._error("not_found", entity=api["entity"], value=args[api["entity"]])
            value = row[attr]
            conv = self.attributes[attr].get("convert")
            if conv and conv["param"] in args:
                value = round(value * conv["factors"][args[conv["param"]]])
            return _ok({attr: value})
        group = args[api["group_type"]]
        if not any(r["group"] == group for r in rows):
            return self._error("no_match", entity=api["entity"], value=group)
        if api["kind"] == "top":
            row = top_row(rows, group, attr)
            return _ok({api["entity"]: row["name"], attr: row[attr]})
        return _ok({"count": count_rows(rows, group, attr, args[f"min_{attr}"])})

    def _error(self, kind: str, **fill) -> dict:
        return {"content": "", "error": self.errors[kind].format(**fill)}


def _ok(obj: dict) -> dict:
    return {"content": json.dumps(obj, ensure_ascii=False), "error": ""}


def _schema_problem(schema: dict, args: dict) -> str | None:
    unknown = [k for k in args if k not in (schema.get("properties") or {})]
    if unknown:
        return f"unknown parameter {unknown[0]!r}"
    err = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema).iter_errors(args))
    if err is None:
        return None
    where = ".".join(str(p) for p in err.absolute_path)
    return f"{where}: {err.message}" if where else err.message


class WorldExecutor:
    """One episode's tool executor over a world."""

    def __init__(self, world: World, task: Mapping | None = None):
        self.world = world
        self.spec_api = (((task or {}).get("meta") or {}).get("world") or {}).get("spec_api")
        self.counters = Counter()

    def execute(self, name: str, arguments: str) -> dict:
        result = self.world.execute(name, arguments, self.spec_api)
        self.counters["calls"] += 1
        self.counters["errors"] += bool(result["error"])
        return result
