"""The live agent loop: scripted roles, replayed tools, tiny local models and an OpenAI-compatible
completions endpoint (a minimal server on 127.0.0.1 below: tests/fakes/openai_server.py only
serves chat completions, and EndpointMember sends the rendered prompt string to /completions)."""
import copy
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from omegaconf import OmegaConf
from test_static_inference import DEV, REPO, build_tiny_run, greedy, load_template

from prompting.prompt_template import PromptTemplate
from trajectories.sources import load_trajectories
from trajectories.trajectory import validate_trajectory
from evaluation.agent.loop import run_episode, task_of
from evaluation.episodes.executors import ReplayExecutor
from evaluation.agent.exports import find_exports
from evaluation.agent.members import EndpointMember, PromptFit
from evaluation.agent.team import Team, build_team

CHAINS = REPO / "data/toolbench/train_sample_chains.json"


@pytest.fixture(scope="module")
def chains():
    return load_trajectories(CHAINS, format="alpha_umi_chains").trajectories


@pytest.fixture(scope="module")
def tpl():
    return PromptTemplate(load_template("glpft"))


def turn_text(tpl, turn) -> str:
    """A generated turn's body as the model would write it (the text before its EOS)."""
    _prefix, body, _suffix = tpl.turn_segments(turn, 0)
    return "".join(s.text for s in body if s.text is not None)


class GoldMember:
    """Replies with the body of the gold turns of its kind, in order; records its prompts."""

    def __init__(self, role, tpl, gold, kind):
        self.role, self.prompts = role, []
        self.replies = [turn_text(tpl, t) for t in gold["turns"] if t["role"] == kind]

    def complete(self, prompts, n_header=1):
        out = []
        for p in prompts:
            self.prompts.append(p)
            out.append(self.replies[len(self.prompts) - 1])
        return out


def gold_team(tpl, gold):
    return Team(tpl, GoldMember("planner", tpl, gold, "planner"), GoldMember("caller", tpl, gold, "caller"),
                GoldMember("summarizer", tpl, gold, "summarizer"))


def _norm(turns):
    return [{k: v for k, v in t.items() if not (k == "error" and not v)} for t in turns]


@pytest.mark.parametrize("index", [5, 0, 2])
def test_scripted_roles_reproduce_gold(chains, tpl, index):
    gold = chains[index]  # 5: repeated calls and error observations; 0: a leading user turn
    team = gold_team(tpl, gold)
    traj = run_episode(team, task_of(gold), ReplayExecutor(gold), max_steps=10)
    assert _norm(traj["turns"]) == _norm(gold["turns"])
    assert traj["turns"][-1] == {"role": "summarizer", "answer": gold["turns"][-1]["answer"]}
    assert traj["meta"]["termination"] == "conclusion"
    assert traj["meta"]["steps"] == sum(t["role"] == "planner" for t in gold["turns"])
    validate_trajectory(traj)
    # every prompt is what training renders for the gold prefix before that turn
    planner_at = [i for i, t in enumerate(gold["turns"]) if t["role"] == "planner"]
    for k, i in enumerate(planner_at):
        prefix = {**gold, "turns": gold["turns"][:i]}
        assert team.planner.prompts[k] == tpl.render_prompt("planner", prefix, "planner")
    caller_at = [i for i, t in enumerate(gold["turns"]) if t["role"] == "caller"]
    for k, i in enumerate(caller_at):
        prefix = {**gold, "turns": gold["turns"][:i]}
        assert team.caller.prompts[k] == tpl.render_prompt("caller", prefix, "caller")


class Fixed:
    def __init__(self, role, *replies):
        self.role, self.replies, self.calls = role, replies, 0

    def complete(self, prompts, n_header=1):
        self.calls += len(prompts)
        return [self.replies[min(self.calls - 1, len(self.replies) - 1)] for _ in prompts]


def test_step_limit_stops_a_looping_planner(chains, tpl):
    gold = chains[2]
    name = gold["tools"][0]["name"]
    team = Team(tpl, Fixed("planner", "Again.\nNext: caller."),
                Fixed("caller", f"Action: {name}\nAction Input: {{}}"), Fixed("summarizer", "never"))
    traj = run_episode(team, task_of(gold), ReplayExecutor(gold), max_steps=3)
    assert traj["meta"]["termination"] == "max_steps"
    assert [t["role"] for t in traj["turns"]] == ["planner", "caller", "observation"] * 3
    assert team.summarizer.calls == 0
    validate_trajectory(traj)


