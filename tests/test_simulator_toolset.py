"""OpenAPI specs -> toolsets (validation errors name the source and the JSON path), and the checks
a call goes through before it reaches the simulated executor."""
import copy
import json
from pathlib import Path

import pytest

from simulators.call_validation import check_call
from simulators.openapi_toolset import (SpecError, read_spec_file, toolset_from_spec,
                                        toolset_from_toolalpaca)

DATA = Path(__file__).resolve().parents[1] / "data" / "toolalpaca" / "eval_simulated.json"

SPEC = {
    "openapi": "3.0.0",
    "info": {"title": "Pets", "version": "1"},
    "paths": {
        "/pets/{petId}": {
            "parameters": [{"name": "petId", "in": "path", "required": True, "schema": {"type": "integer"}}],
            "get": {"operationId": "getPet", "description": "One pet.",
                    "parameters": [{"name": "fields", "in": "query",
                                    "schema": {"type": "string", "enum": ["name", "all"]}}],
                    "responses": {"200": {"description": "ok", "content": {"application/json": {
                        "schema": {"$ref": "#/components/schemas/Pet"}}}}}},
        },
        "/pets": {
            "post": {"operationId": "addPet",
                     "requestBody": {"required": True, "content": {"application/json": {"schema": {
                         "type": "object", "required": ["name"],
                         "properties": {"name": {"type": "string"}, "age": {"type": "integer", "nullable": True}}}}}},
                     "responses": {"201": {"description": "created"}}},
        },
    },
    "components": {"schemas": {"Pet": {"type": "object", "required": ["id"],
                                       "properties": {"id": {"type": "integer"}, "name": {"type": "string"}}}}},
}


@pytest.fixture(scope="module")
def records():
    return json.loads(DATA.read_text(encoding="utf-8"))


def test_every_toolalpaca_eval_api_loads(records):
    for rec in records:
        ts = toolset_from_toolalpaca(rec)
        assert ts.name == rec["Name"]
        assert set(ts.tools) == set(rec["Function_Projection"])
        for tool in ts.tools.values():
            assert tool.parameters["type"] == "object"
            assert tool.response_schema is not None


def test_conversion_merges_parameters_body_and_refs():
    ts = toolset_from_spec(SPEC)
    get, add = ts.tools["getPet"], ts.tools["addPet"]
    assert get.canonical() == {"name": "getPet", "description": "One pet.", "parameters": {
        "type": "object", "required": ["petId"],
        "properties": {"petId": {"type": "integer"}, "fields": {"type": "string", "enum": ["name", "all"]}}}}
    assert get.response_schema["required"] == ["id"]  # $ref resolved
    assert add.parameters["required"] == ["name"]
    assert add.parameters["properties"]["age"]["type"] == ["integer", "null"]  # nullable
    assert add.response_schema is None


def _broken(path, value):
    spec = copy.deepcopy(SPEC)
    node = spec
    for key in path[:-1]:
        node = node[key]
    if value is KeyError:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return spec


@pytest.mark.parametrize("path,value,where,message", [
    (["openapi"], "2.0", "$.openapi", "OpenAPI 3.x"),
    (["info"], KeyError, "$.info", "missing"),
    (["paths"], {}, "$.paths", "empty"),
    (["paths", "/pets", "post", "operationId"], "getPet", '$.paths["/pets"].post.operationId', "duplicate operationId"),
    (["paths", "/pets", "post", "responses"], KeyError, '$.paths["/pets"].post.responses', "missing"),
    (["paths", "/pets/{petId}", "get", "parameters", 0, "schema", "type"], "strin",
     '$.paths["/pets/{petId}"].get.parameters[0].schema.type', "invalid JSON Schema"),
    (["paths", "/pets/{petId}", "get", "parameters", 0, "in"], "body",
     '$.paths["/pets/{petId}"].get.parameters[0].in', "must be one of"),
    (["paths", "/pets/{petId}", "parameters", 0, "required"], False,
     '$.paths["/pets/{petId}"].parameters[0].required', "required: true"),
    (["components", "schemas", "Pet"], KeyError, "schema[\"$ref\"]", "unresolvable $ref"),
    (["paths", "/pets", "post", "requestBody", "content", "application/json", "schema", "required"], "name",
     '$.paths["/pets"].post.requestBody.content["application/json"].schema.required', "invalid JSON Schema"),
])
def test_invalid_specs_name_the_source_and_json_path(path, value, where, message):
    with pytest.raises(SpecError) as info:
        toolset_from_spec(_broken(path, value), source="pets.json")
    text = str(info.value)
    assert "pets.json" in text
    assert any(where in p and message in m for p, m in info.value.problems), text


def test_spec_files_and_toolalpaca_records_name_themselves(tmp_path):
    good = tmp_path / "pets.yaml"
    import yaml
    good.write_text(yaml.safe_dump(SPEC))
    assert set(toolset_from_spec(read_spec_file(good)).tools) == {"getPet", "addPet"}
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(SpecError, match="bad.json"):
        read_spec_file(bad)
    with pytest.raises(SpecError, match=r"API 'Broken'[\s\S]*Documentation"):
        toolset_from_toolalpaca({"Name": "Broken", "Documentation": "{oops"})
    with pytest.raises(SpecError, match=r"API 'Versionless'[\s\S]*\$\.openapi"):
        toolset_from_toolalpaca({"Name": "Versionless", "Documentation": json.dumps({**SPEC, "openapi": 3})})


@pytest.fixture(scope="module")
def pets():
    return toolset_from_spec(SPEC)


@pytest.mark.parametrize("name,arguments,expected", [
    ("getPets", "{}", "404 Not Found: unknown function 'getPets'"),
    ("getPet", '{"fields": "all"}', "missing required parameter 'petId'"),
    ("getPet", '{"petId": "7"}', "parameter 'petId' has the wrong type: expected integer, got string"),
    ("getPet", '{"petId": 7, "fields": "some"}', "parameter 'fields' must be one of ['name', 'all'], got 'some'"),
    ("getPet", '{"petId": 7,', "400 Bad Request: arguments are not valid JSON"),
    ("getPet", "[7]", "arguments must be a JSON object, got array"),
    ("getPet", '{"petId": 7, "color": "red"}', "unknown parameter 'color'"),
    ("addPet", '{"age": 3}', "missing required parameter 'name'"),
])
def test_invalid_calls_are_rejected_like_an_api_would(pets, name, arguments, expected):
    args, error = check_call(pets, name, arguments)
    assert args is None and expected in error, error


def test_valid_calls_pass(pets):
    assert check_call(pets, "getPet", '{"petId": 7, "fields": "all"}') == ({"petId": 7, "fields": "all"}, "")
    # An empty optional parameter is what an HTTP client leaves out; a missing required one is not.
    assert check_call(pets, "getPet", '{"petId": 7, "fields": ""}') == ({"petId": 7}, "")
    assert check_call(pets, "addPet", '{"name": "Rex", "age": null}') == ({"name": "Rex"}, "")
    assert "enum" not in check_call(pets, "getPet", '{"petId": 7, "fields": ""}')[1]
    _, error = check_call(pets, "getPet", '{"petId": 7, "fields": ""}', empty_optional_as_absent=False)
    assert "must be one of" in error
