"""Multi-process training on CPU (gloo): the stage graph under DDP gives the loss curve of a single
process with twice the accumulation, and the DeepSpeed ZeRO-3 code path (DS_ACCELERATOR=cpu) gives
it too, hands its consolidated export to the next stage and resumes from a sharded checkpoint.

With world size 2 each rank takes chunk[rank::2] of the same shuffled step chunk (StepBatchSampler),
so 1 process x 2 micro-batches and 2 processes x 1 micro-batch see the same examples per optimizer
step, and the loss is normalised by the supervised tokens of the whole step in both.
"""
import csv
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from conftest import QUICKSTART, REPO, STRATEGIES
from core.run_dir import RunDir

SHRINK = ["data.max_length=256", "logger.wandb.enabled=false", "logger.progress_bar=false",
          "stages.caller.enabled=false", "stages.summarizer.enabled=false",
          "stages.backbone.trainer.max_epochs=1", "stages.planner.trainer.max_epochs=1"]


def _env(**extra):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "WANDB_MODE": "disabled", "TOKENIZERS_PARALLELISM": "false",
           "OMP_NUM_THREADS": "1", **extra}
    env.pop("WORLD_SIZE", None), env.pop("LOCAL_RANK", None)  # not launched from inside a distributed run
    return env


def _start(script, run_dir, *args, env=None):
    files = [a for a in args if a.endswith(".yaml")]  # recipe files, then overrides (later ones win)
    cmd = [sys.executable, str(script), str(QUICKSTART), *files, *SHRINK,
           *[a for a in args if a not in files], f"run.dir={run_dir}"]
    return subprocess.Popen(cmd, cwd=REPO, env=env or _env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def _finish(proc, timeout=1800):  # a bound against hangs, generous for a loaded 2-core machine
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out[-5000:]
    return out


def _losses(run_dir, stage):
    rows = csv.DictReader(open(RunDir(run_dir).stage(stage).csv_log))
    return [(int(r["step"]), float(r["train/loss"])) for r in rows if r.get("train/loss")]


def _lrs(run_dir, stage):
    rows = csv.DictReader(open(RunDir(run_dir).stage(stage).csv_log))
    return [float(r["train/lr"]) for r in rows if r.get("train/lr")]


def _export(run_dir, stage):
    return load_file(RunDir(run_dir).stage(stage).export / "model.safetensors")


def _assert_same_curves(a_dir, b_dir, stages=("backbone", "planner"), tol=1e-4):
    lr = 0.0
    for stage in stages:
        a, b = _losses(a_dir, stage), _losses(b_dir, stage)
        assert len(a) == len(b) > 3, (stage, a, b)
        for (sa, la), (sb, lb) in zip(a, b):
            assert sa == sb and abs(la - lb) <= tol, (stage, a, b)
        wa, wb = _export(a_dir, stage), _export(b_dir, stage)
        assert set(wa) == set(wb)
        # Two processes sum gradients in another order than one, so the runs differ by float rounding.
        # Adam scales each coordinate's update to about lr whatever the gradient's size, so a coordinate
        # whose gradient is near zero can move by a fraction of lr on rounding alone, and a later stage
        # inherits the difference: the worst coordinate must stay under a tenth of one step at the
        # largest lr so far, the mean at rounding level.
        lr = max(lr, *_lrs(a_dir, stage))
        diffs = [(wa[k] - wb[k]).abs() for k in wa]
        worst = max(d.max().item() for d in diffs)
        assert worst < 0.1 * lr, (stage, worst, lr)
        assert sum(d.sum().item() for d in diffs) / sum(d.numel() for d in diffs) < 1e-6, stage


def test_ddp_two_processes_match_one_process_with_twice_the_accumulation(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    p1 = _start("train.py", one, "data.micro_batch_size=2", "trainer.accumulate_grad_batches=2")
    p2 = _start("train.py", two, str(STRATEGIES / "ddp.yaml"), "trainer.devices=2",
                "strategy.process_group_backend=gloo", "data.micro_batch_size=2", "trainer.accumulate_grad_batches=1")
    _finish(p1), _finish(p2)
    _assert_same_curves(one, two)
    for stage in ("backbone", "planner"):
        done = RunDir(two).stage(stage).read_done()
        assert done["global_step"] == RunDir(one).stage(stage).read_done()["global_step"]
    # only rank 0 wrote logs and exports (one metrics file, no leftovers of a second writer)
    assert not list(two.glob("*/hf.tmp")) and len(RunDir(two).logged_stages()) == 2
    # offline consolidation of a stage's Lightning checkpoint file into an HF directory
    from pipeline.sharded_export import main as consolidate
    assert consolidate([str(QUICKSTART), f"run.dir={two}", "--stage", "planner", "--out", str(tmp_path / "c")]) == 0
    assert set(load_file(tmp_path / "c" / "model.safetensors")) == set(_export(two, "planner"))


# ----- DeepSpeed ZeRO-3 on CPU ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def base_checkpoint(tmp_path_factory, chains_trajectories):
    """A fixed tiny Llama and the quickstart's tokenizer, so runs under different strategies start
    from equal weights (ZeRO-3 initialises a model built from a config in another order)."""
    from transformers import LlamaConfig, LlamaForCausalLM
    from conftest import load_template
    from prompting.bpe_tokenizer import train_bpe_tokenizer
    from prompting.prompt_template import PromptTemplate
    tpl = PromptTemplate(load_template())
    texts = [s.text for t in chains_trajectories for s in tpl.render_history("backbone", t) if s.text]
    bpe_tokenizer = train_bpe_tokenizer(texts, vocab_size=2048, min_frequency=2,
                                        out_dir=tmp_path_factory.mktemp("tok") / "bpe")
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(bpe_tokenizer), hidden_size=64, intermediate_size=176,
                                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                         max_position_embeddings=2048, tie_word_embeddings=False))
    path = tmp_path_factory.mktemp("base") / "tiny"
    model.save_pretrained(path)
    bpe_tokenizer.save_pretrained(path)
    return path