@pytest.mark.parametrize("planner, caller, termination, last_role", [
    ("I cannot.\nNext: give up.", "", "give_up", "planner"),
    ("hmm", "", "unparseable_plan", None),
    ("Call.\nNext: caller.", "Action: no_such_tool\nAction Input: {}", "invalid_call", "planner"),
    ("Call.\nNext: caller.", "garbage", "invalid_call", "planner"),
])
def test_episode_endings(chains, tpl, planner, caller, termination, last_role):
    gold = chains[2]
    team = Team(tpl, Fixed("planner", planner), Fixed("caller", caller), Fixed("summarizer", "x"))
    traj = run_episode(team, task_of(gold), ReplayExecutor(gold), max_steps=4)
    assert traj["meta"]["termination"] == termination
    assert (traj["turns"][-1]["role"] if traj["turns"] else None) == last_role
    if termination == "invalid_call":
        assert traj["meta"]["invalid_call"]["raw"] == caller
    validate_trajectory(traj)


def test_replay_executor(chains):
    gold = chains[5]
    calls = [(t["name"], t["arguments"]) for t in gold["turns"] if t["role"] == "caller"]
    obs = [t for t in gold["turns"] if t["role"] == "observation"]
    ex = ReplayExecutor(gold)
    # repeated identical calls get the recorded observations in turn
    assert ex.execute(*calls[0]) == {"content": obs[0]["content"], "error": obs[0]["error"]}
    assert ex.execute(*calls[1]) == {"content": obs[1]["content"], "error": obs[1]["error"]}
    # arguments compare as JSON (spacing), a different argument falls back to the same name in order
    ex2 = ReplayExecutor(gold)
    assert ex2.execute(calls[2][0], " { } ")["content"] == obs[2]["content"]
    assert ex2.execute(calls[2][0], '{"other": 1}')["content"] == obs[3]["content"]
    assert [e["match"] for e in ex2.log] == ["exact", "order"]
    # an unknown call: an error observation
    res = ex2.execute("no_such_tool", "{}")
    assert res["content"] == "" and "no_such_tool" in res["error"]
    # canonical JSON keys: order does not matter
    rec = {"id": "x", "tools": [{"name": "f", "description": "", "parameters": {}}], "instruction": "i",
           "turns": [{"role": "planner", "thought": "t", "decision": "call"},
                     {"role": "caller", "name": "f", "arguments": '{"a": 1, "b": 2}'},
                     {"role": "observation", "content": "ok"}]}
    assert ReplayExecutor(rec).execute("f", '{"b": 2, "a": 1}') == {"content": "ok", "error": ""}


# ----- tiny local models -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    return build_tiny_run(tmp_path_factory.mktemp("tiny"))


@pytest.mark.parametrize("mode", ["alpha_umi", "single"])
def test_local_models_terminate_with_valid_trajectory(tiny_run, chains, tpl, mode):
    team = build_team(tpl, mode, find_exports(tiny_run), fit=PromptFit(None, None, True),
                      decoding=greedy(16), device="cpu")
    gold = chains[0]
    traj = run_episode(team, task_of(gold), ReplayExecutor(gold), max_steps=3)
    validate_trajectory(traj)
    assert traj["meta"]["steps"] <= 3
    assert traj["meta"]["termination"] in ("conclusion", "give_up", "max_steps", "unparseable_plan",
                                           "invalid_call")
    assert traj["turns"][:1] == gold["turns"][:1]  # the leading user turn of the task


def test_cli_agent(tiny_run, tmp_path, capsys):
    import evaluate
    out = tmp_path / "episodes.jsonl"
    rc = evaluate.main(["agent", "--run", str(tiny_run), "--trajectory", str(DEV), "--index", "1",
                        "--max-steps", "2", "--max-new-tokens", "8", "--out", str(out)])
    assert rc == 0
    traj = json.loads(capsys.readouterr().out)
    validate_trajectory(traj)
    assert traj["meta"]["mode"] == "alpha_umi" and traj["meta"]["steps"] <= 2
    assert json.loads(out.read_text()) == traj
    assert evaluate.main(["agent", "--run", str(tiny_run), "--trajectory", str(DEV),
                          "--index", "999"]) == 2


# ----- an OpenAI-compatible endpoint ----------------------------------------------------------
class CompletionsServer:
    """POST /v1/completions -> reply(prompt) for a scripted `reply`; records request bodies."""

    def __init__(self, reply):
        self.reply, self.requests, self.headers = reply, [], []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                outer.requests.append(body)
                outer.headers.append({k.lower(): v for k, v in self.headers.items()})
                if not self.path.endswith("/completions") or "chat" in self.path:
                    data, status = b'{"error": {"message": "not found"}}', 404
                elif not isinstance(body["prompt"], str):  # as `transformers serve` answers
                    data, status = b'{"error": {"message": "prompt must be a string."}}', 400
                else:
                    text = outer.reply(body["prompt"])
                    data = json.dumps({"id": "cmpl-1", "object": "text_completion", "created": 0,
                                       "model": body["model"],
                                       "choices": [{"index": 0, "text": text, "finish_reason": "stop",
                                                    "logprobs": None}],
                                       "usage": {"prompt_tokens": 1, "completion_tokens": 1,
                                                 "total_tokens": 2}}).encode()
                    status = 200
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True)

    @property
    def base_url(self):
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def gold_reply(tpl, gold, eos="</s>"):
    """Scripted completions: the next gold turn of the kind the prompt asks for."""
    queues = {kind: [turn_text(tpl, t) for t in gold["turns"] if t["role"] == kind]
              for kind in ("planner", "caller", "summarizer")}
    prefixes = {tpl.turns[k]["prefix"]: k for k in queues}

    def reply(prompt):
        kind = next((k for p, k in prefixes.items() if prompt.endswith(p)), None)
        assert kind, repr(prompt[-300:])
        return queues[kind].pop(0) + eos + "text after EOS"  # a server ignoring `stop`
    return reply


