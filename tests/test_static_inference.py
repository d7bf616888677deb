"""Static (teacher-forced) evaluation on tiny random checkpoints built here (no runs/ needed)."""
import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from prompting.prompt_template import EOS, PromptTemplate, Segment
from prompting.text_encoder import TextEncoder
from evaluation import EvaluationError
from evaluation.agent.exports import find_exports, resolve_mode
from evaluation.agent.members import Decoding, LocalMember, PromptFit
from evaluation.agent.team import Team
from datamodules.step_context import ContextBudget, prompt_ids
from evaluation.agent.generation import generate, load_model
from evaluation.steps.metrics import load_predictions
from evaluation.steps.teacher_forced import StaticEvaluation, evaluate_run, predict_steps, run_static, step_trajectory
from evaluation.steps.extract import load_steps, write_steps
from core.run_dir import RunDir

REPO = Path(__file__).resolve().parents[1]
DEV = REPO / "data/toolbench/dev_conversations.json"
ROLES = ("backbone", "planner", "caller", "summarizer")
PRED_KEYS = {"id", "plan", "thought", "action", "arguments", "answer", "raw"}
_CACHE = {}


def greedy(n: int, batch_size: int = 8) -> Decoding:
    """Greedy decoding of up to `n` tokens for every turn."""
    return Decoding({r: n for r in ("planner", "caller", "summarizer")}, batch_size, False, 1.0, 1.0, 0)


def static(run: Path, **node):
    """run_static of the tiny run with the `evaluate:` keys in `node` (test set: DEV as "dev")."""
    return run_static(run, RunDir(run).load_recipe(),
                      StaticEvaluation.from_node({"test_sets": {"dev": str(DEV)}, **node}))


def load_template(name: str = "glpft") -> dict:
    return OmegaConf.to_container(OmegaConf.load(REPO / "recipes/template" / f"{name}.yaml"))["template"]


