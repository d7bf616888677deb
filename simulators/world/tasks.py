"""Tasks of 1-4 calls over a pool of APIs, written as canonical trajectories whose observations
are the executor's: lookups, top-by, counts, pairs, chains (a later call's argument is an
earlier observation's value), two chains, and give-ups (no suitable tool offered; an API that
keeps failing). `meta.world` holds what the verdicts check: the gold calls with the calls each
depends on, the values the answer must state and the expected end (conclusion / give_up)."""
from __future__ import annotations

import json
import random

from .apis import canonical
from .database import top_row
from .executor import World
from .settings import WorldSettings


class Script:
    """A task's trajectory, built turn by turn, each call executed in the world."""

    def __init__(self, world: World, spec_api: str | None = None):
        self.world, self.spec_api = world, spec_api
        self.turns, self.calls, self.values = [], [], []

    def call(self, thought: str, api: dict, args: dict, after=()) -> dict:
        text = json.dumps(args, ensure_ascii=False)
        result = self.world.execute(api["name"], text, self.spec_api)
        self.turns += [{"role": "planner", "thought": thought, "decision": "call"},
                       {"role": "caller", "name": api["name"], "arguments": text}]
        obs = {"role": "observation", "content": result["content"]}
        if result["error"]:
            obs["error"] = result["error"]
        self.turns.append(obs)
        if not result["error"]:
            self.calls.append({"name": api["name"], "arguments": args, "after": list(after)})
        return json.loads(result["content"]) if result["content"] else {}

    def conclude(self, thought: str, answer: str, values: list) -> str:
        self.values = [_text(v) for v in values]
        self.turns += [{"role": "planner", "thought": thought, "decision": "conclusion"},
                       {"role": "summarizer", "answer": answer}]
        return "conclusion"

    def give_up(self, thought: str) -> str:
        self.turns.append({"role": "planner", "thought": thought, "decision": "give_up"})
        return "give_up"


def _text(v) -> str:
    return v if isinstance(v, str) else json.dumps(v)


