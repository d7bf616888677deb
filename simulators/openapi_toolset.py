"""OpenAPI 3 specs -> validated toolsets of canonical tools.

Each operation becomes a tool `{name: operationId, description, parameters}` whose parameters are
a JSON-Schema object built from the path/query/header parameters and the JSON request body; the
operation's 2xx response schema is kept for the simulated executor.
"""
from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import jsonschema
import yaml

from core.errors import ProjectError

METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
LOCATIONS = ("query", "path", "header", "cookie")


class SpecError(ProjectError, ValueError):
    """An invalid spec: names the file or API and, for every problem, the JSON path."""

    def __init__(self, source: str, problems: list[tuple[str, str]]):
        self.source, self.problems = source, problems
        listed = "\n".join(f"  {path}: {msg}" for path, msg in problems)
        super().__init__(f"invalid OpenAPI spec {source}:\n{listed}")


@dataclass
class Tool:
    name: str
    description: str
    parameters: dict
    method: str
    path: str
    response_schema: dict | None = None

    def canonical(self) -> dict:
        return {"name": self.name, "description": self.description, "parameters": self.parameters}


@dataclass
class Toolset:
    """One API: its tools by name, the spec they came from and the JSON Schema dialect to use."""
    name: str
    description: str
    tools: dict[str, Tool]
    spec: dict = field(repr=False)
    source: str = ""

    @property
    def validator_class(self):
        return schema_validator(self.spec.get("openapi", "3.0"))

    def canonical_tools(self) -> list[dict]:
        return [t.canonical() for t in self.tools.values()]


def schema_validator(openapi_version: str):
    # 3.0 schema objects are a draft-4 dialect (boolean exclusiveMinimum); 3.1 is 2020-12.
    return (jsonschema.Draft202012Validator if str(openapi_version).startswith("3.1")
            else jsonschema.Draft4Validator)


def jpath(*parts) -> str:
    out = "$"
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        elif re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", str(p)):
            out += f".{p}"
        else:
            out += f"[{json.dumps(str(p))}]"
    return out


# ---------------------------------------------------------------- $ref and dialect normalization

def _lookup(spec: dict, ref: str):
    if not ref.startswith("#/"):
        raise KeyError(ref)
    node = spec
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node


def _deref(node, spec, path: tuple, problems: list, stack: tuple = ()):
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str):
            if ref in stack:  # a recursive schema: cut the cycle, allow anything below it
                return {}
            try:
                target = _lookup(spec, ref)
            except (KeyError, IndexError, ValueError, TypeError):
                problems.append((jpath(*path, "$ref"), f"unresolvable $ref {ref!r}"))
                return {}
            return _deref(target, spec, path, problems, stack + (ref,))
        return {k: _deref(v, spec, path + (k,), problems, stack) for k, v in node.items()}
    if isinstance(node, list):
        return [_deref(v, spec, path + (i,), problems, stack) for i, v in enumerate(node)]
    return node


def to_json_schema(schema, openapi_version: str = "3.0"):
    """OpenAPI 3.0's `nullable: true` becomes a JSON Schema type union with null."""
    if str(openapi_version).startswith("3.1") or not isinstance(schema, (dict, list)):
        return schema
    if isinstance(schema, list):
        return [to_json_schema(s, openapi_version) for s in schema]
    out = {k: to_json_schema(v, openapi_version) for k, v in schema.items() if k != "nullable"}
    if schema.get("nullable") is True and isinstance(schema.get("type"), str):
        out["type"] = [schema["type"], "null"]
    return out


# ---------------------------------------------------------------- validation

