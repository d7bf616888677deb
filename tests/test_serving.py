"""Serving exports for real: an export made servable (pipeline/serving.py) carries what a server
needs, and its chat template renders a role prompt as the repo's template does; one
`transformers serve` (loopback, no model forced) serves the exports of a run trained here (the
quickstart cut short) to the agent's /completions for `evaluate.py static` (greedy predictions equal
local ones, step for step, prompts cut to the budget included) and `evaluate.py episodes`, and a
random export with room for long prompts to a simulator instance on its chat endpoint, whose
malformed replies are counted, not fatal."""
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import QUICKSTART
from fakes.agent_script import JUDGE
from fakes.openai_server import EXECUTOR, FakeOpenAIServer
from omegaconf import OmegaConf

REPO = Path(__file__).resolve().parents[1]
TEMPLATE = REPO / "recipes/template/glpft.yaml"
DEV = REPO / "data/toolbench/dev_conversations.json"
STAGES = ("backbone", "planner", "caller", "summarizer")
ROLES = ("planner", "caller", "summarizer")


def save_export(out: Path, max_length: int = 384, positions: int = 512) -> Path:
    """A 1-layer Llama with a BPE tokenizer trained here, made servable and saved as a stage does."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from pipeline.serving import make_servable
    from prompting.bpe_tokenizer import train_bpe_tokenizer
    tok = train_bpe_tokenizer([(REPO / "README.md").read_text()] * 2, vocab_size=400,
                              out_dir=out.parent / "tok")
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=1, num_attention_heads=2,
                                         num_key_value_heads=1, max_position_embeddings=positions))
    chat = OmegaConf.load(TEMPLATE).tokenizer.chat_template
    make_servable(model, tok, max_length=max_length, chat_template=chat)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def test_an_export_carries_what_a_server_needs(tmp_path):
    from transformers import AutoTokenizer, GenerationConfig
    path = save_export(tmp_path / "export")
    tok = AutoTokenizer.from_pretrained(path)
    gen = GenerationConfig.from_pretrained(path)
    assert tok.model_max_length == 384
    assert (gen.eos_token_id, gen.bos_token_id, gen.pad_token_id) == \
        (tok.eos_token_id, tok.bos_token_id, tok.pad_token_id)
    text = tok.apply_chat_template([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"},
                                    {"role": "user", "content": "more"}],
                                   tokenize=False, add_generation_prompt=True)
    assert text == "<s>User: hi\nAssistant: yo</s>\nUser: more\nAssistant: "


# ----- a real `transformers serve` ---------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A quickstart run cut short: 3 optimizer steps a stage, rows of 512 tokens (most dev-slice
    prompts are cut to fit), the exports a user would serve."""
    from core.recipe import load_recipe
    from core.run_dir import RunDir
    from pipeline.stage_runner import run_recipe
    run_dir = tmp_path_factory.mktemp("trained") / "run"
    run_recipe(load_recipe([QUICKSTART], [
        f"run.dir={run_dir}", "logger.progress_bar=false", "logger.wandb.enabled=false",
        "evaluate.enabled=false", "data.max_length=512", "tokenizer.train_bpe.vocab_size=1000",
        *[f"stages.{s}.trainer.max_steps=3" for s in STAGES]]))
    return run_dir, {r: str(RunDir(run_dir).stage(r).export) for r in STAGES}


