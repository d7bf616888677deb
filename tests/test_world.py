"""The tool world (simulators/world): determinism, splits by API, the executor's errors and the
computed verdicts on hand-made episodes."""
import copy
import re
import json

import pytest

from simulators.world import World, WorldExecutor, WorldSettings, build_world, verdict, world_paths
from simulators.world.settings import SPLITS, WorldSettingsError

# a small world; 3 distractors (the shipped world offers 1) so that 150 training tasks offer
# every API a held-in task calls
SMALL = ["tasks.train=150", "tasks.held-in=30", "tasks.unseen-apis=40", "tasks.unseen-real-specs=20",
         "distractors=3"]


@pytest.fixture(scope="module")
def world_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("world")
    build_world(WorldSettings.load(None, SMALL), out)
    return out


def records(world_dir, split):
    return [json.loads(line) for line in world_paths(world_dir)[split].read_text().splitlines()]


def test_same_seed_same_bytes_other_seed_other_world(world_dir, tmp_path):
    build_world(WorldSettings.load(None, SMALL), tmp_path / "again")
    for key, path in world_paths(world_dir).items():
        assert path.read_bytes() == world_paths(tmp_path / "again")[key].read_bytes(), key
    build_world(WorldSettings.load(None, SMALL + ["seed=1"]), tmp_path / "other")
    assert world_paths(tmp_path / "other")["train"].read_bytes() != world_paths(world_dir)["train"].read_bytes()


def test_splits_are_disjoint_by_api_and_instruction(world_dir):
    world = World.load(world_dir)
    train = records(world_dir, "train")
    train_tools = {t["name"] for r in train for t in r["tools"]}
    train_text = {r["instruction"] for r in train}
    generated = {a["name"]: a for a in world.apis.values() if a["origin"] == "generated"}
    for split in SPLITS[1:]:
        recs = records(world_dir, split)
        assert recs, split
        assert not train_text & {r["instruction"] for r in recs}, split
        gold = {c["name"] for r in recs for c in r["meta"]["world"]["calls"]}
        if split == "held-in":
            assert gold <= train_tools
        else:  # no API of an unseen split is ever offered in training
            assert not gold & train_tools, split
            assert not {t["name"] for r in recs for t in r["tools"]} & train_tools - set(generated), split
    unseen_offered = {t["name"] for r in records(world_dir, "unseen-apis") for t in r["tools"]}
    assert not unseen_offered & train_tools
    kinds = {r["meta"]["world"]["kind"] for r in train}
    assert {"lookup", "chain", "chain4", "no_tool", "failing"} <= kinds


def test_observations_are_the_executors(world_dir):
    world = World.load(world_dir)
    for split in SPLITS:
        for rec in records(world_dir, split)[:20]:
            ex = WorldExecutor(world, rec)
            turns = rec["turns"]
            for i, turn in enumerate(turns):
                if turn["role"] == "caller":
                    got = ex.execute(turn["name"], turn["arguments"])
                    assert got["content"] == turns[i + 1]["content"]
                    assert got["error"] == turns[i + 1].get("error", "")


def test_bad_calls_get_the_errors_a_real_api_gives(world_dir):
    world = World.load(world_dir)
    rec = next(r for r in records(world_dir, "train") if r["meta"]["world"]["kind"] == "count")
    call = rec["meta"]["world"]["calls"][0]
    api = world.apis[call["name"]]
    group_key, min_key = api["parameters"]["required"]
    ex = WorldExecutor(world, rec)
    assert json.loads(ex.execute(call["name"], json.dumps(call["arguments"]))["content"])["count"] >= 1
    missing = ex.execute(call["name"], json.dumps({group_key: call["arguments"][group_key]}))
    assert missing["error"].startswith("400") and repr(min_key) in missing["error"]
    too_big = {**call["arguments"], min_key: api["parameters"]["properties"][min_key]["maximum"] + 1}
    assert "maximum" in ex.execute(call["name"], json.dumps(too_big))["error"]
    assert "unknown parameter" in ex.execute(call["name"], json.dumps({**call["arguments"], "x": 1}))["error"]
    assert ex.execute(call["name"], "{not json")["error"].startswith("400")
    assert ex.execute("no_such_api", "{}")["error"].startswith("404")
    nowhere = ex.execute(call["name"], json.dumps({**call["arguments"], group_key: "Atlantis"}))
    assert nowhere["error"].startswith("404")
    failing = next(a for a in world.apis.values() if a["failing"])
    assert ex.execute(failing["name"], "{}")["error"].startswith("503")
    assert ex.counters["calls"] == 8


