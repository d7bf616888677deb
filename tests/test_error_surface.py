"""Bad input, as a hostile but fair user gives it: one or two lines naming the file / record / key,
exit code 2, no traceback (unless --debug), nothing left behind."""
import json
import time

import pytest

import train
from conftest import QUICKSTART, REPO
from core.errors import DataError, ProjectError, run_cli
from core.recipe import RecipeError, load_recipe
from core.stage_config import stage_settings
from pipeline.stage_setup import build_datamodule
from trajectories.sources import load_trajectories
from trajectories.trajectory import TrajectoryError

ONE_STAGE = ["stages.planner.enabled=false", "stages.caller.enabled=false", "stages.summarizer.enabled=false",
             "evaluate.enabled=false", "logger.progress_bar=false", "tokenizer.train_bpe.vocab_size=600",
             "data.max_length=768"]


def _canonical(i, answer="The weather is sunny."):
    return {"id": f"t{i}", "source": "test", "instruction": f"weather {i}?",
            "tools": [{"name": "get_weather", "description": "weather", "parameters": {}}],
            "turns": [{"role": "user", "content": f"weather {i}?"},
                      {"role": "planner", "thought": "I know it.", "decision": "conclusion"},
                      {"role": "summarizer", "answer": answer}]}


def _train(argv, capsys):
    rc = train.main([str(QUICKSTART), *argv])
    err = capsys.readouterr().err
    return rc, err.strip().splitlines()


def _error_lines(lines):
    return [line for line in lines if "train.py: error:" in line or line.startswith("  ")]


def test_recipe_error_is_one_line_exit_2_and_nothing_written(tmp_path, capsys):
    run_dir = tmp_path / "run"
    rc, lines = _train([f"run.dir={run_dir}", "trainer.max_epoch=3"], capsys)
    assert rc == 2
    assert len(_error_lines(lines)) <= 2 and "trainer.max_epoch" in "\n".join(lines)
    assert not any("Traceback" in line for line in lines)
    assert not run_dir.exists()
    with pytest.raises(RecipeError):  # --debug: the exception itself, with its traceback
        train.main([str(QUICKSTART), f"run.dir={run_dir}", "trainer.max_epoch=3", "--debug"])


def test_debug_env_variable_shows_the_traceback(monkeypatch):
    monkeypatch.setenv("ALPHA_UMI_DEBUG", "1")

    def boom(argv):
        raise DataError("bad")
    with pytest.raises(DataError):
        run_cli("x", boom, [])
    monkeypatch.delenv("ALPHA_UMI_DEBUG")
    assert run_cli("x", boom, []) == 2


def test_free_form_model_config_key_is_refused_before_anything_is_written(tmp_path, capsys):
    run_dir = tmp_path / "run"
    rc, lines = _train([f"run.dir={run_dir}", "model.config.api_key=sk-not-a-model-setting", *ONE_STAGE], capsys)
    assert rc == 2
    assert "model.config.api_key" in lines[-1] and "not a setting" in lines[-1]
    assert not run_dir.exists()
    rc, lines = _train([f"run.dir={run_dir}", "model.config.api_key=x", "--validate"], capsys)
    assert rc == 2


@pytest.mark.parametrize("content,expect", [
    (b"", "no records (empty file)"),
    (b"not json\n{\"id\": 3}\n", "2 skipped (invalid_json: 1, missing_field: 1)"),
])
def test_no_training_examples_names_the_sources_and_reasons(tmp_path, capsys, content, expect):
    src = tmp_path / "data.jsonl"
    src.write_bytes(content)
    run_dir = tmp_path / "run"
    rc, lines = _train([f"run.dir={run_dir}", *ONE_STAGE, "logger.wandb.enabled=false",
                        f"data.sources=[{{path: {src}, format: canonical, on_error: skip}}]"], capsys)
    assert rc == 2, lines
    msg = lines[-1]
    assert msg.startswith("train.py: error: role backbone: no training examples") and str(src) in msg
    assert expect in msg
    assert not run_dir.exists()  # nothing left behind: no recipe copy, tokenizer, cache or W&B run