def build_tiny_run(root: Path) -> Path:
    """A run directory with exports of backbone, planner, caller and summarizer (1-layer Llama,
    hidden 32, BPE 300) and the saved recipe with the glpft template; shared by the test modules
    of a session."""
    if "run" in _CACHE:
        return _CACHE["run"]
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from prompting.bpe_tokenizer import train_bpe_tokenizer
    template = load_template("glpft")
    tpl = PromptTemplate(template)
    steps = load_steps(DEV)[:12]
    texts = [s.text for st in steps for s in tpl.render_history("backbone", step_trajectory(st)) if s.text]
    run = root / "run"
    tok = train_bpe_tokenizer(texts, vocab_size=300, out_dir=root / "tok")
    for i, role in enumerate(ROLES):
        torch.manual_seed(i)
        cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                          num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                          max_position_embeddings=384, initializer_range=0.5)
        # as in the stage exports, the config keeps Llama's default special ids (eos 2 is this
        # tokenizer's <pad>): generation must stop at the tokenizer's EOS, not the config's
        model = LlamaForCausalLM(cfg)
        model.save_pretrained(RunDir(run).stage(role).export)
        tok.save_pretrained(RunDir(run).stage(role).export)
    recipe = {"run": {"name": "tiny", "dir": str(run)}, "tokenizer": {"add_bos": True},
              "template": template}
    OmegaConf.save(OmegaConf.create(recipe), RunDir(run).recipe_file)
    _CACHE["run"] = run
    return run


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    return build_tiny_run(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def dev_steps():
    return load_steps(DEV)


def _read(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


# ----- end to end --------------------------------------------------------------------------
def test_static_end_to_end_and_deterministic(tiny_run, dev_steps, tmp_path):
    kw = dict(limit=5, batch_size=2, max_new_tokens=12)
    res = static(tiny_run, out_dir=str(tmp_path / "a"), **kw)
    assert res["mode"] == "alpha_umi"  # auto: planner, caller and summarizer exports exist
    preds = _read(tmp_path / "a/dev/predictions.jsonl")
    assert [p["id"] for p in preds] == [s["id"] for s in dev_steps[:5]]
    for p in preds:
        assert PRED_KEYS <= set(p)
        assert p["plan"] in ("call", "conclusion", "give_up", None)
        assert isinstance(p["raw"]["planner"], str)
    load_predictions(tmp_path / "a/dev/predictions.jsonl", [s["id"] for s in dev_steps[:5]])  # valid
    metrics = json.loads((tmp_path / "a/dev/metrics.json").read_text())
    assert {"plan_acc", "act_em", "hallu", "arg_f1", "rouge_l", "counts", "n_steps"} <= set(metrics)
    assert metrics["n_steps"] == 5 and metrics["n_missing"] == 0
    assert metrics["inference"]["mode"] == "alpha_umi" and metrics["inference"]["test_set"] == "dev"
    assert metrics["inference"]["models"]["planner"] == str(RunDir(tiny_run).stage("planner").export)
    assert metrics == res["metrics"]["dev"]
    # greedy decoding: a second run gives the same predictions, byte for byte
    static(tiny_run, out_dir=str(tmp_path / "b"), **kw)
    assert (tmp_path / "a/dev/predictions.jsonl").read_bytes() == (tmp_path / "b/dev/predictions.jsonl").read_bytes()


def test_single_mode_uses_backbone(tiny_run, tmp_path):
    res = static(tiny_run, mode="single", limit=3, max_new_tokens=6, out_dir=str(tmp_path))
    assert res["mode"] == "single"
    assert list(res["metrics"]["dev"]["inference"]["models"]) == ["backbone"]
    assert len(_read(tmp_path / "dev/predictions.jsonl")) == 3


def test_left_padding_matches_unbatched(tiny_run, dev_steps):
    model, tok = load_model(str(RunDir(tiny_run).stage("planner").export), device="cpu")
    tpl = PromptTemplate(load_template("glpft"))
    enc = TextEncoder(tok, add_bos=True)
    prompts = [prompt_ids(enc, tpl.render_prompt("planner", step_trajectory(s), "planner"),
                          "planner", ContextBudget(240 + 74 * i, 100)) for i, s in enumerate(dev_steps[:6])]
    assert len({len(p) for p in prompts}) > 1  # different lengths: the batch is padded
    batched = generate(model, tok, prompts, max_new_tokens=10, batch_size=6)
    for prompt, out in zip(prompts, batched):
        single = generate(model, tok, [prompt], max_new_tokens=10, batch_size=1)[0]
        assert out.token_ids == single.token_ids and out.text == single.text
        assert tok.eos_token_id not in out.token_ids
        assert len(out.token_ids) == 10 or out.finished
    assert model.config.eos_token_id != tok.eos_token_id  # see build_tiny_run


def test_prompt_ids_match_training_encoding(tiny_run, dev_steps):
    """Untruncated prompt ids are TextEncoder.prompt_ids of render_prompt: as training."""
    _model, tok = load_model(str(RunDir(tiny_run).stage("caller").export), device="cpu")
    tpl = PromptTemplate(load_template("glpft"))
    enc = TextEncoder(tok, add_bos=True)
    segs = tpl.render_prompt("caller", step_trajectory(dev_steps[1]), "caller")
    assert prompt_ids(enc, segs, "caller", ContextBudget(100_000, 100)) == enc.prompt_ids(segs)


def test_truncation_keeps_bos_header_and_end(tiny_run, dev_steps):
    _model, tok = load_model(str(RunDir(tiny_run).stage("planner").export), device="cpu")
    tpl = PromptTemplate(load_template("glpft"))
    enc = TextEncoder(tok, add_bos=True)
    traj = {"id": "t", "tools": [{"name": "f", "description": "d", "parameters": {}}],
            "instruction": "Do it.", "turns": []}
    for i in range(12):
        traj["turns"] += [{"role": "planner", "thought": f"step {i}", "decision": "call"},
                          {"role": "caller", "name": "f", "arguments": "{}"},
                          {"role": "observation", "content": f"result number {i}"}]
    segs = tpl.render_prompt("planner", traj, "planner")
    full = enc.prompt_ids(segs)
    n_header = len(tpl.header("planner", [], "-"))
    pieces = enc.encode(segs)
    head = [t for p in pieces[:n_header] for t in p]
    budget = ContextBudget(2 * len(head) + 120, 50)
    assert len(full) > budget.max_length
    ids = prompt_ids(enc, segs, "planner", budget)
    assert len(ids) <= budget.max_length - budget.reserve
    assert ids[:1 + len(head)] == [tok.bos_token_id] + head   # header kept whole
    tail = len(ids) - 1 - len(head)
    assert tail > 0 and ids[-tail:] == full[-tail:]            # whole recent turns, from the left
    # a header longer than half the budget loses the end of its system segment (the tool list)
    small = prompt_ids(enc, segs, "planner", ContextBudget(200, 40))
    assert small[0] == tok.bos_token_id and small[-10:] == full[-10:]
    instruction = pieces[n_header - 1]
    keep = max(0, 200 // 2 - len(instruction))
    assert small[1:1 + keep] == full[1:1 + keep]
    assert small[1 + keep:1 + keep + len(instruction)] == instruction


# ----- the teacher-forced flow, with scripted roles -------------------------------------------
class Scripted:
    def __init__(self, role, reply):
        self.role, self.reply, self.prompts = role, reply, []

    def complete(self, prompts, n_header=1):
        self.prompts += prompts
        return [self.reply(len(self.prompts) - len(prompts) + i) for i in range(len(prompts))]


def test_predicted_planner_turn_feeds_caller_and_summarizer(dev_steps):
    tpl = PromptTemplate(load_template("glpft"))
    steps = dev_steps[:6]
    script = ["T0\nNext: caller.", "T1\nNext: conclusion.", "T2\nNext: give up.", "junk",
              "T4\nNext: caller.", "T5\nNext: conclusion."]
    planner = Scripted("planner", lambda i: script[i])
    caller = Scripted("caller", lambda i: f'Action: tool_{i}\nAction Input: {{"i": {i}}}')
    summarizer = Scripted("summarizer", lambda i: f" answer {i} ")
    preds, timing = predict_steps(Team(tpl, planner, caller, summarizer), steps)
    assert [p["plan"] for p in preds] == ["call", "conclusion", "give_up", None, "call", "conclusion"]
    assert [p["action"] for p in preds] == ["tool_0", None, None, None, "tool_1", None]
    assert preds[4]["arguments"] == '{"i": 1}'
    assert [p["answer"] for p in preds] == [None, "answer 0", None, None, None, "answer 1"]
    assert preds[3]["raw"] == {"planner": "junk", "caller": None, "summarizer": None}
    assert timing["planner"]["n"] == 6 and timing["caller"]["n"] == 2 and timing["summarizer"]["n"] == 2
    # planner prompts: the gold history; caller / summarizer: gold history + the predicted turn
    assert planner.prompts[0] == tpl.render_prompt("planner", step_trajectory(steps[0]), "planner")
    traj = step_trajectory(steps[4])
    traj["turns"] = traj["turns"] + [{"role": "planner", "thought": "T4", "decision": "call"}]
    assert caller.prompts[1] == tpl.render_prompt("caller", traj, "caller")
    traj = step_trajectory(steps[1])
    traj["turns"] = traj["turns"] + [{"role": "planner", "thought": "T1", "decision": "conclusion"}]
    assert summarizer.prompts[0] == tpl.render_prompt("summarizer", traj, "summarizer")
    assert summarizer.prompts[0][-1] == Segment("Conclusion:")
    assert EOS in [s.text for s in summarizer.prompts[0]]  # the predicted planner turn ends in EOS


def test_merged_single_llm_template(dev_steps):
    """α-UMi reference template: the backbone writes thought + call/answer in one output."""
    tpl = PromptTemplate(load_template("alpha_umi_reference"))
    outs = ['I call.\nAction: f\nAction Input: {"a": 1}', "Done.\nconclusion: 42", "x\nconclusion: give up."]
    backbone = Scripted("backbone", lambda i: outs[i])
    preds, timing = predict_steps(Team(tpl, backbone), dev_steps[:3])
    assert [(p["plan"], p["action"], p["arguments"], p["answer"]) for p in preds] == [
        ("call", "f", '{"a": 1}', None), ("conclusion", None, None, "42"), ("give_up", None, None, None)]
    assert set(timing) == {"planner"} and len(backbone.prompts) == 3
    assert backbone.prompts[0][-1] == Segment("assistant:")
    assert "Reply with your thought" in backbone.prompts[0][-2].text  # the backbone cue


# ----- run directories, modes, the recipe stage and the CLI -----------------------------------
def _fake_export(path: Path):
    path.mkdir(parents=True)
    (path / "config.json").write_text("{}")


def test_find_exports_and_modes(tmp_path):
    run = tmp_path / "r"
    _fake_export(RunDir(run).stage("backbone").export)
    assert resolve_mode("auto", find_exports(run), run) == "single"
    with pytest.raises(EvaluationError, match="planner"):
        resolve_mode("alpha_umi", find_exports(run), run)
    # roles from the DONE markers (stage names need not be role names)
    _fake_export(RunDir(run).stage("plan_stage").export)
    RunDir(run).stage("plan_stage").write_done({"role": "planner"})
    # roles from the recipe's stages
    for name in ("c2", "s2"):
        _fake_export(RunDir(run).stage(name).export)
    recipe = {"stages": {"c2": {"role": "caller"}, "s2": {"role": "summarizer"}}}
    exports = find_exports(run, recipe)
    export = lambda stage: str(RunDir(run).stage(stage).export)  # noqa: E731
    assert exports == {"caller": export("c2"), "summarizer": export("s2"),
                       "planner": export("plan_stage"), "backbone": export("backbone")}
    assert resolve_mode("auto", exports, run) == "alpha_umi"
    with pytest.raises(EvaluationError):
        resolve_mode("auto", {}, run)


def test_evaluate_run_stage(tiny_run, dev_steps, tmp_path):
    """The recipe's `evaluate:` node: each test set's predictions and metrics in its own folder of
    the run's eval folder, named as the recipe names it."""
    run = tmp_path / "run"
    run.mkdir()
    for role in ("planner", "caller", "summarizer"):
        (run / role).symlink_to(tiny_run / role)
    recipe = OmegaConf.to_container(OmegaConf.load(RunDir(tiny_run).recipe_file))
    recipe["run"]["dir"] = str(run)
    ood = tmp_path / "ood_steps.jsonl"
    write_steps(ood, dev_steps[5:7])  # a steps file is a valid test set too
    recipe["evaluate"] = {"test_sets": {"out-of-domain": str(DEV), "a-steps-file": str(ood)}, "limit": 2,
                          "batch_size": 8, "max_new_tokens": 4, "mode": "auto"}
    res = evaluate_run(recipe)
    for name in ("out-of-domain", "a-steps-file"):
        for f in ("predictions.jsonl", "metrics.json"):
            assert (RunDir(run).eval().path / name / f).is_file()
    assert RunDir(run).eval().read_metrics("a-steps-file")["n_steps"] == 2
    assert [p["id"] for p in _read(RunDir(run).eval().predictions_file("a-steps-file"))] == [s["id"] for s in dev_steps[5:7]]
    assert res["metrics"]["out-of-domain"]["n_steps"] == 2
    assert RunDir(run).eval().test_sets() == ["out-of-domain", "a-steps-file"]  # in evaluation order
    from evaluation.report.results_table import load_run
    row = load_run(str(run))
    assert {s: parts["steps"]["n_steps"] for s, parts in row["sets"].items()} == {"out-of-domain": 2, "a-steps-file": 2}
    with pytest.raises(EvaluationError, match="unknown key"):
        evaluate_run(recipe, {"test_sets": {"dev": str(DEV)}, "bogus": 1})


def test_cli_static(tiny_run, tmp_path, capsys):
    import evaluate
    out = tmp_path / "cli"
    rc = evaluate.main(["static", "--run", str(tiny_run), "--references", str(DEV), f"dev-again={DEV}",
                        "--limit", "2", "--max-new-tokens", "4", "--batch-size", "2", "--out", str(out)])
    assert rc == 0
    metrics = json.loads(capsys.readouterr().out)["metrics"]
    assert metrics[DEV.stem]["n_steps"] == metrics["dev-again"]["n_steps"] == 2  # a file's own name, or NAME=
    assert len(_read(out / DEV.stem / "predictions.jsonl")) == 2
    # a run without a saved recipe needs --recipe (a full recipe or the template fragment)
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "backbone").symlink_to(tiny_run / "backbone")
    assert evaluate.main(["static", "--run", str(bare), "--references", str(DEV), "--limit", "1",
                          "--out", str(out)]) == 2
    assert "--recipe" in capsys.readouterr().err
    rc = evaluate.main(["static", "--run", str(bare), "--references", str(DEV), "--limit", "1",
                        "--max-new-tokens", "2", "--recipe", str(REPO / "recipes/template/glpft.yaml"),
                        "--out", str(tmp_path / "bare_out")])
    assert rc == 0
    assert json.loads(capsys.readouterr().out)["mode"] == "single"


def test_local_member_lazy_load_and_release(tiny_run, dev_steps):
    role = LocalMember(str(RunDir(tiny_run).stage("summarizer").export), role="summarizer",
                       fit=PromptFit(None, None, True), decoding=greedy(3))
    assert role.model is None
    tpl = PromptTemplate(load_template("glpft"))
    traj = step_trajectory(dev_steps[0])
    traj["turns"] = [{"role": "planner", "thought": "t", "decision": "conclusion"}]
    first = role.complete([tpl.render_prompt("summarizer", traj, "summarizer")], n_header=2)
    role.release()
    assert role.model is None
    assert role.complete([tpl.render_prompt("summarizer", traj, "summarizer")], n_header=2) == first


def test_training_overlap_names_the_sources_a_test_set_shares(tmp_path):
    from evaluation.agent.exports import training_overlap, warn_training_overlap
    recipe = {"data": {"sources": [
        {"path": "data/toolbench/train_sample_chains.json"},
        {"path": "data/toolbench/native_answer_examples"},
        {"path": str(tmp_path / "mine.json")}]}}
    assert training_overlap(recipe, "data/toolbench/dev_conversations.json") == []
    assert training_overlap(recipe, REPO / "data/toolbench/train_sample_chains.json") == [
        "data.sources[0]: data/toolbench/train_sample_chains.json"]
    # a file inside a source folder, and a folder holding a source file
    assert training_overlap(recipe, "data/toolbench/native_answer_examples/G1_answer") == [
        "data.sources[1]: data/toolbench/native_answer_examples"]
    assert training_overlap(recipe, "data/toolbench") == [
        "data.sources[0]: data/toolbench/train_sample_chains.json",
        "data.sources[1]: data/toolbench/native_answer_examples"]
    said = []
    assert warn_training_overlap(recipe, tmp_path / "mine.json", said.append)
    assert len(said) == 1 and "not held out" in said[0]
    assert training_overlap({}, "data/toolbench") == []
