"""The world's seeded database: per entity type, rows of a unique name, the group value it sits
in and a value per attribute."""
from __future__ import annotations

import random

from .settings import WorldSettings


def value_of(spec: dict, rng: random.Random):
    if int(spec.get("decimals", 0)):
        return round(rng.uniform(spec["min"], spec["max"]), int(spec["decimals"]))
    return rng.randint(int(spec["min"]), int(spec["max"]))


def build_database(s: WorldSettings) -> dict[str, list[dict]]:
    """{entity type: [{"name", "group", attribute: value, ...}]}, names unique over the world."""
    rng = random.Random(f"{s.seed}-database")
    names = [f"{a} {b}" for a in s.names["first"] for b in s.names["second"]]
    rng.shuffle(names)
    db = {}
    for domain in s.domains:
        for entity, spec in s.lexicon[domain].items():
            if entity in db:
                continue
            rows = []
            for _ in range(s.entities_per_type):  # enough names: WorldSettings.of checked
                row = {"name": names.pop(), "group": rng.choice(s.groups[spec["group"]])}
                for attr in spec["attributes"]:
                    row[attr] = value_of(s.attributes[attr], rng)
                rows.append(row)
            db[entity] = rows
    return db


def top_row(rows: list[dict], group: str, attribute: str) -> dict | None:
    """The row of `group` with the highest `attribute` (ties: the first in the table)."""
    best = None
    for row in rows:
        if row["group"] == group and (best is None or row[attribute] > best[attribute]):
            best = row
    return best


def count_rows(rows: list[dict], group: str, attribute: str, minimum) -> int:
    return sum(1 for r in rows if r["group"] == group and r[attribute] >= minimum)