def validate_spec(spec, source: str = "<spec>") -> dict:
    """Check structure and schemas; return the spec with local $refs inlined. Raise SpecError."""
    problems: list[tuple[str, str]] = []
    if not isinstance(spec, dict):
        raise SpecError(source, [("$", "a spec must be a JSON/YAML object")])
    resolved = _deref(spec, spec, (), problems)
    version = resolved.get("openapi")
    if not (isinstance(version, str) and re.fullmatch(r"3\.\d+(\.\d+)?", version)):
        problems.append((jpath("openapi"), f"expected an OpenAPI 3.x version string, got {version!r}"))
        version = "3.0"
    info = resolved.get("info")
    if not isinstance(info, dict):
        problems.append((jpath("info"), "missing or not an object"))
    else:
        if not (isinstance(info.get("title"), str) and info["title"].strip()):
            problems.append((jpath("info", "title"), "missing or empty"))
        if "version" not in info:
            problems.append((jpath("info", "version"), "missing"))
    paths = resolved.get("paths")
    if not isinstance(paths, dict) or not paths:
        problems.append((jpath("paths"), "missing, empty or not an object"))
        paths = {}
    seen_ids: dict[str, str] = {}
    for route, item in paths.items():
        _check_path_item(route, item, version, seen_ids, problems)
    if problems:
        raise SpecError(source, problems)
    return resolved


def _check_path_item(route, item, version, seen_ids, problems):
    if not str(route).startswith("/"):
        problems.append((jpath("paths", route), "a path must start with '/'"))
    if not isinstance(item, dict):
        problems.append((jpath("paths", route), "a path item must be an object"))
        return
    _check_parameters(item.get("parameters", []), ("paths", route, "parameters"), version, problems)
    for method, op in item.items():
        if method not in METHODS:
            continue
        where = ("paths", route, method)
        if not isinstance(op, dict):
            problems.append((jpath(*where), "an operation must be an object"))
            continue
        op_id = op.get("operationId")
        if not (isinstance(op_id, str) and op_id.strip()):
            problems.append((jpath(*where, "operationId"), "missing operationId"))
        elif op_id in seen_ids:
            problems.append((jpath(*where, "operationId"),
                             f"duplicate operationId {op_id!r} (also at {seen_ids[op_id]})"))
        else:
            seen_ids[op_id] = jpath(*where)
        _check_parameters(op.get("parameters", []), where + ("parameters",), version, problems)
        body = op.get("requestBody")
        if body is not None:
            _check_content(body, where + ("requestBody",), version, problems)
        responses = op.get("responses")
        if not isinstance(responses, dict) or not responses:
            problems.append((jpath(*where, "responses"), "missing or empty"))
            continue
        for code, resp in responses.items():
            _check_content(resp, where + ("responses", str(code)), version, problems, optional=True)


def _check_parameters(params, where, version, problems):
    if not isinstance(params, list):
        problems.append((jpath(*where), "parameters must be a list"))
        return
    for i, p in enumerate(params):
        at = where + (i,)
        if not isinstance(p, dict):
            problems.append((jpath(*at), "a parameter must be an object"))
            continue
        if not (isinstance(p.get("name"), str) and p["name"]):
            problems.append((jpath(*at, "name"), "missing parameter name"))
        if p.get("in") not in LOCATIONS:
            problems.append((jpath(*at, "in"), f"must be one of {list(LOCATIONS)}, got {p.get('in')!r}"))
        if p.get("in") == "path" and p.get("required") is not True:
            problems.append((jpath(*at, "required"), "path parameters must have required: true"))
        if "schema" in p:
            _check_schema(p["schema"], at + ("schema",), version, problems)
        elif "content" in p:
            _check_content(p, at, version, problems)
        else:
            problems.append((jpath(*at), "a parameter needs a schema or a content"))


def _check_content(node, where, version, problems, optional=False):
    if not isinstance(node, dict):
        problems.append((jpath(*where), "must be an object"))
        return
    content = node.get("content")
    if content is None and optional:
        return
    if not isinstance(content, dict) or not content:
        problems.append((jpath(*where, "content"), "missing or empty"))
        return
    for media, obj in content.items():
        if isinstance(obj, dict) and "schema" in obj:
            _check_schema(obj["schema"], where + ("content", media, "schema"), version, problems)


