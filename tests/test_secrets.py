"""No secret reaches any file a run writes: recipe copy, W&B run (config, recorded command line),
exports, logs, DONE.json."""
import sys

from conftest import QUICKSTART
from core.recipe import load_recipe
from core.secrets import redact, redact_argv
from pipeline.stage_runner import run_recipe

SECRET = "sk-live-0123456789abcdefXYZ"


def test_redaction_masks_secret_keys_and_environment_credentials(monkeypatch):
    monkeypatch.setenv("MY_SERVICE_TOKEN", SECRET)
    out = redact({"api_key": "abc", "api_key_env": "OPENAI_API_KEY", "max_tokens": 5,
                  "note": f"token is {SECRET}", "list": [SECRET]})
    assert out == {"api_key": "***", "api_key_env": "OPENAI_API_KEY", "max_tokens": 5,
                   "note": "token is ***", "list": ["***"]}
    assert redact_argv(["train.py", "llm.api_key=abc", f"run.group={SECRET}", "x=1"]) == \
        ["train.py", "llm.api_key=***", "run.group=***", "x=1"]


def test_a_run_writes_no_secret_anywhere(tmp_path, monkeypatch):
    monkeypatch.setenv("MY_SERVICE_TOKEN", SECRET)
    run_dir = tmp_path / "run"
    overrides = [f"run.dir={run_dir}", f"run.group={SECRET}", f"logger.wandb.tags=[{SECRET}]",
                 "stages.planner.enabled=false", "stages.caller.enabled=false",
                 "stages.summarizer.enabled=false", "evaluate.enabled=false", "logger.progress_bar=false",
                 "tokenizer.train_bpe.vocab_size=600", "data.max_length=512", "stages.backbone.trainer.max_steps=2",
                 "checkpoint.every_n_train_steps=1"]
    monkeypatch.setattr(sys, "argv", ["train.py", str(QUICKSTART), *overrides])  # W&B records argv
    run_recipe(load_recipe([QUICKSTART], overrides))
    files = [p for p in run_dir.rglob("*") if p.is_file()]
    assert any(p.name == "config.json" for p in files) and any(p.suffix == ".wandb" for p in files)
    assert any(p.name == "wandb-metadata.json" for p in files) or any(p.suffix == ".wandb" for p in files)
    leaks = [str(p) for p in files if SECRET.encode() in p.read_bytes()]
    assert leaks == []