def test_endpoint_roles_run_an_episode(chains, tpl, monkeypatch):
    gold = chains[2]
    monkeypatch.setenv("TEST_ENDPOINT_KEY", "sk-test-123")
    with CompletionsServer(gold_reply(tpl, gold)) as server:
        llm = OmegaConf.to_container(OmegaConf.load(REPO / "recipes/eval/endpoint.yaml"))["endpoint"]
        roles = [EndpointMember({**llm, "base_url": server.base_url, "model": f"m-{r}",
                                 "api_key_env": "TEST_ENDPOINT_KEY", "max_retries": 0, "timeout_s": 10},
                                role=r, decoding=greedy(64), eos_text="</s>")
                 for r in ("planner", "caller", "summarizer")]
        traj = run_episode(Team(tpl, *roles), task_of(gold), ReplayExecutor(gold), max_steps=8)
    assert _norm(traj["turns"]) == _norm(gold["turns"])
    assert traj["meta"]["termination"] == "conclusion"
    first = server.requests[0]
    assert first["model"] == "m-planner" and first["stop"] == ["</s>"] and first["max_tokens"] == 64
    assert first["temperature"] == 0.0
    assert first["prompt"] == roles[0].prompt_text(tpl.render_prompt("planner", task_of(gold), "planner"))
    assert server.headers[0]["authorization"] == "Bearer sk-test-123"  # the key from the env only
    # later prompts: segment texts joined, the EOS string where training has its EOS token
    caller_prompt = server.requests[1]["prompt"]
    assert server.requests[1]["model"] == "m-caller"
    assert caller_prompt.endswith("Next: caller.</s>\nCaller:")
    planner_turns = [t for t in gold["turns"] if t["role"] == "planner"]
    assert planner_turns[0]["thought"] in caller_prompt


def test_cli_agent_with_endpoints(tiny_run, chains, tpl, tmp_path, capsys):
    import evaluate
    gold = load_trajectories(DEV).trajectories[1]
    args = ["agent", "--run", str(tiny_run), "--trajectory", str(DEV), "--index", "1", "--max-steps", "8"]
    # the tiny run's exports have no training record (DONE.json) to say how long each output may be
    assert evaluate.main(args) == 2
    assert "--max-new-tokens" in capsys.readouterr().err
    with CompletionsServer(gold_reply(tpl, gold)) as server:
        # room for whole prompts: the scripted server answers by the prompt's last words
        rc = evaluate.main(args + ["--endpoint", f"all={server.base_url}", "--max-new-tokens", "64",
                                   "--max-prompt-tokens", "8000"])
    assert rc == 0
    out = capsys.readouterr()
    traj = json.loads(out.out)
    assert _norm(traj["turns"]) == _norm(copy.deepcopy(gold["turns"]))
    assert {r["model"] for r in server.requests} == {"planner", "caller", "summarizer"}
    assert all(r["stop"] == ["</s>"] for r in server.requests)
    # token ids first (prompt_as: auto); refused, so each member sends the fitted text from then on
    by_model = {}
    for r in server.requests:
        by_model.setdefault(r["model"], []).append(r["prompt"])
    for prompts in by_model.values():
        assert isinstance(prompts[0], list) and all(isinstance(p, str) for p in prompts[1:])
    err = out.err
    assert err.count("takes no token ids as prompt") == 3
    assert err.count("prompt tokens where training's tokenizer gives") == 3  # the fake counts 1


def test_endpoint_member_warns_once_when_the_text_sent_tokenizes_to_other_ids(bpe_tokenizer):
    logs = []
    member = EndpointMember({"base_url": "http://127.0.0.1:9", "model": "m", "prompt_as": "text"},
                            role="caller", decoding=greedy(8), eos_text="</s>",
                            fit=PromptFit(None, None, True), tokenizer=bpe_tokenizer, log=logs.append)
    text = "Planner: résumé</s>\nCaller:"
    ids = [bpe_tokenizer.bos_token_id] + bpe_tokenizer(text, add_special_tokens=False)["input_ids"]
    assert member.served_text(text, ids) == "<s>" + text and not logs  # BOS as text: same ids
    wrong = ids[:3] + [ids[3] + 1] + ids[4:]
    member.served_text(text, wrong)
    member.served_text(text, wrong)
    assert len(logs) == 1 and "first difference at token 3" in logs[0]
