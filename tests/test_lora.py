"""Per-role LoRA stages (recipes/adapter/lora.yaml): stage 1 fine-tunes the backbone, stage 2 trains
one adapter per role on its frozen weights. Only adapter parameters train; each stage exports its
adapter (PEFT) naming its base and, when asked, the merged model, both loadable with plain
transformers / peft calls; a team of one base and three adapters predicts what three merged
exports predict; a killed LoRA stage resumes exactly; DDP on two CPU processes gives one
process's losses."""
import csv
import shutil
import sys

import pytest
import torch
from peft import AutoPeftModelForCausalLM, PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from conftest import ABLATIONS, QUICKSTART, RECIPES, REPO, STRATEGIES, kill_training_at
from core.recipe import RecipeError, load_recipe
from core.run_dir import RunDir
from pipeline.stage_runner import run_recipe

LORA = RECIPES / "adapter" / "lora.yaml"
ROLES = ("planner", "caller", "summarizer")
# LoRA on the tiny random-init backbone needs a far larger lr than the quickstart's stage 2 to move
# the adapters visibly in one epoch.
ARGS = ["data.max_length=256", "data.micro_batch_size=4", "tokenizer.train_bpe.vocab_size=600",
        "logger.progress_bar=false", "logger.wandb.enabled=false", "evaluate.enabled=false",
        "checkpoint.every_n_train_steps=1", "checkpoint.merge_adapter=true",
        "stages.backbone.trainer.max_epochs=2",
        *[f"stages.{r}.{k}" for r in ROLES for k in ("trainer.max_epochs=1", "optimizer.lr=1.0e-2")]]


def _lora_recipe(run_dir, *extra):
    return load_recipe([QUICKSTART, LORA], ARGS + list(extra) + [f"run.dir={run_dir}"])


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("lora") / "run"
    recipe = _lora_recipe(run_dir)
    run_recipe(recipe)
    return recipe, RunDir(run_dir)


def _losses(sdir):
    with open(sdir.csv_log, newline="") as fh:
        return [(int(r["step"]), float(r["train/loss"])) for r in csv.DictReader(fh) if r.get("train/loss")]


def _ids(n=24, seed=0):
    return torch.randint(3, 500, (2, n), generator=torch.Generator().manual_seed(seed))


def test_only_adapter_parameters_train(lora_run):
    _, run = lora_run
    base = load_file(run.stage("backbone").export / "model.safetensors")
    ckpt = torch.load(run.stage("planner").last_checkpoint, map_location="cpu", weights_only=False)
    state = {k.removeprefix("model.base_model.model."): v for k, v in ckpt["state_dict"].items()}
    adapter = {k: v for k, v in state.items() if "lora_" in k}
    frozen = {k.replace(".base_layer", ""): v for k, v in state.items() if "lora_" not in k}
    assert set(frozen) == set(base)
    assert all(torch.equal(frozen[k], base[k]) for k in base)  # the base is untouched
    lora_b = [v for k, v in adapter.items() if "lora_B" in k]
    assert lora_b and all(v.abs().max() > 0 for v in lora_b)  # B starts at zero: every adapter trained
    # the optimizer holds state for the adapter's parameters only
    assert len(ckpt["optimizer_states"][0]["state"]) == len(adapter)


def test_adapter_export_names_its_base_and_merged_export_equals_base_plus_adapter(lora_run):
    _, run = lora_run
    sdir = run.stage("caller")
    peft_model = AutoPeftModelForCausalLM.from_pretrained(sdir.adapter).eval()  # base from adapter_config.json
    assert peft_model.peft_config["default"].base_model_name_or_path == str(run.stage("backbone").export.resolve())
    merged = AutoModelForCausalLM.from_pretrained(sdir.export).eval()
    with torch.no_grad():
        a, b = peft_model(_ids()).logits, merged(_ids()).logits
        plain = AutoModelForCausalLM.from_pretrained(run.stage("backbone").export).eval()(_ids()).logits
    assert torch.allclose(a, b, atol=1e-5, rtol=0)
    assert (a - plain).abs().max() > 1e-2  # the adapter changes what the base predicts


