"""The summary train.py prints last, read back from a run directory."""
from conftest import QUICKSTART, REPO
from core.recipe import load_recipe
from core.run_dir import RunDir
from evaluation.steps.metrics import score
from evaluation.steps.extract import load_steps
from pipeline.run_summary import run_summary, stage_losses

STAGES = ["backbone", "planner", "caller", "summarizer"]


def write_log(path, losses_by_epoch, tokens=10):
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = ["epoch,step,train/loss,train/supervised_tokens,val/loss"]
    step = 0
    for epoch, losses in enumerate(losses_by_epoch):
        for loss in losses:
            rows.append(f"{epoch},{step},{loss},{tokens},")
            step += 1
        rows.append(f"{epoch},{step},,,9.0")  # a validation row: no train loss
    path.write_text("\n".join(rows) + "\n")


def test_epoch_means_not_single_steps(tmp_path):
    log = tmp_path / "metrics.csv"
    write_log(log, [[8.0, 6.0, 7.0], [5.0, 1.0], [3.0, 2.0, 9.0, 2.0]])
    assert stage_losses(log) == {"first": 7.0, "last": 4.0, "epochs": 3, "supervised_tokens": 90}
    assert stage_losses(tmp_path / "missing.csv")["first"] is None


def test_summary_lists_stages_losses_exports_metrics_and_wandb(tmp_path):
    run_dir = tmp_path / "run"
    recipe = load_recipe([QUICKSTART], [f"run.dir={run_dir}"])
    run = RunDir(run_dir)
    for i, name in enumerate(STAGES):
        write_log(run.stage(name).csv_log, [[4.0 + i, 2.0 + i], [1.0, 0.5]])
    run.stage("backbone").export.mkdir(parents=True)
    (run.stage("backbone").export / "config.json").write_text("{}")
    steps = load_steps(REPO / "data/toolbench/dev_conversations.json")
    gold = score(steps, {s["id"]: s for s in steps})
    half = score(steps, {s["id"]: ({"plan": None} if i % 2 else s) for i, s in enumerate(steps)})
    eval_dir = run.eval()
    eval_dir.write_metrics({**gold, "generation_hit_limit": {"planner": 3, "caller": 1}},
                           "out-of-domain", started="t0", finished="t1")
    eval_dir.write_metrics(half, "held-in", started="t0", finished="t1")
    eval_dir.write_metrics(half, "extra", started="t2", finished="t3")  # not in the recipe: after its sets

    text = run_summary(recipe, STAGES, ran=STAGES[1:])
    lines = text.splitlines()
    assert lines[1] == "stages run: planner, caller, summarizer; skipped (already finished): backbone"
    backbone = next(line for line in lines if line.strip().startswith("backbone"))
    assert "loss 3.000 -> 0.750 (epoch 1 -> 2 mean)" in backbone and "supervised tokens 40" in backbone
    assert str(run.stage("backbone").export) in backbone
    assert "export (none)" in next(line for line in lines if line.strip().startswith("planner"))
    rows = [line.split()[0] for line in lines if line.startswith("  ") and line.split()[1:2] == ["171"]]
    assert rows == ["held-in", "out-of-domain", "extra"]  # the recipe's order, then the others
    ood = next(line for line in lines if line.strip().startswith("out-of-domain "))
    assert ood.split()[1:7] == ["171", "100.00", "100.00", "0.00", "100.00", "100.00"]
    assert "121/35/15 -> 121/35/15/0" in ood and "(4 generations hit the length limit)" in ood
    assert "well formed, out-of-domain: planner 100%, caller 100%, summarizer 100%" in text
    assert "well formed, held-in: planner 50%" in text
    assert f"wandb sync {run_dir}/*/wandb/offline-run-*" in lines[-1]
    assert "episodes," not in text
    from core.atomic_files import write_json_atomic
    write_json_atomic(eval_dir.episode_metrics_file("held-in"),
                      {"proc": 62.5, "ans": 50.0, "both": 45.0, "episodes": 40})
    assert "  episodes, held-in: process 62.50  answer 50.00  both 45.00  (40 episodes)" in \
        run_summary(recipe, STAGES, ran=STAGES).splitlines()
    off = load_recipe([QUICKSTART],
                      [f"run.dir={run_dir}", "logger.wandb.enabled=false"])
    assert "wandb sync" not in run_summary(off, STAGES, ran=STAGES)
