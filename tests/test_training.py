"""The stage graph end to end on CPU: exports, logs, skip on rerun, loss normalisation (a killed
stage's resume: test_resume.py)."""
import csv
import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

from conftest import QUICKSTART
from core.run_dir import RunDir
from core.recipe import load_recipe
from pipeline.stage_runner import run_recipe

SMALL = ["data.max_length=768", "data.val_fraction=0.2", "tokenizer.train_bpe.vocab_size=1000",
         "logger.progress_bar=false", "evaluate.limit=6", "evaluate.max_new_tokens=16"]


def small_recipe(run_dir, *extra):
    epochs = [f"stages.{s}.trainer.max_epochs=1" for s in ("backbone", "planner", "caller", "summarizer")]
    return load_recipe([QUICKSTART], SMALL + epochs + [f"run.dir={run_dir}", *extra])


@pytest.fixture(scope="module")
def quickstart_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run") / "quickstart"
    recipe = small_recipe(run_dir, "stages.backbone.trainer.max_epochs=2")
    ran = run_recipe(recipe)
    return recipe, run_dir, ran


def test_all_four_stages_leave_loadable_checkpoints(quickstart_run):
    _, run_dir, ran = quickstart_run
    assert ran == ["backbone", "planner", "caller", "summarizer"]
    for stage in ran:
        assert RunDir(run_dir).stage(stage).has_export()
        assert RunDir(run_dir).stage(stage).is_done()
    tok = AutoTokenizer.from_pretrained(RunDir(run_dir).stage("caller").export)
    model = AutoModelForCausalLM.from_pretrained(RunDir(run_dir).stage("caller").export)
    ids = tok("Caller: Action:", return_tensors="pt")["input_ids"]
    out = model.generate(ids, max_new_tokens=5, do_sample=False, pad_token_id=tok.pad_token_id)
    assert out.shape[1] > ids.shape[1]
    assert RunDir(run_dir).recipe_file.is_file()


def test_exports_carry_what_a_server_needs(quickstart_run):
    from transformers import GenerationConfig
    _, run_dir, ran = quickstart_run
    for stage in ran:
        tok = AutoTokenizer.from_pretrained(RunDir(run_dir).stage(stage).export)
        gen = GenerationConfig.from_pretrained(RunDir(run_dir).stage(stage).export)
        assert tok.model_max_length == 768  # data.max_length
        assert gen.eos_token_id == tok.eos_token_id and gen.pad_token_id == tok.pad_token_id
        assert tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False,
                                       add_generation_prompt=True) == "<s>User: hi\nAssistant: "


def test_quickstart_checkpoints_go_through_static_evaluation(quickstart_run):
    _, run_dir, _ = quickstart_run
    metrics = json.loads(RunDir(run_dir).eval().metrics_file("out-of-domain").read_text())
    assert metrics["n_steps"] == 6 and metrics["n_missing"] == 0
    for key in ("plan_acc", "act_em", "hallu", "arg_f1", "rouge_l"):
        assert key in metrics
    preds = RunDir(run_dir).eval().predictions_file("out-of-domain").read_text().splitlines()
    assert RunDir(run_dir).eval().test_sets() == ["held-in", "out-of-domain"]  # the recipe's names
    assert len(preds) == 6 and all(json.loads(p)["id"].startswith("dev_conversations-") for p in preds)


def test_logs_have_per_span_losses_and_wandb_runs(quickstart_run):
    _, run_dir, _ = quickstart_run
    rows = list(csv.DictReader(open(RunDir(run_dir).stage("backbone").csv_log)))
    for key in ("train/loss", "train/loss_thought", "train/loss_action", "train/loss_answer", "train/lr",
                "train/grad_norm", "train/examples", "train/supervised_tokens",
                "perf/nonpad_tokens_per_sec_per_device", "perf/examples_per_sec_per_device", "val/loss"):
        assert any(r.get(key) for r in rows), key
    losses = [float(r["train/loss"]) for r in rows if r.get("train/loss")]
    assert losses[-1] < losses[0]
    for stage in ("backbone", "planner", "caller", "summarizer"):
        assert list(RunDir(run_dir).stage(stage).wandb.glob("offline-run-*")), stage


