"""Test sets are refused when empty or when an id repeats (naming both records); missing
predictions are warned with their count; the weak messages name the thing and what to do."""
import json

import evaluate
import train
from conftest import QUICKSTART
from core.recipe import load_recipe
from core.run_dir import RunDir
from core.recipe import to_yaml
from trajectories.sources import load_trajectories

STEP = {"plan": "call", "action": "get_weather", "action_input": "{}", "answer": None}


def _steps(tmp_path, ids):
    f = tmp_path / "steps.jsonl"
    f.write_text("".join(json.dumps({**STEP, "id": i}) + "\n" for i in ids))
    return f


def test_repeated_and_empty_test_sets_are_refused_and_missing_predictions_warned(tmp_path, capsys):
    refs = _steps(tmp_path, ["a", "b", "a"])
    preds = tmp_path / "preds.jsonl"
    preds.write_text(json.dumps({"id": "a", "plan": "call"}) + "\n")
    assert evaluate.main(["score", "--references", str(refs), "--predictions", str(preds)]) == 2
    assert f"{refs}: step id 'a' appears twice (records 0 and 2)" in capsys.readouterr().err
    empty = tmp_path / "empty.json"
    empty.write_text("[]")
    assert evaluate.main(["score", "--references", str(empty), "--predictions", str(preds)]) == 2
    assert f"{empty}: the test set is empty" in capsys.readouterr().err
    refs = _steps(tmp_path, ["a", "b", "c"])
    assert evaluate.main(["score", "--references", str(refs), "--predictions", str(preds)]) == 0
    assert f"no prediction for 2 of the 3 steps of {refs}" in capsys.readouterr().err


def test_unknown_stage_names_the_known_ones(capsys):
    assert train.main([str(QUICKSTART), "stages.plnner.trainer.max_epochs=2", "--validate"]) == 2
    err = capsys.readouterr().err
    assert "unknown stage 'plnner' (from command line); the recipe's stages are backbone, caller, planner, summarizer" in err
    assert "missing required key" not in err


def test_canonical_folder_of_jsonl_files_loads(tmp_path):
    folder = tmp_path / "canon"
    folder.mkdir()
    traj = {"id": "t0", "source": "test", "instruction": "weather?",
            "tools": [{"name": "get_weather", "description": "weather", "parameters": {}}],
            "turns": [{"role": "user", "content": "weather?"},
                      {"role": "planner", "thought": "I know it.", "decision": "conclusion"},
                      {"role": "summarizer", "answer": "Sunny."}]}
    (folder / "part.jsonl").write_text(json.dumps(traj) + "\n")
    assert [t["id"] for t in load_trajectories(folder, format="canonical").trajectories] == ["t0"]


def test_a_run_folder_moved_with_another_cache_dir_is_not_refused(tmp_path):
    from pipeline.stage_runner import refuse_drift
    run_dir = tmp_path / "run"
    run = RunDir(run_dir)
    run_dir.mkdir()
    run.save_recipe(to_yaml(load_recipe([QUICKSTART], [f"run.dir={run_dir}", "data.cache_dir=/old/cache"])))
    run.stage("backbone").path.mkdir()
    run.stage("backbone").write_done({"stage": "backbone"})
    refuse_drift(load_recipe([QUICKSTART], [f"run.dir={run_dir}", f"data.cache_dir={tmp_path}/c"]), run,
                 ["backbone", "planner", "caller", "summarizer"])
