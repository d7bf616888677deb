"""The LLM-free generator (the embedded default): deterministic given the seed.

A weak variant keeps the required parameters only, narrows enums, takes a shorter description in
a "lighter" style and a suffixed name; queries are written from templates over the tool's
description and parameter values; flipped queries use the weak variant's style word and only
the parameters it keeps, so the weak variant is the better fit. All wording is in the recipe
(`offline:` node).
"""
from __future__ import annotations

import copy
import random
import re


class OfflineGenerator:
    def __init__(self, cfg: dict):
        self.cfg = cfg

    # ----- values ---------------------------------------------------------------------------
    def value(self, schema: dict, rng: random.Random):
        if "enum" in schema and schema["enum"]:
            return rng.choice(schema["enum"])
        kind = schema.get("type", "string")
        kind = kind[0] if isinstance(kind, list) else kind
        vals = self.cfg["values"]
        if kind == "integer":
            return rng.randint(1, int(vals["max_int"]))
        if kind == "number":
            return round(rng.uniform(1, float(vals["max_int"])), 1)
        if kind == "boolean":
            return rng.random() < 0.5
        if kind in ("array", "object"):
            return [] if kind == "array" else {}
        return rng.choice(vals["strings"])

    def arguments(self, tool: dict, rng: random.Random) -> dict:
        """Values for the required parameters and, with probability `optional_rate`, optional ones."""
        props = tool["parameters"].get("properties", {})
        required = set(tool["parameters"].get("required", []))
        rate = float(self.cfg["values"]["optional_rate"])
        return {k: self.value(s, rng) for k, s in props.items()
                if k in required or rng.random() < rate}

    # ----- weak variant ---------------------------------------------------------------------
    def weak_variant(self, tool: dict, used: list[dict], rng: random.Random, taken: set) -> dict:
        w = self.cfg["weak"]
        style = rng.choice(w["styles"])
        params = copy.deepcopy(tool["parameters"])
        props = params.get("properties", {})
        required = [r for r in params.get("required", []) if r in props]
        optional = [k for k in props if k not in required][:int(w["keep_optional"])]
        keep = required + optional
        new_props = {}
        for k in keep:
            s = dict(props[k])
            if isinstance(s.get("enum"), list) and len(s["enum"]) > int(w["narrow_enums_to"]):
                in_use = [u[k] for u in used if k in u]
                s["enum"] = list(dict.fromkeys(s["enum"][:int(w["narrow_enums_to"])] + in_use))
            if s.get("description"):
                s["description"] = _words(s["description"], int(w["parameter_description_words"]))
            new_props[k] = s
        name = f"{tool['name']}{style['suffix']}"
        n = 2
        while name in taken:
            name, n = f"{tool['name']}{style['suffix']}{n}", n + 1
        desc = w["description"].format(flavor=style["flavor"], Flavor=style["flavor"].capitalize(),
                                       summary=_words(_purpose(tool), int(w["description_words"])))
        return {"name": name, "description": desc,
                "parameters": {"type": "object", "properties": new_props, "required": required}}

    # ----- queries --------------------------------------------------------------------------
    def queries(self, tool: dict, n: int, rng: random.Random) -> list[tuple[str, dict]]:
        out = []
        for _ in range(n):
            args = self.arguments(tool, rng)
            out.append((self._render(rng.choice(self.cfg["queries"]["original"]), tool, args), args))
        return out

    def flipped(self, strong: dict, weak: dict, n: int, rng: random.Random) -> list[tuple[str, dict]]:
        flavor = next((s["flavor"] for s in self.cfg["weak"]["styles"]
                       if weak["name"].startswith(strong["name"] + s["suffix"])), "simple")
        out = []
        for _ in range(n):
            args = self.arguments(weak, rng)
            text = self._render(rng.choice(self.cfg["queries"]["flipped"]), strong, args, flavor=flavor)
            out.append((text, args))
        return out

    def _render(self, template: str, tool: dict, args: dict, flavor: str = "") -> str:
        assign = ", ".join(f"{k} {v}" for k, v in args.items()) or self.cfg["queries"]["no_arguments"]
        purpose = _purpose(tool)
        return template.format(purpose=purpose, purpose_lc=purpose[:1].lower() + purpose[1:],
                               assignments=assign, flavor=flavor, tool_words=_name_words(tool["name"]))


def weak_arguments(weak: dict, args: dict) -> dict:
    """A strong call's arguments restricted to what the weak variant accepts."""
    return {k: v for k, v in args.items() if k in weak["parameters"].get("properties", {})}


def _purpose(tool: dict) -> str:
    text = re.sub(r"<[^>]+>|\s+", " ", tool["description"]).strip()
    first = re.split(r"(?<=[.!?])\s", text)[0].rstrip(".!? ") if text else ""
    return first or " ".join(_name_words(tool["name"]).split()).capitalize()


def _words(text: str, n: int) -> str:
    words = text.split()
    return " ".join(words[:n]).rstrip(".,;:") + ("…" if len(words) > n else "")


def _name_words(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|[_\-.]+", " ", name).lower().strip()