def _check_schema(schema, where, version, problems):
    try:
        schema_validator(version).check_schema(to_json_schema(schema, version))
    except jsonschema.SchemaError as err:
        problems.append((jpath(*where, *err.absolute_path), f"invalid JSON Schema: {err.message}"))


# ---------------------------------------------------------------- conversion

def toolset_from_spec(spec: dict, name: str | None = None, source: str = "<spec>",
                      description: str | None = None) -> Toolset:
    resolved = validate_spec(spec, source)
    version = resolved["openapi"]
    info = resolved["info"]
    tools: dict[str, Tool] = {}
    for route, item in resolved["paths"].items():
        shared = item.get("parameters", [])
        for method, op in item.items():
            if method in METHODS:
                tool = _tool(route, method, op, shared, version)
                tools[tool.name] = tool
    return Toolset(name=name or info["title"], description=description or info.get("description", ""),
                   tools=tools, spec=resolved, source=source)


def _tool(route, method, op, shared_params, version) -> Tool:
    props, required = {}, []
    by_key = {(p["name"], p["in"]): p for p in shared_params}
    by_key.update({(p["name"], p["in"]): p for p in op.get("parameters", [])})
    for (pname, _), p in by_key.items():
        schema = p.get("schema") or _media_schema(p.get("content", {})) or {}
        schema = copy.deepcopy(to_json_schema(schema, version))
        if p.get("description") and "description" not in schema:
            schema["description"] = p["description"]
        props[pname] = schema
        if p.get("required"):
            required.append(pname)
    body = op.get("requestBody")
    if body:
        schema = to_json_schema(_media_schema(body.get("content", {})) or {}, version)
        if schema.get("type") == "object" or "properties" in schema:
            for pname, sub in schema.get("properties", {}).items():
                props.setdefault(pname, sub)
            if body.get("required"):
                required += [r for r in schema.get("required", []) if r not in required]
        else:
            props["body"] = schema
            if body.get("required"):
                required.append("body")
    parameters = {"type": "object", "properties": props}
    if required:
        parameters["required"] = required
    return Tool(name=op["operationId"], description=op.get("description") or op.get("summary") or "",
                parameters=parameters, method=method, path=route,
                response_schema=_response_schema(op.get("responses", {}), version))


def _media_schema(content: dict) -> dict | None:
    if "application/json" in content:
        return content["application/json"].get("schema")
    for media in content.values():
        if isinstance(media, dict) and "schema" in media:
            return media["schema"]
    return None


def _response_schema(responses: dict, version) -> dict | None:
    codes = sorted(c for c in map(str, responses) if c.startswith("2")) + ["default"]
    for code in codes:
        resp = responses.get(code) or responses.get(int(code) if code.isdigit() else code)
        schema = _media_schema(resp.get("content", {})) if isinstance(resp, dict) else None
        if schema is not None:
            return to_json_schema(schema, version)
    return None


# ---------------------------------------------------------------- loading

def read_spec_file(path: str | Path) -> dict:
    text = Path(path).read_text(encoding="utf-8")
    try:
        return json.loads(text) if str(path).endswith(".json") else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise SpecError(str(path), [("$", f"cannot parse: {exc}")]) from None


def spec_files(path: str | Path) -> list[Path]:
    path = Path(path)
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.suffix in (".json", ".yaml", ".yml"))
    return [path]


def toolset_from_toolalpaca(record: dict, source: str = "toolalpaca") -> Toolset:
    """A ToolAlpaca record: the spec is the JSON string in `Documentation`."""
    name = record.get("Name", "<unnamed>")
    where = f"{source} (API {name!r})"
    try:
        spec = json.loads(record["Documentation"])
    except (KeyError, TypeError, json.JSONDecodeError) as exc:
        raise SpecError(where, [("$.Documentation", f"not a JSON spec: {exc}")]) from None
    return toolset_from_spec(spec, name=name, source=where, description=record.get("Description"))
