"""The world's APIs: generated ones (per entity type and attribute: a lookup, a top-by and a
count-from) and real-spec ones (each function of the shipped ToolAlpaca OpenAPI specs whose
required parameters are plain values). Every API is a dict: name, description, parameters (JSON
Schema), kind (lookup / top / count / spec), origin (generated / real-spec), and what its
implementation needs (entity, attribute, group_type; for spec: the API it belongs to)."""
from __future__ import annotations

import json
import random

from core.repo_paths import resolve_data_path

from .settings import WorldSettings

PLAIN = ("string", "integer", "number", "boolean")


def generated_apis(s: WorldSettings) -> list[dict]:
    rng = random.Random(f"{s.seed}-apis")
    w = s.wording
    apis, taken = [], set()
    for domain in s.domains:
        for entity, spec in s.lexicon[domain].items():
            group_type = spec["group"]
            for attr in spec["attributes"]:
                a = s.attributes[attr]
                words = a["words"]
                fill = {"entity": entity, "attribute": attr, "words": words, "group_type": group_type}
                for kind in ("lookup", "top", "count"):
                    names = [t.format(**fill) for t in w["api_names"][kind]]
                    rng.shuffle(names)
                    name = next((n for n in names if n not in taken), None)
                    if name is None:
                        continue
                    taken.add(name)
                    apis.append({"name": name, "description": w["descriptions"][kind].format(**fill),
                                 "parameters": documented(_parameters(kind, fill, a, w["parameters"]), s),
                                 "kind": kind, "origin": "generated", "domain": domain,
                                 "entity": entity, "attribute": attr, "group_type": group_type,
                                 "failing": False})
    return apis


def _parameters(kind: str, fill: dict, attr: dict, words: dict) -> dict:
    entity, group_type = fill["entity"], fill["group_type"]
    if kind == "lookup":
        props = {entity: {"type": "string", "description": words["entity"].format(**fill)}}
        if attr.get("convert"):
            conv = attr["convert"]
            props[conv["param"]] = {"type": "string", "enum": list(conv["factors"]),
                                    "description": words["convert"].format(**fill)}
        return {"type": "object", "properties": props, "required": [entity]}
    props = {group_type: {"type": "string", "description": words["group"].format(**fill)}}
    if kind == "top":
        return {"type": "object", "properties": props, "required": [group_type]}
    number = "number" if int(attr.get("decimals", 0)) else "integer"
    props[f"min_{fill['attribute']}"] = {"type": number, "minimum": attr["min"], "maximum": attr["max"],
                                         "description": words["minimum"].format(**fill)}
    return {"type": "object", "properties": props, "required": list(props)}


def documented(params: dict, s: WorldSettings) -> dict:
    """The parameters as offered: without each parameter's description unless
    `parameter_descriptions` (compact prompts: the name and type say what a parameter is)."""
    if s.parameter_descriptions:
        return params
    props = {k: {f: v for f, v in p.items() if f != "description"}
             for k, p in (params.get("properties") or {}).items()}
    return {**params, "properties": props}


def real_spec_apis(s: WorldSettings) -> tuple[list[dict], list[str]]:
    """The usable functions of the shipped specs, and the APIs skipped (invalid spec or no usable
    function), each with its reason."""
    from simulators.openapi_toolset import SpecError, toolset_from_toolalpaca
    apis, skipped = [], []
    for path in s.real_specs:
        records = json.loads(resolve_data_path(path).read_text(encoding="utf-8"))
        for i, rec in enumerate(records):
            try:
                ts = toolset_from_toolalpaca(rec, source=f"{path} record {i}")
            except SpecError as exc:
                skipped.append(f"{rec.get('Name')}: invalid spec ({len(exc.problems)} problems)")
                continue
            usable = [t for t in ts.tools.values() if _plain(t.parameters)]
            if not usable:
                skipped.append(f"{ts.name}: no function with plain required parameters")
            for t in usable:
                apis.append({"name": t.name, "description": t.description or t.name,
                             "parameters": documented(t.parameters, s), "kind": "spec", "origin": "real-spec",
                             "api": ts.name, "failing": False})
    return apis, skipped


def _plain(params: dict) -> bool:
    props = params.get("properties") or {}
    return all(k in props and (props[k].get("type") in PLAIN or "enum" in props[k])
               for k in params.get("required") or [])


def api_key(api: dict) -> str:
    """The catalog key: generated names are unique; a real-spec function is keyed by its API."""
    return f"{api['api']}.{api['name']}" if api["kind"] == "spec" else api["name"]


def canonical(api: dict) -> dict:
    return {"name": api["name"], "description": api["description"], "parameters": api["parameters"]}


def split_apis(apis: list[dict], s: WorldSettings) -> tuple[list[dict], list[dict]]:
    """(held-in, unseen) generated APIs, the unseen ones drawn by the seed; a
    `failing_api_fraction` of each pool always fails (at least one when the fraction is > 0)."""
    rng = random.Random(f"{s.seed}-split")
    order = list(apis)
    rng.shuffle(order)
    n_unseen = round(len(order) * s.unseen_api_fraction)
    unseen, held = order[:n_unseen], order[n_unseen:]
    for pool in (held, unseen):
        lookups = [a for a in pool if a["kind"] == "lookup"]
        n_fail = max(1, round(len(pool) * s.failing_api_fraction)) if s.failing_api_fraction else 0
        for a in lookups[:n_fail]:
            a["failing"] = True
    order_of = {a["name"]: i for i, a in enumerate(apis)}
    return (sorted(held, key=lambda a: order_of[a["name"]]),
            sorted(unseen, key=lambda a: order_of[a["name"]]))