def test_team_of_one_base_and_three_adapters_predicts_as_three_merged_exports(lora_run):
    from evaluation.agent.exports import find_exports
    from evaluation.agent.members import Decoding, PromptFit
    from evaluation.agent.team import build_team
    from evaluation.steps.extract import load_steps
    from evaluation.steps.teacher_forced import step_trajectory
    from prompting.prompt_template import PromptTemplate
    recipe, run = lora_run
    exports = find_exports(run.path, recipe)
    assert {r: exports[r] for r in ROLES} == {r: str(run.stage(r).adapter) for r in ROLES}
    template = PromptTemplate(recipe["template"])
    kwargs = dict(fit=PromptFit.of_recipe(recipe), device="cpu", dtype="float32",
                  decoding=Decoding({r: 12 for r in ROLES}, 4, False, 1.0, 1.0, 0))
    shared = build_team(template, "alpha_umi", exports, **kwargs)
    merged = build_team(template, "alpha_umi", {r: str(run.stage(r).export) for r in ROLES}, **kwargs)
    trajs = [step_trajectory(s) for s in load_steps(REPO / "data/toolbench/memorize_conversations.json")]
    decided = lambda d: [{**t, "turns": t["turns"] + [{"role": "planner", "thought": "ok", "decision": d}]}  # noqa: E731
                         for t in trajs]
    for team in (shared, merged):
        team.outputs = ([p.planner.raw for p in team.plan(trajs)], [c.raw for c in team.call(decided("call"))],
                        [raw for _, raw in team.conclude(decided("conclusion"))])
    assert shared.outputs == merged.outputs
    # one base in memory: the three members share one model, whose adapters differ
    models = {id(m.model) for m in shared.members.values()}
    assert len(models) == 1 and len({id(m.model) for m in merged.members.values()}) == 3
    model = shared.planner.model
    logits = []
    with torch.no_grad():
        for role in ROLES:
            model.set_adapter(role)
            logits.append(model(_ids()).logits)
    assert (logits[0] - logits[1]).abs().max() > 1e-2 and (logits[1] - logits[2]).abs().max() > 1e-2


def test_killed_lora_stage_resumes_exactly(lora_run, tmp_path):
    _, ref = lora_run
    run_dir = tmp_path / "killed"
    shutil.copytree(ref.path, run_dir, ignore=shutil.ignore_patterns("planner", "caller", "summarizer", "eval"))
    killed = RunDir(run_dir).stage("planner")
    cmd = [sys.executable, "train.py", str(QUICKSTART), str(LORA), *ARGS, f"run.dir={run_dir}", "--stage", "planner",
           f"data.cache_dir={ref.path / 'cache'}"]  # the run's recipe names its cache under run.dir
    kill_training_at(cmd, killed.last_checkpoint, lambda step: step >= 2, 240)
    assert not killed.is_done()
    import subprocess
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=400)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    assert "[planner] resuming from" in out.stdout
    a = load_file(ref.stage("planner").adapter / "adapter_model.safetensors")
    b = load_file(killed.adapter / "adapter_model.safetensors")
    assert set(a) == set(b) and all(torch.allclose(a[k], b[k], atol=1e-6, rtol=0) for k in a)
    assert [s for s, _ in _losses(killed)] == [s for s, _ in _losses(ref.stage("planner"))]
    for (_, x), (_, y) in zip(_losses(killed), _losses(ref.stage("planner"))):
        assert x == pytest.approx(y, abs=1e-5)


