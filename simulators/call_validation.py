"""Check a call against its API spec before it reaches the simulated executor, as a server would.

Errors read like an HTTP error line: "404 Not Found: ..." for an unknown function, "400 Bad
Request: ..." for bad arguments; the executor puts them in the observation's `error`.
"""
from __future__ import annotations

import json
from http import HTTPStatus

from .openapi_toolset import Toolset


def http_error(status: int, detail: str) -> str:
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    return f"{status} {phrase}: {detail}"


def check_call(toolset: Toolset, name: str, arguments: str, *, empty_optional_as_absent: bool = True,
               allow_unknown_parameters: bool = False) -> tuple[dict | None, str]:
    """Return (parsed arguments, "") for a valid call, else (None, error text)."""
    tool = toolset.tools.get(name)
    if tool is None:
        known = ", ".join(toolset.tools) or "none"
        return None, http_error(404, f"unknown function {name!r} (available: {known})")
    text = (arguments or "").strip()
    try:
        args = json.loads(text) if text else {}
    except json.JSONDecodeError as exc:
        return None, http_error(400, f"arguments are not valid JSON: {exc.msg} at position {exc.pos}")
    if not isinstance(args, dict):
        return None, http_error(400, f"arguments must be a JSON object, got {_json_type(args)}")
    schema = tool.parameters
    required = set(schema.get("required", []))
    if empty_optional_as_absent:
        # "param": "" or null for an optional parameter is what an HTTP client would leave out.
        args = {k: v for k, v in args.items() if k in required or v not in ("", None)}
    problems = []
    if not allow_unknown_parameters:
        known = schema.get("properties", {})
        problems += [f"unknown parameter {k!r}" for k in args if k not in known]
    validator = toolset.validator_class(schema)
    for err in sorted(validator.iter_errors(args), key=lambda e: list(map(str, e.absolute_path))):
        problems.append(_describe(err))
    if problems:
        return None, http_error(400, "; ".join(dict.fromkeys(problems)))
    return args, ""


def _describe(err) -> str:
    where = ".".join(map(str, err.absolute_path))
    if err.validator == "required":
        have = err.instance if isinstance(err.instance, dict) else {}
        missing = [r for r in err.validator_value if r not in have]
        prefix = f"{where}." if where else ""
        return "; ".join(f"missing required parameter '{prefix}{m}'" for m in missing)
    if err.validator == "type":
        return (f"parameter '{where}' has the wrong type: expected {err.validator_value}, "
                f"got {_json_type(err.instance)}")
    if err.validator == "enum":
        return f"parameter '{where}' must be one of {err.validator_value}, got {err.instance!r}"
    return f"parameter '{where}': {err.message}" if where else err.message


def _json_type(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"