@pytest.mark.slow
def test_deepspeed_zero3_on_cpu_matches_single_process_and_resumes(tmp_path, base_checkpoint):
    """ZeRO-3 with every parameter partitioned (persistence threshold 0), fp32 so the runs differ
    only by summation order: 2 ranks x 1 micro-batch x accumulate 2 vs 1 process x 2 micro-batches x accumulate 2.
    Covers model construction under zero.Init (transformers' ZeRO-3 from_pretrained, the model's
    classes imported before it), the lm_head
    gather in the sparse loss, accumulation over micro-batches inside one engine forward, checkpoint
    consolidation into the export the planner starts from, and resume from the last (sharded) checkpoint directory."""
    base = [f"model.init_from={base_checkpoint}", "model.config=null", f"tokenizer.from_pretrained={base_checkpoint}",
            "trainer.accumulate_grad_batches=2"]
    zero3 = [str(STRATEGIES / "deepspeed_zero3.yaml"),
             "strategy._target_=pipeline.strategy_checks.CPUDeepSpeedStrategy",
             "strategy.config.zero_optimization.stage3_param_persistence_threshold=0",
             "strategy.config.bf16.enabled=false", "trainer.devices=2", "data.micro_batch_size=1",
             "model.gradient_checkpointing=true"]  # as the paper recipes; recomputation under ZeRO-3
    ref, ds = tmp_path / "ref", tmp_path / "zero3"
    env = _env(DS_ACCELERATOR="cpu")
    p_ref = _start("train.py", ref, *base, "data.micro_batch_size=2")
    p_ds = _start("train.py", ds, *base, *zero3, env=env)
    _finish(p_ref), _finish(p_ds)
    # ZeRO-3 reduce-scatters flat partitions, another summation order than one process: after a dozen
    # Adam steps losses near 7 still agree to 4 significant digits (measured 2.6e-4 at most)
    _assert_same_curves(ref, ds, tol=1e-3)
    last = RunDir(ds).stage("planner").last_checkpoint
    assert (last / "latest").is_file(), "ZeRO-3 checkpoints are directories"

    # resume: the planner's final sharded checkpoint, one more epoch
    step_before = RunDir(ds).stage("planner").read_done()["global_step"]
    RunDir(ds).stage("planner").done_file.unlink()
    out = _finish(_start("train.py", ds, *base, *zero3, "stages.planner.trainer.max_epochs=2", env=env))
    assert f"resuming from {last}" in out
    assert "[backbone] already finished" in out
    step_after = RunDir(ds).stage("planner").read_done()["global_step"]
    assert step_after == 2 * step_before
    steps = [s for s, _ in _losses(ds, "planner")]
    assert steps == sorted(steps) and steps[-1] == step_after - 1
    # the sharded checkpoint consolidated offline (one process, no DeepSpeed engine) equals the export
    from pipeline.sharded_export import main as consolidate
    assert consolidate([str(QUICKSTART), f"run.dir={ds}", *base, "--stage", "planner",
                        "--out", str(tmp_path / "c")]) == 0
    a, b = _export(ds, "planner"), load_file(tmp_path / "c" / "model.safetensors")
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
