import json
import subprocess
import sys
from pathlib import Path

from evaluation.report.results_table import load_runs, log_wandb, results_table
from core.run_dir import RunDir

ROOT = Path(__file__).parents[1]
A_IN = {"plan_acc": 81.2345, "act_em": 70.0, "hallu": 1.5, "arg_f1": 65.555, "rouge_l": 40.0}
A_OOD = {"plan_acc": 75.0, "act_em": 60.126, "hallu": 2.0, "arg_f1": 55.0, "rouge_l": None}
B_IN = {"plan_acc": 50.0, "act_em": 40.0, "hallu": 10.0, "arg_f1": 30.0}


def _files(tmp_path):
    run = tmp_path / "run_a"
    evald = RunDir(run).eval()
    evald.path.mkdir(parents=True)
    evald.metrics_file().write_text(json.dumps(A_IN))
    evald.metrics_file("_ood").write_text(json.dumps(A_OOD))
    b = tmp_path / "b_metrics.json"
    b.write_text(json.dumps(B_IN))
    return run, b


def test_table_in_and_out_of_domain(tmp_path):
    run, b = _files(tmp_path)
    table = results_table(load_runs([str(run), f"baseline={b}"]))
    assert table.splitlines() == [
        "| Run | Plan ACC (ID) | Act. EM (ID) | Hallu. (ID) | Arg. F1 (ID) | Rouge-L (ID) "
        "| Plan ACC (OOD) | Act. EM (OOD) | Hallu. (OOD) | Arg. F1 (OOD) | Rouge-L (OOD) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        "| run_a | 81.23 | 70.00 | 1.50 | 65.56 | 40.00 | 75.00 | 60.13 | 2.00 | 55.00 | – |",
        "| baseline | 50.00 | 40.00 | 10.00 | 30.00 | – | – | – | – | – | – |",
    ]


def test_table_cli_in_domain_only(tmp_path):
    run, b = _files(tmp_path)
    out = tmp_path / "table.md"
    proc = subprocess.run([sys.executable, "evaluate.py", "table", str(RunDir(run).eval().metrics_file()),
                           str(b), "--names", "ours", "base", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert out.read_text() == proc.stdout == (
        "| Run | Plan ACC | Act. EM | Hallu. | Arg. F1 | Rouge-L |\n"
        "|---|---:|---:|---:|---:|---:|\n"
        "| ours | 81.23 | 70.00 | 1.50 | 65.56 | 40.00 |\n"
        "| base | 50.00 | 40.00 | 10.00 | 30.00 | – |\n")


def test_wandb_offline(tmp_path, monkeypatch):
    run, b = _files(tmp_path)
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    log_wandb(load_runs([str(run), str(b)]), project="test")
    assert list((tmp_path / "wandb").glob("offline-run-*"))


def test_episode_columns_sit_next_to_the_step_metrics(tmp_path):
    run, b = _files(tmp_path)
    (run / "eval/episodes/toolalpaca_simulated").mkdir(parents=True)
    (run / "eval/episodes/toolalpaca_simulated/metrics.json").write_text(
        json.dumps({"proc": 61.0, "ans": 55.5, "both": 50.0, "episodes": 100}))
    (run / "eval/episodes/toolbench_pass_rate").mkdir(parents=True)
    (run / "eval/episodes/toolbench_pass_rate/metrics.json").write_text(json.dumps({"pass_rate": 42.0}))
    lines = results_table(load_runs([str(run), str(b)], ["ours", "base"])).splitlines()
    assert lines[0].endswith("| Rouge-L (OOD) | Proc. | Ans. | Proc.&Ans. | Pass rate |")
    assert lines[2].endswith("| 55.00 | – | 61.00 | 55.50 | 50.00 | 42.00 |")
    assert lines[3].endswith("| – | – | – | – | – |")
    # a run with episode metrics only
    only = tmp_path / "only"
    (only / "eval/episodes/x").mkdir(parents=True)
    (only / "eval/episodes/x/metrics.json").write_text(json.dumps({"proc": 10.0}))
    assert results_table(load_runs([str(only)])).splitlines()[2] == "| only | – | – | – | – | – | 10.00 |"
