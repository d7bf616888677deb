"""Every settings file is checked by a JSON Schema (types, ranges, enums), with the key path and
the file that set it: episodes configs, simulator and GenTool settings (alone, and embedded in a
recipe under `train.py --validate`)."""
import evaluate
import train
from conftest import RECIPES
from simulators.__main__ import main as simulate


def _err(capsys):
    return capsys.readouterr().err


def test_gentool_settings_embedded_in_a_recipe_are_checked_by_validate(tmp_path, capsys):
    overlay = tmp_path / "bad.yaml"
    overlay.write_text("data:\n  sources:\n    - type: simulator\n      settings: {corpus: gentool, max_tools: 0, "
                       "sources: [], split: {heldout_tool_fraction: 1.5}, toolset: {k: five, similarity: tfidf}}\n")
    assert train.main([str(RECIPES / "gentool.yaml"), str(overlay), "--validate"]) == 2
    err = _err(capsys)
    for line in ("key 'data.sources[0].settings.split.heldout_tool_fraction': 1.5 is greater than or equal to the maximum of 1",
                 "key 'data.sources[0].settings.toolset.k': 'five' is not of type 'integer'",
                 "key 'data.sources[0].settings.toolset.similarity': 'tfidf' is not one of ['bm25', 'embedding']",
                 "key 'data.sources[0].settings.max_tools': 0 is less than the minimum of 1",
                 "key 'data.sources[0].settings.sources': [] should be non-empty"):
        assert line in err, err
    assert "Traceback" not in err
    assert train.main([str(RECIPES / "gentool.yaml"), "--validate"]) == 0


def test_simulator_settings_name_the_key_and_where_it_was_set(capsys):
    assert simulate([str(RECIPES / "simulator" / "gentool.yaml"), "toolset.k=0", "split.heldout_query_fraction=-0.1"]) == 2
    err = _err(capsys)
    assert "key 'toolset.k': 0 is less than the minimum of 1 (from command line)" in err
    assert "key 'split.heldout_query_fraction': -0.1 is less than the minimum of 0 (from command line)" in err
    assert simulate([str(RECIPES / "simulator" / "toolalpaca.yaml"), "instructions_per_api=ten"]) == 2
    assert "key 'instructions_per_api': 'ten' is not of type 'integer' (from command line)" in _err(capsys)


def test_episodes_config_is_checked_and_overrides_may_follow_the_options(tmp_path, capsys):
    config = RECIPES / "eval" / "toolalpaca_simulated.yaml"
    run = ["--run", str(tmp_path / "run")]
    assert evaluate.main(["episodes", str(config), *run, "in_flight=abc", "limit=abc", "max_steps=0"]) == 2
    err = _err(capsys)
    assert err.startswith(f"evaluate.py episodes: error: invalid episodes config {config}:")
    assert "key 'episodes.in_flight': 'abc' is not of type 'integer' (from command line)" in err
    assert "key 'episodes.limit': 'abc' is not of type 'integer', 'null' (from command line)" in err
    assert "key 'episodes.max_steps': 0 is less than the minimum of 1 (from command line)" in err
    child = tmp_path / "child.yaml"
    child.write_text(f"defaults: {config}\nepisodes:\n  in_flight: 0\n  judge: {{kind: tfidf}}\n"
                     "  endpoint: {prompt_as: ids}\n")
    assert evaluate.main(["episodes", str(child), *run]) == 2
    err = _err(capsys)
    assert f"key 'episodes.in_flight': 0 is less than the minimum of 1 (from {child})" in err
    assert f"key 'episodes.judge.kind': 'tfidf' is not one of ['process_answer', 'pass_rate', 'world'] (from {child})" in err
    assert f"key 'episodes.endpoint.prompt_as': 'ids' is not one of ['auto', 'token_ids', 'text'] (from {child})" in err


def test_the_shipped_endpoint_defaults_fit_the_schema_an_episodes_config_is_checked_by():
    import jsonschema
    from omegaconf import OmegaConf
    from evaluation.episodes.config import episodes_schema
    schema = episodes_schema()
    defaults = OmegaConf.to_container(OmegaConf.load(RECIPES / "eval" / "endpoint.yaml"))["endpoint"]
    jsonschema.validate(defaults, {**schema["$defs"]["endpoint"], "$defs": schema["$defs"]})


def test_list_index_override_is_one_line(capsys):
    assert train.main([str(RECIPES / "gentool.yaml"), "data.sources[0].settings.max_tools=3", "--validate"]) == 2
    err = _err(capsys).strip().splitlines()
    assert len(err) == 1 and "cannot apply 'data.sources[0].settings.max_tools=3'" in err[0]
    assert "overlay recipe file" in err[0]
