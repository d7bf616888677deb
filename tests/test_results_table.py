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
    evald.write_metrics(A_IN, "held-in", started="t0", finished="t1")
    evald.write_metrics(A_OOD, "out-of-domain", started="t1", finished="t2")
    b = tmp_path / "b_metrics.json"
    b.write_text(json.dumps(B_IN))
    return run, b


def test_one_line_per_run_and_test_set(tmp_path):
    run, b = _files(tmp_path)
    table = results_table(load_runs([str(run), f"baseline={b}"]))
    assert table.splitlines() == [
        "| Run | Test set | Plan ACC | Act. EM | Hallu. | Arg. F1 | Rouge-L |",
        "|---|---:|---:|---:|---:|---:|---:|",
        "| run_a | held-in | 81.23 | 70.00 | 1.50 | 65.56 | 40.00 |",
        "| run_a | out-of-domain | 75.00 | 60.13 | 2.00 | 55.00 | – |",
        "| baseline | b_metrics | 50.00 | 40.00 | 10.00 | 30.00 | – |",
    ]


def test_table_cli_names_a_metrics_file_after_its_run_and_set(tmp_path):
    run, b = _files(tmp_path)
    out = tmp_path / "table.md"
    proc = subprocess.run([sys.executable, "evaluate.py", "table", str(RunDir(run).eval().metrics_file("held-in")),
                           str(b), "--names", "ours", "base", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert out.read_text() == proc.stdout == (
        "| Run | Test set | Plan ACC | Act. EM | Hallu. | Arg. F1 | Rouge-L |\n"
        "|---|---:|---:|---:|---:|---:|---:|\n"
        "| ours | held-in | 81.23 | 70.00 | 1.50 | 65.56 | 40.00 |\n"
        "| base | b_metrics | 50.00 | 40.00 | 10.00 | 30.00 | – |\n")
    proc = subprocess.run([sys.executable, "evaluate.py", "table", str(RunDir(run).eval().metrics_file("held-in"))],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.stdout.splitlines()[2].startswith("| run_a | held-in |")  # named after the run


def test_wandb_offline(tmp_path, monkeypatch):
    run, b = _files(tmp_path)
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    log_wandb(load_runs([str(run), str(b)]), project="test")
    assert list((tmp_path / "wandb").glob("offline-run-*"))


def test_episode_columns_sit_next_to_the_step_metrics_of_their_test_set(tmp_path):
    run, b = _files(tmp_path)
    episodes = RunDir(run).eval().episodes("out-of-domain")
    episodes.mkdir(parents=True)
    (episodes / "metrics.json").write_text(json.dumps({"proc": 61.0, "ans": 55.5, "both": 50.0, "episodes": 100}))
    alone = RunDir(run).eval().episodes("toolbench_pass_rate")  # a test set with episodes only
    alone.mkdir(parents=True)
    (alone / "metrics.json").write_text(json.dumps({"pass_rate": 42.0}))
    lines = results_table(load_runs([str(run), str(b)], ["ours", "base"])).splitlines()
    assert lines[0].endswith("| Rouge-L | Proc. | Ans. | Proc.&Ans. | Pass rate |")
    by_set = {line.split("|")[2].strip(): line for line in lines[2:]}
    assert by_set["held-in"].endswith("| 40.00 | – | – | – | – |")
    assert by_set["out-of-domain"].endswith("| – | 61.00 | 55.50 | 50.00 | – |")
    assert by_set["toolbench_pass_rate"] == "| ours | toolbench_pass_rate | – | – | – | – | – | – | – | – | 42.00 |"
    assert lines[-1].startswith("| base | b_metrics |")