def test_empty_answer_is_an_error_or_a_counted_skip(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in (_canonical(0), _canonical(1, answer="  "))) + "\n")
    with pytest.raises(TrajectoryError) as exc:
        load_trajectories(path, format="canonical")
    assert "record 1" in str(exc.value) and "turns[2].answer" in str(exc.value) and "empty" in str(exc.value)
    res = load_trajectories(path, format="canonical", on_error="skip")
    assert len(res.trajectories) == 1 and res.skip_reasons == {"empty_target": 1}


def test_non_utf8_jsonl_names_file_and_line_and_obeys_on_error(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_bytes(json.dumps(_canonical(0)).encode() + b"\n" + b"\xff\xfe binary \x80\n"
                     + json.dumps(_canonical(2)).encode() + b"\n")
    with pytest.raises(TrajectoryError) as exc:
        load_trajectories(path, format="canonical")
    assert str(path) in str(exc.value) and "line 2 is not UTF-8" in str(exc.value)
    res = load_trajectories(path, format="auto", on_error="skip")
    assert len(res.trajectories) == 2 and res.skip_reasons == {"invalid_encoding": 1}


def _datamodule(tmp_path, bpe_tokenizer, *overrides):
    recipe = load_recipe([QUICKSTART], [f"run.dir={tmp_path / 'run'}", *ONE_STAGE, *overrides])
    return build_datamodule(recipe, stage_settings(recipe, "backbone"), bpe_tokenizer)


def test_skip_counts_are_printed_on_the_console(tmp_path, bpe_tokenizer, capsys):
    path = tmp_path / "t.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in (_canonical(0), _canonical(1, ""), _canonical(2))) + "\n")
    dm = _datamodule(tmp_path, bpe_tokenizer, "data.val_fraction=0.0",
                     f"data.sources=[{{path: {path}, format: canonical, on_error: skip}}]")
    dm.prepare_data()
    out = capsys.readouterr().out
    assert f"[data] {path}: skipped 1 record(s) (empty_target: 1), loaded 2" in out


def test_micro_batch_larger_than_the_data_is_clamped_with_a_warning(tmp_path, bpe_tokenizer, capsys):
    dm = _datamodule(tmp_path, bpe_tokenizer, "data.micro_batch_size=5000")
    dm.prepare_data()
    n = len(dm.splits["train"])
    loader = dm.train_dataloader()
    assert (f"[data] warning: data.micro_batch_size=5000 is larger than the train split allows ({n} sequences"
            in capsys.readouterr().err)
    steps = list(loader)
    assert len(steps) == 1 and sum(len(mb["input_ids"]) for mb in steps[0]) == n  # no filler rows


def test_bpe_training_is_linear_in_a_long_space_free_string(tmp_path):
    from prompting.bpe_tokenizer import train_bpe_tokenizer
    blob = "".join(chr(ord("a") + (i * 7919 + i // 13) % 26) for i in range(1_000_000))
    texts = ["Thought: call the weather tool. Action: get_weather"] * 50 + [blob]
    t0 = time.perf_counter()
    tok = train_bpe_tokenizer(texts, vocab_size=400, out_dir=tmp_path / "tok", max_token_chars=64)
    assert time.perf_counter() - t0 < 60  # was 9 minutes (quadratic in the string's length)
    assert max(len(t) for t in tok.get_vocab()) <= 64
    sample = "x " + blob[:500] + "\nend"
    assert tok.decode(tok(sample)["input_ids"]) == sample


def test_unwritable_or_full_run_dir_is_one_line_naming_the_path(tmp_path, capsys, monkeypatch):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    rc, lines = _train([f"run.dir={blocker / 'run'}", *ONE_STAGE], capsys)
    assert rc == 2 and len(lines) == 1 and str(blocker) in lines[0] and "run.dir" in lines[0]

    import shutil
    from collections import namedtuple
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**9, 10**9 - 1000, 1000))
    run_dir = tmp_path / "full"
    rc, lines = _train([f"run.dir={run_dir}", *ONE_STAGE], capsys)
    assert rc == 2 and str(run_dir) in lines[-1] and "1000 bytes free" in lines[-1]
    assert "run.check_disk_space=false" in lines[-1] and not run_dir.exists()


def test_llm_and_os_errors_are_one_line(capsys):
    from core.llm_client import LLMError

    def llm(argv):
        raise LLMError("http://127.0.0.1:9/v1: 3 retries exhausted (connection refused)")
    assert run_cli("python -m simulators", llm, []) == 1
    assert capsys.readouterr().err.strip() == ("python -m simulators: error: http://127.0.0.1:9/v1: "
                                              "3 retries exhausted (connection refused)")

    def oserr(argv):
        open("/nonexistent/dir/file.json")
    assert run_cli("evaluate.py steps", oserr, []) == 2
    assert capsys.readouterr().err.strip().startswith(
        "evaluate.py steps: error: /nonexistent/dir/file.json: No such file or directory")
    assert issubclass(TrajectoryError, ProjectError) and issubclass(RecipeError, ProjectError)


def test_preview_simulator_sweep_and_evaluate_share_the_surface(tmp_path, capsys):
    from pipeline import preview
    from simulators.__main__ import main as simulate
    import evaluate
    import sweep
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert preview.main([str(QUICKSTART), "--role", "planner", f"run.dir={tmp_path / 'run'}",
                         f"data.sources=[{{path: {empty}, format: canonical}}]"]) == 2
    assert capsys.readouterr().err.strip().startswith(
        "python -m pipeline.preview: error: role planner: no training examples")
    assert simulate([str(REPO / "recipes" / "simulator" / "toolalpaca.yaml"), "llm.api_key=abc"]) == 2
    assert capsys.readouterr().err.strip().startswith("python -m simulators: error: simulator.llm.api_key")
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b"\xff\xfe\n")
    assert evaluate.main(["steps", "--references", str(bad), "--out", str(tmp_path / "s.jsonl")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("evaluate.py steps: error:") and str(bad) in err and len(err.splitlines()) <= 2
    assert sweep.main([str(tmp_path / "missing.yaml")]) == 2
    assert capsys.readouterr().err.strip().startswith("sweep.py: error:")


def test_changed_recipe_is_refused_on_a_run_dir_with_finished_stages(tmp_path, capsys):
    """A rerun that would skip stages trained with other settings (and report their numbers as
    its own) stops instead; what only changes unfinished stages or logging goes on."""
    from core.recipe import to_yaml
    from core.run_dir import RunDir
    from pipeline.stage_runner import refuse_drift
    run_dir = tmp_path / "run"
    names = ["backbone", "planner", "caller", "summarizer"]
    base = load_recipe([QUICKSTART], [f"run.dir={run_dir}"])
    run = RunDir(run_dir)
    run_dir.mkdir()
    run.save_recipe(to_yaml(base))
    run.stage("backbone").path.mkdir()
    run.stage("backbone").write_done({"stage": "backbone"})

    def recipe(*overrides):
        return load_recipe([QUICKSTART], [f"run.dir={run_dir}", *overrides])

    refuse_drift(recipe("stages.planner.trainer.max_epochs=9", "logger.wandb.enabled=false",
                        "evaluate.limit=3"), run, names)  # backbone unaffected
    with pytest.raises(RecipeError, match=r"differs at stages.backbone.trainer.max_epochs, "
                                          r"tokenizer.train_bpe.vocab_size"):
        refuse_drift(recipe("stages.backbone.trainer.max_epochs=9",
                            "tokenizer.train_bpe.vocab_size=512"), run, names)
    # through the command line: one message naming the folder, exit 2, the saved recipe kept
    assert train.main(["recipes/toolbench_sample.yaml", f"run.dir={run_dir}", "data.max_length=512"]) == 2
    err = capsys.readouterr().err
    assert f"{run_dir} holds stages trained with a different recipe (backbone)" in err
    assert "data.max_length" in err and "Traceback" not in err
    assert run.load_recipe()["data"]["max_length"] == base["data"]["max_length"]
