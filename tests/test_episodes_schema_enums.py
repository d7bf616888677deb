"""Every key of an episodes config is checked when it is read (before any model loads): the
executor type and the test set's format are enums taken from the code, and an unknown key under
`executor:` is refused, each with its key path and the file (or command line) that set it."""
import pytest

from evaluation import EvaluationError
from evaluation.episodes.config import load_episodes_config
from evaluation.episodes.executors import EXECUTOR_TYPES
from trajectories.sources import SOURCE_FORMATS

from conftest import REPO

CONFIG = REPO / "recipes/eval/toolalpaca_simulated.yaml"


@pytest.mark.parametrize("override,message", [
    ("executor.type=simulate", f"key 'episodes.executor.type': 'simulate' is not one of {list(EXECUTOR_TYPES)}"),
    ("format=xml", f"key 'episodes.format': 'xml' is not one of {[*SOURCE_FORMATS, None]}"),
    ("executor.htpp.enabled=true", "unknown key 'episodes.executor.htpp'"),
])
def test_episodes_config_enums_and_unknown_executor_keys(override, message):
    with pytest.raises(EvaluationError) as err:
        load_episodes_config(CONFIG, [override])
    assert str(err.value).splitlines()[0] == f"invalid episodes config {CONFIG}:"
    assert f"{message} (from command line)" in str(err.value)


def test_a_file_that_sets_a_bad_format_is_named(tmp_path):
    child = tmp_path / "child.yaml"
    child.write_text(f"defaults: {CONFIG}\nepisodes:\n  format: jsonl\n")
    with pytest.raises(EvaluationError, match=f"key 'episodes.format': 'jsonl' is not one of .* \\(from {child}\\)"):
        load_episodes_config(child)


@pytest.mark.parametrize("name", ["toolalpaca_simulated", "toolbench_pass_rate"])
def test_shipped_episodes_configs_pass(name):
    load_episodes_config(REPO / f"recipes/eval/{name}.yaml")