def _episode(reference, turns, termination):
    traj = copy.deepcopy(reference)
    traj["turns"], traj["meta"] = turns, {"termination": termination}
    return traj


def test_verdicts_on_hand_made_episodes(world_dir):
    test = records(world_dir, "held-in") + records(world_dir, "unseen-apis")
    chain = next(r for r in test if r["meta"]["world"]["kind"] in ("chain", "chain4"))
    assert verdict(chain, _episode(chain, chain["turns"], "conclusion")) \
        == {"process": "yes", "answer": "yes", "termination": "conclusion"}
    # right calls, in the wrong order for the dependency (the lookup before the top call)
    calls = [i for i, t in enumerate(chain["turns"]) if t["role"] == "caller"]
    swapped = copy.deepcopy(chain["turns"])
    a, b = calls[0], calls[1]
    swapped[a:a + 3], swapped[b:b + 3] = chain["turns"][b:b + 3], chain["turns"][a:a + 3]
    assert verdict(chain, _episode(chain, swapped, "conclusion"))["process"] == "no"
    # wrong API: another offered tool answers
    single = next(r for r in test if r["meta"]["world"]["kind"] == "lookup")
    wrong_api = copy.deepcopy(single["turns"])
    caller = next(t for t in wrong_api if t["role"] == "caller")
    caller["name"] = next(t["name"] for t in single["tools"] if t["name"] != caller["name"])
    assert verdict(single, _episode(single, wrong_api, "conclusion"))["process"] == "no"
    # wrong argument (another row's name)
    wrong_arg = copy.deepcopy(single["turns"])
    caller = next(t for t in wrong_arg if t["role"] == "caller")
    args = json.loads(caller["arguments"])
    key = next(iter(args))
    args[key] = args[key] + "x"
    caller["arguments"] = json.dumps(args)
    assert verdict(single, _episode(single, wrong_arg, "conclusion"))["process"] == "no"
    # the answer misses the value (or states a longer number that contains it)
    value = single["meta"]["world"]["values"][0]
    for answer in ("I could not find it.", f"It is {value}1."):
        missing = copy.deepcopy(single["turns"])
        missing[-1]["answer"] = answer
        assert verdict(single, _episode(single, missing, "conclusion")) == \
            {"process": "yes", "answer": "no", "termination": "conclusion"}
    # giving up: justified on a give-up task, a failure on one that can be done
    give_up = next(r for r in records(world_dir, "train") if r["meta"]["world"]["expect"] == "give_up")
    assert verdict(give_up, _episode(give_up, give_up["turns"], "give_up"))["answer"] == "yes"
    quit_early = [{"role": "planner", "thought": "No.", "decision": "give_up"}]
    assert verdict(single, _episode(single, quit_early, "give_up"))["answer"] == "no"
    answered = copy.deepcopy(single["turns"])
    assert verdict(give_up, _episode(give_up, answered, "conclusion"))["answer"] == "no"


def test_invented_domains_add_api_names_no_model_has_seen(tmp_path):
    """`invented.domains`: seeded invented entity types (and entity names) in domains of their
    own, on top of the lexicon's; the unseen split then holds APIs of types never named before."""
    base = WorldSettings.load(None)
    s = WorldSettings.load(None, ["invented.domains=2", "invented.types_per_domain=5", "tasks.train=60",
                                  "tasks.held-in=5", "tasks.unseen-apis=20", "tasks.unseen-real-specs=0"])
    assert WorldSettings.load(None, ["invented.domains=2", "invented.types_per_domain=5"]).lexicon == \
        WorldSettings.load(None, ["invented.domains=2", "invented.types_per_domain=5", "tasks.train=1"]).lexicon
    assert s.domains == base.domains + ("invented_1", "invented_2")
    invented = [e for d in ("invented_1", "invented_2") for e in s.lexicon[d]]
    assert len(set(invented)) == 10 and not set(invented) & {e for d in base.domains for e in base.lexicon[d]}
    assert all(re.fullmatch(r"[a-z]+", e) for e in invented)
    build_world(s, tmp_path)
    world = World.load(tmp_path)
    names = {a["name"] for a in world.apis.values() if a.get("entity") in invented}
    assert len(names) >= 10 * 2 * 3  # two or three attributes per type, three kinds each
    unseen = {c["name"] for r in records(tmp_path, "unseen-apis") for c in r["meta"]["world"]["calls"]}
    assert unseen & names