@pytest.fixture(scope="module")
def served(tmp_path_factory, trained):
    """One `transformers serve` with no model forced: each request names the export it wants (the
    trained run's, or a random export with 8k positions for the simulator's long chat prompts)."""
    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
    export = save_export(tmp_path_factory.mktemp("serve") / "export", max_length=8192, positions=8192)
    port = free_port()
    log = open(export.parent / "serve.log", "w")
    proc = subprocess.Popen([sys.executable, "-c", "from transformers.cli.transformers import main; main()",
                             "serve", "--host", "127.0.0.1", "--port", str(port), "--device", "cpu"],
                            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 300
        while True:
            try:
                with urllib.request.urlopen(url + "/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                pytest.fail(f"transformers serve did not start: {(export.parent / 'serve.log').read_text()[-2000:]}")
            time.sleep(1)
        yield url + "/v1", export
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def endpoint_models(exports) -> list[str]:
    return [a for r in ROLES for a in ("--endpoint-model", f"{r}={exports[r]}")]


def test_episodes_against_transformers_serve(trained, served, tmp_path, monkeypatch):
    import evaluate
    from trajectories.sources import load_trajectories
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    (run, exports), (base_url, _) = trained, served
    rules = [{"match": JUDGE, "reply": "Process: No\nAnswer: No\nReasons: scripted."},
             {"match": EXECUTOR, "reply": 'Status Code: 200\nResponse: {"ok": true}'}]
    with FakeOpenAIServer(rules) as fake:
        rc = evaluate.main(["episodes", str(REPO / "recipes/eval/toolalpaca_simulated.yaml"), "limit=3",
                            "max_steps=2", "in_flight=3", "progress=false",
                            f"executor.simulator.llm.base_url={fake.base_url}", f"judge.llm.base_url={fake.base_url}",
                            "judge.fail_without_judging=[error]",
                            "--run", str(run), "--endpoint", f"all={base_url}", *endpoint_models(exports),
                            "--max-new-tokens", "12", "--out", str(tmp_path / "episodes_out")])
    assert rc == 0
    recs = [json.loads(line) for line in (tmp_path / "episodes_out/episodes.jsonl").read_text().splitlines()]
    ids = [t["id"] for t in load_trajectories(REPO / "data/toolalpaca/eval_simulated.json",
                                              format="toolalpaca_eval").trajectories[:3]]
    assert sorted(r["id"] for r in recs) == sorted(ids)
    # a model trained for 3 steps: whatever it writes, each episode ends without a crash
    assert {r["termination"] for r in recs} <= {"answer", "give_up", "max_steps", "unparseable_plan",
                                                "invalid_call"}
    assert all(r["trajectory"]["meta"]["outputs"] for r in recs)
    metrics = json.loads((tmp_path / "episodes_out/metrics.json").read_text())
    assert metrics["episodes"] == 3 and metrics["errors"] == 0


def test_simulator_on_the_served_chat_endpoint(served, tmp_path, monkeypatch):
    from simulators import build_corpus
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    base_url, export = served
    settings = {"sources": [{"type": "toolalpaca", "path": "data/toolalpaca/eval_simulated.json",
                             "names": ["Axolotl"]}],
                "instructions_per_api": 1,
                "llm": {"base_url": base_url, "model": str(export), "concurrency": 1, "timeout_s": 120.0,
                        "max_retries": 1, "backoff_base_s": 0.01, "send_seed": False, "max_tokens": 24},
                "user": {"max_tokens": 24}, "assistant": {"max_tokens": 24, "max_steps": 2},
                "executor": {"max_tokens": 24}, "output": {"progress": False, "stats_every": 1}}
    corpus = build_corpus(settings, tmp_path)
    stats = json.loads((corpus.parent / "stats.json").read_text())
    assert stats["complete"] and stats["planned"] == 1
    assert stats["kept"] + stats["filtered"] == 1  # the instance ended, kept or filtered
    assert stats["errors_this_run"] == 0
    # the tiny model does not follow the format: its malformed replies are counted
    assert stats["totals"].get("parse_failures", 0) + stats["totals"].get("instruction_parse_failures", 0) >= 1
    assert stats["llm_this_run"]["calls"] >= 2


def test_the_exports_chat_template_renders_a_role_prompt_as_the_template_does(trained):
    """A role prompt given as messages (the header as the system message, each turn "Name: content")
    renders, through the export's chat template, the text the repo's template renders, BOS first."""
    from transformers import AutoTokenizer

    from core.run_dir import RunDir
    from evaluation.steps.extract import load_steps
    from evaluation.steps.teacher_forced import step_trajectory
    from prompting.prompt_template import EOS, PromptTemplate
    run, exports = trained
    tpl = PromptTemplate(RunDir(run).load_recipe()["template"])
    steps = load_steps(DEV)
    traj = step_trajectory(max(steps[:40], key=lambda s: len(step_trajectory(s)["turns"])))
    assert {t["role"] for t in traj["turns"]} >= {"planner", "caller", "observation"}
    traj["turns"] = [{"role": "user", "content": "Also in French, s'il vous plaît."}] + traj["turns"]
    messages = []
    for i, turn in enumerate(traj["turns"]):
        prefix, body, suffix = tpl.turn_segments(turn, i)
        text = "".join(s.text for s in prefix + body if s.text is not EOS)
        name = "Conclusion" if turn["role"] == "summarizer" else turn["role"].capitalize()
        assert text.startswith(name + ": ") and [s.text for s in suffix] == ["\n"]
        messages.append({"role": turn["role"], "content": text[len(name) + 2:]})
    checked = 0
    for role in STAGES:
        tok = AutoTokenizer.from_pretrained(exports[role])
        for next_turn in ROLES:
            prompt = tpl.render_prompt(role, traj, next_turn)
            system = "".join(s.text for s in prompt[:prompt.header_len])
            chat = tok.apply_chat_template([{"role": "system", "content": system}] + messages, tokenize=False,
                                           add_generation_prompt=True, next_turn=next_turn)
            assert chat == tok.bos_token + "".join(tok.eos_token if s.text is EOS else s.text for s in prompt)
            checked += 1
    assert checked == 12


def test_served_greedy_predictions_equal_local_ones(trained, served, tmp_path, monkeypatch, capsys):
    """The exports of a trained run, served: fitted prompts (nearly all cut to the 512-token budget,
    at character boundaries) sent as text tokenize, on the server, to the ids the local exports are
    fed (checked for every request: no warning), and give the local predictions on the whole dev
    slice, step for step; the server counts the prompt tokens training's tokenizer counts."""
    import evaluate
    from transformers import AutoTokenizer

    from evaluation.steps.extract import load_steps
    from evaluation.steps.teacher_forced import step_trajectory
    from prompting.prompt_template import PromptTemplate
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    (run, exports), (base_url, _) = trained, served
    steps, tok = load_steps(DEV), AutoTokenizer.from_pretrained(exports["planner"])
    tpl = PromptTemplate(OmegaConf.load(TEMPLATE).template)
    long = sum(len(tok("".join(x.text or "" for x in tpl.render_prompt("planner", step_trajectory(s), "planner")))
                   ["input_ids"]) > 512 - 128 for s in steps)
    assert long > len(steps) // 2  # the budget cuts most prompts
    n = len(steps)
    common = ["static", "--run", str(run), "--references", f"dev={DEV}", "--max-new-tokens", "8",
              "--batch-size", "1"]
    assert evaluate.main(common + ["--out", str(tmp_path / "local")]) == 0
    assert evaluate.main(common + ["--endpoint", f"all={base_url}", *endpoint_models(exports),
                                   "--out", str(tmp_path / "served")]) == 0
    err = capsys.readouterr().err
    read = lambda d: [json.loads(line) for line in
                      next((tmp_path / d).rglob("predictions.jsonl")).read_text().splitlines()]
    local, served_preds = read("local"), read("served")
    same = sum(a == b for a, b in zip(local, served_preds))
    print(f"served vs local: {same} of {len(local)} steps identical")
    assert len(local) == len(served_preds) == n and same == n
    assert "takes no token ids as prompt" in err  # transformers serve: the fitted text was sent
    assert "tokenizes to" not in err and "prompt tokens where" not in err