class TaskMaker:
    """Makes tasks of a split from its pool of APIs (generated or real-spec)."""

    def __init__(self, s: WorldSettings, world: World, pool: list[dict], rng: random.Random):
        self.s, self.world, self.pool, self.rng = s, world, pool, rng
        self.w = s.wording
        self.by = {}
        for a in pool:
            if a["kind"] != "spec" and not a["failing"]:
                self.by.setdefault((a["kind"], a["entity"]), []).append(a)

    def pick(self, kind: str, entity: str | None = None, exclude=()) -> dict | None:
        options = [a for key, apis in self.by.items() if key[0] == kind and entity in (None, key[1])
                   for a in apis if a["attribute"] not in exclude]
        return self.rng.choice(options) if options else None

    def phrase(self, kind: str, **fill) -> str:
        return self.rng.choice(self.w["instructions"][kind]).format(**fill)

    def make(self, kind: str) -> dict | None:
        """One task of `kind`: {instruction, tools, turns, meta.world}, or None when the pool
        cannot make one."""
        maker = getattr(self, f"_{kind}")
        script = Script(self.world)
        made = maker(script)
        if made is None:
            return None
        instruction, gold, end = made
        tools = self.offer(gold, exclude_same=(kind == "no_tool"))
        return {"instruction": instruction, "tools": tools, "turns": script.turns,
                "meta": {"api": gold[0]["name"], "world": {
                    "kind": kind, "calls": script.calls, "values": script.values, "expect": end}}}

    def offer(self, gold: list[dict], exclude_same: bool = False) -> list[dict]:
        """The task's own APIs plus `distractors` others of the pool, same domain first."""
        names = {a["name"] for a in gold}
        same = {(a.get("entity"), a.get("attribute")) for a in gold}
        others = [a for a in self.pool if a["name"] not in names
                  and not (exclude_same and (a.get("entity"), a.get("attribute")) in same)]
        self.rng.shuffle(others)
        domain = gold[0].get("domain")
        others.sort(key=lambda a: a.get("domain") != domain)
        offered = ([] if exclude_same else list(gold)) + others[:self.s.distractors]
        uniq = list({a["name"]: a for a in offered}.values())
        self.rng.shuffle(uniq)
        return [canonical(a) for a in uniq]

    # ----- kinds -------------------------------------------------------------------------------
    def _row(self, entity: str) -> dict:
        return self.rng.choice(self.world.database[entity])

    def _fill(self, api: dict, **more) -> dict:
        return {"api": api["name"], "entity": api["entity"],
                "words": self.s.attributes[api["attribute"]]["words"], **more}

    def _lookup(self, sc: Script):
        api = self.pick("lookup")
        if api is None:
            return None
        row = self._row(api["entity"])
        f = self._fill(api, name=row["name"])
        args = {api["entity"]: row["name"]}
        conv = self.s.attributes[api["attribute"]].get("convert")
        if conv and self.rng.random() < 0.5:
            unit = self.rng.choice([u for u in conv["factors"]][1:] or list(conv["factors"]))
            args[conv["param"]] = unit
            out = sc.call(self.w["thoughts"]["lookup"].format(**f), api, args)
            value = out[api["attribute"]]
            sc.conclude(self.w["thoughts"]["conclusion"],
                        self.w["answers"]["value_unit"].format(**f, value=value, unit=unit), [value])
            return self.phrase("lookup_convert", **f, unit=unit), [api], "conclusion"
        out = sc.call(self.w["thoughts"]["lookup"].format(**f), api, args)
        value = out[api["attribute"]]
        sc.conclude(self.w["thoughts"]["conclusion"], self.w["answers"]["value"].format(**f, value=value),
                    [value])
        return self.phrase("lookup", **f), [api], "conclusion"

    def _top_call(self, sc: Script, api: dict, group: str) -> dict:
        f = self._fill(api, group=group)
        return sc.call(self.w["thoughts"]["top"].format(**f), api, {api["group_type"]: group})

    def _group(self, api: dict, avoid=()) -> str | None:
        groups = sorted({r["group"] for r in self.world.database[api["entity"]]} - set(avoid))
        return self.rng.choice(groups) if groups else None

    def _top(self, sc: Script):
        api = self.pick("top")
        if api is None:
            return None
        group = self._group(api)
        out = self._top_call(sc, api, group)
        name, value = out[api["entity"]], out[api["attribute"]]
        f = self._fill(api, group=group, name=name)
        sc.conclude(self.w["thoughts"]["conclusion"], self.w["answers"]["top"].format(**f, value=value),
                    [name])
        return self.phrase("top", **f), [api], "conclusion"

    def _count(self, sc: Script):
        api = self.pick("count")
        if api is None:
            return None
        group = self._group(api)
        rows = [r for r in self.world.database[api["entity"]] if r["group"] == group]
        minimum = self.rng.choice(rows)[api["attribute"]]
        f = self._fill(api, group=group, minimum=minimum)
        out = sc.call(self.w["thoughts"]["count"].format(**f), api,
                      {api["group_type"]: group, f"min_{api['attribute']}": minimum})
        sc.conclude(self.w["thoughts"]["conclusion"],
                    self.w["answers"]["count"].format(**f, value=out["count"]), [out["count"]])
        return self.phrase("count", **f), [api], "conclusion"

    def _pair(self, sc: Script):
        first = self.pick("lookup")
        second = first and self.pick("lookup", first["entity"], exclude=(first["attribute"],))
        if second is None:
            return None
        row = self._row(first["entity"])
        values, answers = [], []
        for api in (first, second):
            f = self._fill(api, name=row["name"])
            out = sc.call(self.w["thoughts"]["lookup"].format(**f), api, {api["entity"]: row["name"]})
            values.append(out[api["attribute"]])
            answers.append(self.w["answers"]["value"].format(**f, value=values[-1]))
        sc.conclude(self.w["thoughts"]["conclusion"], self.w["answers"]["join"].join(answers), values)
        f = self._fill(first, name=row["name"], words2=self._fill(second)["words"])
        return self.phrase("pair", **f), [first, second], "conclusion"

    def _chain_n(self, sc: Script, n_lookups: int, groups: int = 1):
        top = self.pick("top")
        lookups = []
        for _ in range(n_lookups):
            nxt = top and self.pick("lookup", top["entity"],
                                    exclude=[top["attribute"]] + [a["attribute"] for a in lookups])
            if nxt is None:
                return None
            lookups.append(nxt)
        picked = []
        for _ in range(groups):
            g = self._group(top, avoid=picked)
            if g is None:
                return None
            picked.append(g)
        values, answers = [], []
        for group in picked:
            out = self._top_call(sc, top, group)
            name, at = out[top["entity"]], len(sc.calls) - 1
            for api in lookups:
                f = self._fill(api, name=name)
                got = sc.call(self.w["thoughts"]["after_top"].format(**f), api,
                              {api["entity"]: name}, after=[at])
                values.append(got[api["attribute"]])
                answers.append(self.w["answers"]["value"].format(**f, value=values[-1]))
        sc.conclude(self.w["thoughts"]["conclusion"], self.w["answers"]["join"].join(answers), values)
        words = [self._fill(a)["words"] for a in lookups]
        f = self._fill(top, group=picked[0], group2=picked[-1], words2=words[0], words3=words[-1])
        return f, [top] + lookups

    def _chain(self, sc: Script):
        made = self._chain_n(sc, 1)
        return made and (self.phrase("chain", **made[0]), made[1], "conclusion")

    def _chain3(self, sc: Script):
        made = self._chain_n(sc, 2)
        return made and (self.phrase("chain3", **made[0]), made[1], "conclusion")

    def _chain4(self, sc: Script):
        made = self._chain_n(sc, 1, groups=2)
        return made and (self.phrase("chain4", **made[0]), made[1], "conclusion")

    def _no_tool(self, sc: Script):
        api = self.pick("lookup")
        if api is None:
            return None
        row = self._row(api["entity"])
        f = self._fill(api, name=row["name"])
        sc.give_up(self.w["thoughts"]["no_tool"].format(**f))
        return self.phrase("lookup", **f), [api], "give_up"

    def _failing(self, sc: Script):
        failing = [a for a in self.pool if a.get("failing")]
        if not failing:
            return None
        api = self.rng.choice(failing)
        row = self._row(api["entity"])
        f = self._fill(api, name=row["name"])
        args = {api["entity"]: row["name"]}
        sc.call(self.w["thoughts"]["lookup"].format(**f), api, args)
        sc.call(self.w["thoughts"]["retry"].format(**f), api, args)
        sc.give_up(self.w["thoughts"]["failing"].format(**f))
        return self.phrase("lookup", **f), [api], "give_up"