def _start_planner_stage(ref, run_dir, *extra, **env):
    """train.py in a subprocess: the planner's adapter on the fixture's backbone export (the other
    stages off, no dropout), with `extra` recipe arguments."""
    import subprocess
    from test_ddp_cpu import _env
    base = str(ref.stage("backbone").export)
    args = [str(QUICKSTART), str(LORA), *ARGS, "stages.backbone.enabled=false", "stages.caller.enabled=false",
            "stages.summarizer.enabled=false", f"stages.planner.init_from={base}", f"tokenizer.from_pretrained={base}",
            "checkpoint.every_n_train_steps=1000", "model.adapter.lora_dropout=0.0", *extra, f"run.dir={run_dir}"]
    return subprocess.Popen([sys.executable, "train.py", *args], cwd=REPO, env=_env(**env),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_lora_stage_under_ddp_gives_the_single_process_losses(lora_run, tmp_path):
    """Planner adapters on the fixture's backbone export: 2 gloo processes x 1 micro-batch of 2
    against 1 process x 2 micro-batches of 2 (no dropout: each process draws its own masks)."""
    from test_ddp_cpu import _finish
    _, ref = lora_run
    common = ["data.micro_batch_size=2", "checkpoint.merge_adapter=false"]
    one, two = tmp_path / "one", tmp_path / "two"
    procs = [_start_planner_stage(ref, one, *common, "trainer.accumulate_grad_batches=2"),
             _start_planner_stage(ref, two, *common, str(STRATEGIES / "ddp.yaml"), "trainer.devices=2",
                                  "strategy.process_group_backend=gloo")]
    for p in procs:
        _finish(p)
    a, b = _losses(RunDir(one).stage("planner")), _losses(RunDir(two).stage("planner"))
    assert len(a) == len(b) > 3 and all(sa == sb and abs(la - lb) <= 1e-4 for (sa, la), (sb, lb) in zip(a, b))
    wa, wb = (load_file(RunDir(d).stage("planner").adapter / "adapter_model.safetensors") for d in (one, two))
    assert set(wa) == set(wb) and max((wa[k] - wb[k]).abs().max().item() for k in wa) < 1e-4


def test_adapter_recipes_validate_and_refuse_a_random_init_base():
    load_recipe([RECIPES / "llama2_7b_toolbench.yaml", RECIPES / "adapter" / "qlora.yaml"])
    r = load_recipe([QUICKSTART, ABLATIONS / "alpha_umi_lora.yaml"])
    assert r["stages"]["backbone"]["model"]["adapter"] is None  # stage 1: full fine-tuning
    assert r["model"]["adapter"]["_target_"] == "peft.LoraConfig"
    with pytest.raises(RecipeError, match=r"model.adapter.*random init.*stages planner, caller, summarizer"):
        load_recipe([QUICKSTART, ABLATIONS / "multi_llm_one_stage.yaml", LORA])
    with pytest.raises(RecipeError, match="unknown key 'model.adapter.rank'"):
        load_recipe([QUICKSTART, LORA], ["model.adapter.rank=4"])


@pytest.mark.slow
def test_lora_stage_composes_with_deepspeed_zero3_on_cpu(lora_run, tmp_path):
    """ZeRO-3 (2 CPU ranks, every parameter partitioned) builds the adapter under zero.Init: it must
    start as the identity (step 0's loss is the single process's), train to nearly the same curve
    (A is drawn from another RNG stream, so not to the digit) and export adapter and merged model."""
    from test_ddp_cpu import _finish
    _, ref = lora_run
    common = ["data.micro_batch_size=1", "stages.planner.optimizer.lr=1.0e-3"]
    zero3 = [str(STRATEGIES / "deepspeed_zero3.yaml"), "strategy._target_=pipeline.strategy_checks.CPUDeepSpeedStrategy",
             "strategy.config.zero_optimization.stage3_param_persistence_threshold=0",
             "strategy.config.bf16.enabled=false", "trainer.devices=2"]
    one, ds = tmp_path / "one", tmp_path / "zero3"
    for p in [_start_planner_stage(ref, one, *common, "trainer.accumulate_grad_batches=2", DS_ACCELERATOR="cpu"),
              _start_planner_stage(ref, ds, *common, *zero3, DS_ACCELERATOR="cpu")]:
        _finish(p, timeout=600)
    a, b = _losses(RunDir(one).stage("planner")), _losses(RunDir(ds).stage("planner"))
    assert len(a) == len(b) > 3 and a[0][1] == pytest.approx(b[0][1], abs=1e-4)
    assert max(abs(la - lb) for (_, la), (_, lb) in zip(a, b)) < 5e-2
    sdir = RunDir(ds).stage("planner")
    with torch.no_grad():
        x = AutoPeftModelForCausalLM.from_pretrained(sdir.adapter).eval()(_ids()).logits
        y = AutoModelForCausalLM.from_pretrained(sdir.export).eval()(_ids()).logits
    assert torch.allclose(x, y, atol=1e-5, rtol=0)