def test_rerun_skips_finished_stages(quickstart_run):
    recipe, _, _ = quickstart_run
    assert run_recipe(recipe) == []


def test_stage_two_starts_from_the_stage_one_weights(tmp_path, quickstart_run):
    """With a zero learning rate the planner's export must equal the backbone's."""
    recipe, run_dir, _ = quickstart_run
    r = small_recipe(run_dir, "stages.backbone.trainer.max_epochs=2", "stages.planner.optimizer.lr=0.0", "stages.planner.trainer.max_steps=1")
    RunDir(run_dir).stage("planner").done_file.rename(tmp_path / "planner_done.json")
    try:
        import shutil
        shutil.rmtree(run_dir / "planner")
        run_recipe(r, only="planner")
        a = LlamaForCausalLM.from_pretrained(RunDir(run_dir).stage("backbone").export).state_dict()
        b = LlamaForCausalLM.from_pretrained(RunDir(run_dir).stage("planner").export).state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a)
        c = LlamaForCausalLM.from_pretrained(RunDir(run_dir).stage("caller").export).state_dict()
        assert not all(torch.equal(a[k], c[k]) for k in a)  # a trained stage moved away from it
    finally:
        pass


def _base_checkpoint(tmp_path, tokenizer):
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
                                         max_position_embeddings=1024))
    path = tmp_path / "base"
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_loss_is_normalised_over_the_whole_optimizer_step(tmp_path, bpe_tokenizer):
    """1 micro-batch of 4 and 4 micro-batches of 1 give the same update, equal to one SGD step on
    (sum of supervised token losses) / (supervised tokens in the step). Also loads a user checkpoint."""
    base = _base_checkpoint(tmp_path, bpe_tokenizer)
    common = [f"model.init_from={base}", "model.config=null", f"tokenizer.from_pretrained={base}",
              "data.layout=per_step", "data.max_length=256", "data.val_fraction=0.0",
              "data.group_by_length=false", "optimizer._target_=torch.optim.SGD", "optimizer.lr=1.0",
              "~optimizer.betas", "~optimizer.eps", "trainer.gradient_clip_val=null", "stages.backbone.optimizer.lr=1.0",
              "stages.backbone.trainer.max_steps=1", "logger.wandb.enabled=false", "logger.progress_bar=false",
              "evaluate.enabled=false"]
    stages = [f"stages.{s}.enabled=false" for s in ("planner", "caller", "summarizer")]
    exports = {}
    for micro, accum in ((4, 1), (1, 4)):
        run_dir = tmp_path / f"m{micro}a{accum}"
        over = common + stages + [
            f"run.dir={run_dir}", f"data.micro_batch_size={micro}", f"trainer.accumulate_grad_batches={accum}"]
        recipe = load_recipe([QUICKSTART], over)
        run_recipe(recipe)
        exports[(micro, accum)] = LlamaForCausalLM.from_pretrained(RunDir(run_dir).stage("backbone").export).state_dict()

    # The expected update, computed by hand from the same four examples.
    from core.batch_plan import BatchPlan
    from datamodules.optimizer_steps import StepBatchSampler, pad_batch
    from core.stage_config import stage_settings
    from pipeline.stage_setup import build_datamodule
    settings = stage_settings(recipe, "backbone")
    dm = build_datamodule(recipe, settings, AutoTokenizer.from_pretrained(base))
    dm.setup()
    ds = dm.splits["train"]
    first = next(iter(StepBatchSampler([1] * len(ds), BatchPlan(4, 1, 1), 0, recipe["run"]["seed"], False)))
    batch = pad_batch([ds[i] for i in first], dm.pad_id)
    model = LlamaForCausalLM.from_pretrained(base)
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    labels = batch["labels"][:, 1:]
    losses = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1),
                                               ignore_index=-100, reduction="sum")
    (losses / (labels != -100).sum()).backward()
    expected = {k: p.detach() - 1.0 * p.grad for k, p in model.named_parameters()}
    for k, want in expected.items():
        assert torch.allclose(exports[(4, 1)][k], want, atol=1e-5), k
        assert torch.allclose(exports[(1, 4)][k], want, atol=1e-5), k
    # A mean of per-micro-batch means would differ (the four examples have unequal target lengths).
    counts = (labels != -100).sum(1)
    assert len(set(counts.tolist())) > 1