def spec_task(s: WorldSettings, world: World, api: dict, siblings: list[dict],
              rng: random.Random) -> dict:
    """A one-call task for a real-spec function, its required parameters given in the instruction."""
    w = s.wording
    props = api["parameters"].get("properties") or {}
    args = {k: _spec_value(props[k], rng, s) for k in api["parameters"].get("required") or []}
    sc = Script(world, spec_api=api["api"])
    out = sc.call(w["thoughts"]["spec"].format(api=api["name"]), api, args)
    sc.conclude(w["thoughts"]["conclusion"], w["answers"]["spec"].format(value=out["result"]),
                [out["result"]])
    purpose = api["description"].split(". ")[0].rstrip(". ") or api["name"]
    assign = ", ".join(f"{k} {_text(v) if not isinstance(v, str) else v}" for k, v in args.items())
    text = rng.choice(w["instructions"]["spec"]).format(
        purpose=purpose, purpose_lc=purpose[:1].lower() + purpose[1:],
        assignments=assign or w["spec_no_arguments"])
    others = [a for a in siblings if a["name"] != api["name"]]
    rng.shuffle(others)
    tools = [api] + others[:s.distractors]
    rng.shuffle(tools)
    return {"instruction": text, "tools": [canonical(a) for a in tools], "turns": sc.turns,
            "meta": {"api": api["api"], "world": {"kind": "spec", "calls": sc.calls,
                                                  "values": sc.values, "expect": "conclusion",
                                                  "spec_api": api["api"]}}}


def _spec_value(schema: dict, rng: random.Random, s: WorldSettings):
    if schema.get("enum"):
        return rng.choice(schema["enum"])
    kind = schema.get("type")
    if kind in ("integer", "number"):
        lo, hi = int(schema.get("minimum", 1)), int(schema.get("maximum", 50))
        return rng.randint(lo, max(lo, min(hi, lo + 99)))
    if kind == "boolean":
        return rng.random() < 0.5
    return rng.choice(s.wording["spec_strings"])