def test_bad_settings_name_the_key(tmp_path):
    with pytest.raises(WorldSettingsError, match="simulator.domains"):
        WorldSettings.load(None, ["domains=[atlantis]"])
    with pytest.raises(WorldSettingsError, match="simulator.unseen_api_fraction"):
        WorldSettings.load(None, ["unseen_api_fraction=1.5"])
    with pytest.raises(WorldSettingsError, match="simulator.names: 4 name combinations for 18 entity types"):
        WorldSettings.load(None, ["names.first=[A, B]", "names.second=[C, D]"])


def test_shipped_world_is_up_to_date(tmp_path):
    """data/world is `python -m simulators world tasks.train=0 output.dir=data/world`; rewrite it so
    when recipes/simulator/world.yaml or the world's code changes."""
    from core.repo_paths import REPO_ROOT
    build_world(WorldSettings.load(None, ["tasks.train=0"]), tmp_path)
    shipped = world_paths(REPO_ROOT / "data" / "world")
    for key, path in world_paths(tmp_path).items():
        assert path.read_bytes() == shipped[key].read_bytes(), f"data/world/{path.name} is stale"


def test_world_episodes_oracle_scores_100_and_mistakes_score_lower(tmp_path):
    """`evaluate.py episodes recipes/eval/world.yaml` with an agent (fake endpoint) that replays
    each instance's recorded turns: every verdict yes; wrong calls / non-answers fail."""
    from fakes.openai_server import FakeOpenAIServer

    import evaluate
    from core.repo_paths import REPO_ROOT
    test = records(REPO_ROOT / "data" / "world", "unseen-apis")[:16]
    by_text = {r["instruction"]: r for r in test}

    def reply(body, wrong=()):
        prompt = body["prompt"]
        rec = by_text[re.search(r"^Task: (.*)$", prompt, re.M).group(1)]
        done = prompt.count("\nObservation: ")
        turns = rec["turns"]
        if prompt.endswith("Planner:"):
            t = [t for t in turns if t["role"] == "planner"][done]
            return f" {t['thought']}\nNext: {WORDS[t['decision']]}.</s>"
        if prompt.endswith("Caller:"):
            t = [t for t in turns if t["role"] == "caller"][done]
            args = '{"nope": 1}' if rec["id"] in wrong else t["arguments"]
            return f" Action: {t['name']}\nAction Input: {args}</s>"
        return " I do not know.</s>" if rec["id"] in wrong else f" {turns[-1]['answer']}</s>"

    def run(name, wrong=()):
        rules = [{"match": "Task: ", "reply": lambda body: reply(body, wrong)}]
        with FakeOpenAIServer(rules) as server:
            assert evaluate.main(["episodes", str(REPO_ROOT / "recipes/eval/world.yaml"), "limit=16",
                                  "progress=false", "--run", str(tmp_path / "run"), "--recipe",
                                  str(REPO_ROOT / "recipes/template/glpft.yaml"), "--endpoint",
                                  f"all={server.base_url}", "--max-new-tokens", "64",
                                  "--out", str(tmp_path / name)]) == 0
        return json.loads((tmp_path / name / "metrics.json").read_text())

    assert {k: run("oracle")[k] for k in ("proc", "ans", "both")} == {"proc": 100.0, "ans": 100.0, "both": 100.0}
    concluding = [r["id"] for r in test if r["meta"]["world"]["expect"] == "conclusion"]
    wrong = set(concluding[:4])
    got = run("wrong", wrong)
    assert got["proc"] == got["ans"] == 100.0 * (len(test) - len(wrong)) / len(test)


WORDS = {"call": "caller", "conclusion": "conclusion", "give_up": "give up"}
