"""Checks on what synthesis produces: a weak variant must be a valid tool schema, and call arguments
must satisfy the tool's parameters (JSON Schema, no unknown keys). Each returns a short reason
key (counted in stats.json) or None."""
from __future__ import annotations

import re

import jsonschema

NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")


def tool_problem(tool, *, strong: dict | None = None) -> str | None:
    if not isinstance(tool, dict) or not {"name", "description", "parameters"} <= set(tool):
        return "tool_missing_keys"
    if not isinstance(tool["name"], str) or not NAME.match(tool["name"]):
        return "tool_bad_name"
    if not isinstance(tool["description"], str) or not tool["description"].strip():
        return "tool_no_description"
    params = tool["parameters"]
    if not isinstance(params, dict) or params.get("type") != "object" \
            or not isinstance(params.get("properties", {}), dict):
        return "tool_parameters_not_object_schema"
    try:
        jsonschema.Draft202012Validator.check_schema(params)
    except jsonschema.SchemaError:
        return "tool_parameters_invalid_schema"
    if any(r not in params.get("properties", {}) for r in params.get("required", [])):
        return "tool_required_not_a_property"
    if strong is not None and tool["name"] == strong["name"]:
        return "weak_same_name"
    return None


def arguments_problem(tool: dict, args) -> str | None:
    if not isinstance(args, dict):
        return "arguments_not_object"
    schema = tool["parameters"]
    if any(k not in schema.get("properties", {}) for k in args):
        return "arguments_unknown_parameter"
    if next(jsonschema.Draft202012Validator(schema).iter_errors(args), None) is not None:
        return "arguments_violate_schema"
    return None
