"""Sweeps: spec validation, expansion into variants, the run / resume / skip logic and the report.

The end-to-end test runs the shipped quickstart ablation spec (three of its variants: the GLPFT
team, the single LLM and the multitask LLM) on a shrunken quickstart (one-layer model, BPE 600,
max_length 512, a few steps per stage, 12 evaluation steps): train, evaluate, report, rerun."""
import json
import shutil
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from conftest import QUICKSTART, REPO
from core.run_dir import RunDir, now
from pipeline.sweeps import SweepError, load_sweep
from sweep import main

ABLATIONS_SPEC = REPO / "recipes/sweeps/quickstart_ablations.yaml"
FRACTION_SPEC = REPO / "recipes/sweeps/quickstart_data_fraction.yaml"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# a quickstart small enough for CI: the sweep's recipe overrides (command line, every variant)
SHRINK = ["data.max_length=512", "tokenizer.train_bpe.vocab_size=600", "logger.wandb.enabled=false",
          "model.config.hidden_size=32", "model.config.intermediate_size=64",
          "model.config.num_hidden_layers=1", "trainer.max_steps=3", "trainer.limit_val_batches=2",
          "data.sources=[{path: data/toolbench/train_sample_chains.json, format: alpha_umi_chains}]"]
EVAL_SMALL = ["sweep.evaluate.limit=12", "sweep.evaluate.max_new_tokens=24", "sweep.evaluate.batch_size=12"]
E2E_VARIANTS = ("alpha_umi", "single_llm", "single_llm_multitask")
METRIC_KEYS = ("plan_acc", "act_em", "hallu", "arg_f1", "rouge_l")


def write_spec(path: Path, **changes) -> Path:
    """A copy of a spec with `sweep` keys replaced (None removes the key)."""
    spec = OmegaConf.to_container(OmegaConf.load(changes.pop("source", ABLATIONS_SPEC)))
    for key, value in changes.items():
        if value is None:
            spec["sweep"].pop(key, None)
        else:
            spec["sweep"][key] = value
    path.write_text(OmegaConf.to_yaml(OmegaConf.create(spec)))
    return path


def runs(out: Path) -> list[RunDir]:
    return [RunDir(p) for p in sorted((out / "runs").iterdir())] if (out / "runs").is_dir() else []


def done_mtimes(out: Path) -> dict:
    """File times only to prove that nothing rewrote a DONE marker."""
    return {str(s.done_file.relative_to(out)): s.done_file.stat().st_mtime_ns
            for run in runs(out) for s in run.done_stages()}


def eval_mtimes(out: Path) -> dict:
    files = [run.eval().metrics_file("out-of-domain") for run in runs(out)]
    return {str(f.relative_to(out)): f.stat().st_mtime_ns for f in files if f.is_file()}


def index(out: Path) -> dict:
    return json.loads((out / "sweep.json").read_text())


def table_rows(md: str) -> list[list[str]]:
    """Rows of the Table-1 block of report.md (cells stripped)."""
    block = md.split("## Table 1", 1)[1].split("\n\n")
    lines = next(b for b in block if b.startswith("| Run")).splitlines()[2:]
    return [[c.strip() for c in line.strip().strip("|").split(" | ")] for line in lines]


def assert_png(path: Path):
    from PIL import Image
    data = Path(path).read_bytes()
    assert data[:8] == PNG_MAGIC, path
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        assert im.size[0] > 200 and im.size[1] > 100


# ----- the spec: validation and expansion (nothing trained) ---------------------------------
def test_shipped_specs_expand_to_their_variants():
    sweep = load_sweep(ABLATIONS_SPEC)
    assert [v.name for v in sweep.variants] == ["alpha_umi", "alpha_umi_no_reuse", "alpha_umi_lora",
                                                "multi_llm_one_stage", "single_llm", "single_llm_multitask"]
    assert sweep.out == Path("runs/sweeps/quickstart-ablations")
    for v in sweep.variants:
        assert v.recipe["run"]["name"] == v.recipe["run"]["group"] == f"quickstart-ablations/{v.name}"
        assert v.run_dir == sweep.out / "runs" / v.name
        assert v.recipe["data"]["cache_dir"] == f"{v.run_dir}/cache"  # ${run.dir} follows
        assert {"sweep:quickstart-ablations", f"variant:{v.name}"} <= set(v.recipe["logger"]["wandb"]["tags"])
        assert v.recipes[-1].endswith(f"recipes/ablations/{v.name}.yaml")
    assert sweep.evaluate["test_sets"] == {"out-of-domain": str(REPO / "data/toolbench/dev_conversations.json")}
    frac = load_sweep(FRACTION_SPEC)
    assert len(frac.variants) == 8 and frac.variants[0].name == "alpha_umi-data_fraction_0.25"
    assert {v.recipe["data"]["data_fraction"] for v in frac.variants} == {0.25, 0.5, 0.75, 1.0}


def test_override_order_and_command_line(tmp_path):
    spec = write_spec(tmp_path / "s.yaml", overrides=["data.max_length=700", "data.val_fraction=0.3"],
                      variants={"a": {"recipes": ["recipes/ablations/single_llm.yaml"],
                                      "overrides": ["data.max_length=800"]},
                                "b": {"evaluate": {"max_new_tokens": 5}}},
                      grid={"data": {"data_fraction": [0.5, 1.0]}})
    sweep = load_sweep(spec, ["data.val_fraction=0.4", f"sweep.out={tmp_path}/o", "sweep.evaluate.limit=5"])
    names = [v.name for v in sweep.variants]
    assert names == ["a-data_fraction_0.5", "a-data_fraction_1.0", "b-data_fraction_0.5", "b-data_fraction_1.0"]
    a = sweep.variants[0].recipe
    assert a["data"]["max_length"] == 800 and a["data"]["val_fraction"] == 0.4 and a["data"]["data_fraction"] == 0.5
    assert list(a["stages"]) and [n for n, s in a["stages"].items() if s.get("enabled", True)] == ["backbone"]
    b = sweep.variants[3].recipe
    assert b["data"]["max_length"] == 700 and b["data"]["data_fraction"] == 1.0
    assert sweep.variants[0].own_overrides == ["data.max_length=800", "data.data_fraction=0.5"]
    assert sweep.out == tmp_path / "o" and sweep.variants[0].run_dir == tmp_path / "o/runs/a-data_fraction_0.5"
    assert sweep.evaluate["limit"] == 5
    # evaluation: the recipe's evaluate node < the sweep's < the variant's; it is the recipe's node
    a_eval, b_eval = sweep.variants[0].recipe["evaluate"], sweep.variants[3].recipe["evaluate"]
    assert a_eval["enabled"] and a_eval["limit"] == 5 and a_eval["max_new_tokens"] is None  # per role
    assert b_eval["max_new_tokens"] == 5 and b_eval["batch_size"] == 16
    assert sweep.variants[3].evaluate == {k: v for k, v in b_eval.items() if k != "enabled"}
    assert load_sweep(spec, ["sweep.evaluate.enabled=false"]).variants[0].evaluate is None
    # runs_dir null: the recipe's run.dir, which follows run.name (runs/NAME/VARIANT)
    sweep = load_sweep(spec, ["sweep.runs_dir=null"])
    assert sweep.variants[0].run_dir == Path("runs/quickstart-ablations/a-data_fraction_0.5")


# one error form for recipes and sweep specs (core.recipe.schema_errors / key_error): the key
# path, what is wrong, and the file (or the command line) that set it
@pytest.mark.parametrize("change,args,message", [
    ({"variant": {}}, [], "unknown key 'sweep.variant' (from {spec})"),
    ({"name": None}, [], "missing required key 'sweep.name' (in {spec})"),
    ({"base": None}, [], "missing required key 'sweep.base' (in {spec})"),
    ({"base": ["recipes/nope.yaml"]}, [], "key 'sweep.base[0]': file not found: recipes/nope.yaml (from {spec})"),
    ({"overrides": ["max_length"]}, [],
     "key 'sweep.overrides[0]': 'max_length' is not of the form key=value (from {spec})"),
    ({"overrides": ["trainer.max_epoch=2"]}, [],
     "unknown key 'trainer.max_epoch' (from 'sweep.overrides[0]' in {spec})"),
    ({"variants": {"a": {"recipe": []}}}, [], "unknown key 'sweep.variants.a.recipe' (from {spec})"),
    ({"variants": {"a b": {}}}, [], "key 'sweep.variants': 'a b' is not a name of letters, digits and _ . + -"),
    ({"variants": {"a": {"overrides": ["data.layout=zigzag"]}}}, [],
     "key 'data.layout'"),
    ({"grid": {"data.data_fraction": 0.5}}, [],
     "key 'sweep.grid.data.data_fraction': 0.5 is not a non-empty list of distinct values"),
    ({"grid": {"data.data_fraction": [0.5, 0.5]}}, [],
     "key 'sweep.grid.data.data_fraction': [0.5, 0.5] is not a non-empty list of distinct values"),
    ({"grid": {"data.data_fraction": [0.5, 2.0]}}, [],
     "variant 'alpha_umi-data_fraction_2.0': invalid recipe:\n  key 'data.data_fraction': 2.0 is greater than the maximum of 1 "
     "(from 'sweep.grid.data.data_fraction' in {spec})"),
    ({"evaluate": {"refs": "x"}}, [], "unknown key 'sweep.evaluate.refs' (from {spec})"),
    ({"evaluate": {"test_sets": {"out-of-domain": None}}}, [],
     "variant 'alpha_umi': evaluation is enabled but no test set is given: set 'test_sets' "
     "(key 'sweep.evaluate' from {spec})"),
    ({"evaluate": {"enabled": "yes"}}, [], "key 'sweep.evaluate.enabled': 'yes' is not of type 'boolean' (from {spec})"),
    ({"evaluate": {"test_sets": {"dev": "nope.json"}}}, [],
     "key 'sweep.evaluate.test_sets.dev': file not found: nope.json (from {spec})"),
    ({"report": {"wandb": {"mode": "cloud"}}}, [], "key 'sweep.report.wandb.mode': 'cloud' is not one of"),
    ({}, ["sweep.evaluate.limit=0"], "key 'sweep.evaluate.limit': 0 is less than the minimum of 1 (from command line)"),
    ({}, ["sweep.runs_dir=null", "run.dir=/tmp/same"], "would share the run directory"),
    ({}, ["trainer.max_epoch=2"], "unknown key 'trainer.max_epoch' (from command line)"),
])
def test_spec_errors_name_the_key_and_file(tmp_path, change, args, message):
    spec = write_spec(tmp_path / "bad.yaml", **change)
    with pytest.raises(SweepError) as err:
        load_sweep(spec, args)
    assert message.format(spec=spec) in str(err.value)


def test_evaluate_settings_are_defined_once(tmp_path):
    """The sweep's `evaluate:` keys are the recipe schema's evaluate node (one definition, one
    error form), and evaluation's defaults are that node's defaults."""
    from core.recipe import RecipeError, evaluate_defaults, load_recipe
    from evaluation.agent.setup import evaluate_settings
    from pipeline.sweeps.spec import spec_schema
    recipe_node = json.loads((REPO / "core/recipe_schema.json").read_text())["properties"]["evaluate"]
    assert spec_schema()["$defs"]["evaluate"]["properties"] == recipe_node["properties"]
    assert evaluate_settings({}) == evaluate_defaults() == {k: p["default"] for k, p in recipe_node["properties"].items()
                                                            if k != "enabled"}
    spec = write_spec(tmp_path / "s.yaml")
    with pytest.raises(SweepError) as sweep_err:
        load_sweep(spec, ["sweep.evaluate.mode=fast"])
    with pytest.raises(RecipeError) as recipe_err:
        load_recipe([QUICKSTART], ["evaluate.mode=fast"])
    assert "key 'sweep.evaluate.mode': 'fast' is not one of ['auto', 'alpha_umi', 'single', None] " \
           "(from command line)" in str(sweep_err.value)
    assert "key 'evaluate.mode': 'fast' is not one of ['auto', 'alpha_umi', 'single', None] " \
           "(from command line)" in str(recipe_err.value)


def test_bad_yaml_and_cli_errors(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("sweep: {name: x, base: [\n")
    with pytest.raises(SweepError, match="cannot parse YAML"):
        load_sweep(bad)
    bad.write_text("name: x\n")
    with pytest.raises(SweepError, match="top-level key 'sweep'"):
        load_sweep(bad)
    assert main([str(ABLATIONS_SPEC), "--only", "nope", f"sweep.out={tmp_path}/o"]) == 2
    assert "--only nope: no such variant" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    assert main([str(ABLATIONS_SPEC), "--list", f"sweep.out={tmp_path}/o"]) == 0
    listing = capsys.readouterr().out
    assert "alpha_umi_no_reuse" in listing and "pending" in listing and not (tmp_path / "o").exists()


# ----- run / resume / report logic with stand-ins for training and evaluation --------------
class FakeBackend:
    """Stand-ins for run_recipe and evaluate_run: stage folders with a CSV log and a DONE marker
    (written through RunDir, as the stage runner does), and metrics that grow with the data
    fraction (Rouge-L undefined for `no_rouge` variants)."""

    def __init__(self, fail=(), interrupt=()):
        self.trained, self.evaluated = [], []
        self.fail, self.interrupt = set(fail), set(interrupt)
        self.error_detail = ""

    def run_recipe(self, recipe, only=None):
        from core.recipe import redact, to_yaml
        from pipeline.sweeps import enabled_stages
        run_dir = RunDir.of(recipe)
        name = run_dir.path.name
        run_dir.path.mkdir(parents=True, exist_ok=True)
        run_dir.save_recipe(to_yaml(redact(recipe)))
        if any(name.startswith(f) for f in self.interrupt):
            raise KeyboardInterrupt
        if any(name.startswith(f) for f in self.fail):
            raise RuntimeError(f"CUDA out of memory (pretend){self.error_detail}")
        ran = []
        for stage in enabled_stages(recipe):
            sdir = run_dir.stage(stage)
            if sdir.is_done():
                continue
            role = recipe["stages"][stage]["role"]
            sdir.logs.mkdir(parents=True, exist_ok=True)
            kinds = {"planner": ["thought"], "caller": ["action"], "summarizer": ["answer"]}.get(
                role, ["thought", "action", "answer"])
            cols = ["epoch", "step", "train/loss"] + [f"train/loss_{k}" for k in kinds] + ["val/loss"]
            lines = [",".join(cols)]
            for step in range(6):
                vals = [3.0 - 0.2 * step + 0.1 * i for i in range(len(kinds))]
                lines.append(",".join(["0", str(step), f"{3 - 0.2 * step:.3f}"] + [f"{v:.3f}" for v in vals] + [""]))
            lines.append(",".join(["0", "5", "", *([""] * len(kinds)), "2.5"]))
            sdir.csv_log.write_text("\n".join(lines) + "\n")
            sdir.write_done({"stage": stage, "role": role}, started=now())
            ran.append(stage)
        self.trained.append(name)
        return ran

    def evaluate_run(self, recipe, node=None):
        from evaluation.steps.teacher_forced import StaticEvaluation, test_set_source
        settings = StaticEvaluation.from_node(recipe["evaluate"] if node is None else node)
        run_dir = RunDir.of(recipe)
        frac = recipe["data"]["data_fraction"]
        name = run_dir.path.name
        single = name.startswith("single")
        out = {}
        for test_set, path in settings.test_sets.items():
            started = now()
            m = {"plan_acc": 40 * frac + 10 * (not single), "act_em": 30 * frac, "hallu": 5 / frac,
                 "arg_f1": 20 * frac, "rouge_l": None if "no_rouge" in name else 15 * frac, "n_steps": 12,
                 "counts": {"reference": {"call": 9, "conclusion": 0 if "no_rouge" in name else 2, "give_up": 1}},
                 "inference": {"mode": "single" if single else "alpha_umi", "references": test_set_source(path),
                               "limit": settings.limit,
                               "decoding": {"do_sample": False, "requested_max_new_tokens": settings.team.max_new_tokens}}}
            out[test_set] = run_dir.eval(settings.out_dir).write_metrics(m, test_set, started=started, finished=now())
        self.evaluated.append(name)
        return {"mode": "single" if single else "alpha_umi", "metrics": out}


@pytest.fixture
def fake(monkeypatch):
    import evaluation.steps.teacher_forced as si
    import pipeline.stage_runner as sr

    backend = FakeBackend()
    monkeypatch.setattr(sr, "run_recipe", lambda recipe, only=None: backend.run_recipe(recipe, only))
    monkeypatch.setattr(si, "evaluate_run", lambda recipe, node=None, only=None: backend.evaluate_run(recipe, node))
    return backend


def fraction_spec(tmp_path) -> Path:
    return write_spec(tmp_path / "frac.yaml", source=FRACTION_SPEC,
                      variants={"alpha_umi": {"recipes": ["recipes/ablations/alpha_umi.yaml"]},
                                "single_no_rouge": {"recipes": ["recipes/ablations/single_llm.yaml"]}},
                      grid={"data.data_fraction": [0.5, 1.0]},
                      report={"wandb": {"enabled": False}})


def test_failed_variant_is_recorded_and_the_sweep_goes_on(tmp_path, fake):
    spec = fraction_spec(tmp_path)
    out = tmp_path / "out"
    fake.fail = {"single_no_rouge-data_fraction_1.0"}
    assert main([str(spec), f"sweep.out={out}"]) == 1
    idx = index(out)
    st = {k: v["status"] for k, v in idx["variants"].items()}
    assert st.pop("single_no_rouge-data_fraction_1.0") == "failed" and set(st.values()) == {"done"}
    failed = idx["variants"]["single_no_rouge-data_fraction_1.0"]
    assert "CUDA out of memory" in failed["error"] and Path(failed["traceback"]).is_file()
    md = (out / "report.md").read_text()
    rows = {r[0]: r for r in table_rows(md)}
    assert len(rows) == 4
    assert all(c.startswith("–[^") for c in rows["single_no_rouge-data_fraction_1.0"][2:])
    assert rows["single_no_rouge-data_fraction_0.5"][6].startswith("–[^")  # Rouge-L
    assert rows["alpha_umi-data_fraction_0.5"][1] == "out-of-domain"
    assert all(not c.startswith("–") for c in rows["alpha_umi-data_fraction_0.5"][2:])
    assert "the run failed (RuntimeError: CUDA out of memory (pretend))" in md
    assert "undefined: no reference step is a conclusion, so" in md
    assert "[^1]:" in md and "[^2]:" in md
    html = (out / "report.html").read_text()
    assert "<sup><a href='#note1'>1</a></sup>" in html and "id='note2'" in html
    # Figure 4: the grid varies the data fraction
    assert "Figure 4" in md
    for name in ("metrics", "loss_by_span", "data_fraction", "loss_alpha_umi-data_fraction_0.5"):
        assert_png(out / "plots" / f"{name}.png")
    # the failed variant is retried, the rest skipped
    fake.fail, fake.trained, fake.evaluated = set(), [], []
    assert main([str(spec), f"sweep.out={out}"]) == 0
    assert fake.trained == fake.evaluated == ["single_no_rouge-data_fraction_1.0"]
    assert {v["status"] for v in index(out)["variants"].values()} == {"done"}


def test_credentials_never_reach_the_sweep_files(tmp_path, fake, monkeypatch):
    secret = "sk-sweep-secret-0123456789"
    monkeypatch.setenv("JUDGE_API_KEY", secret)
    spec = fraction_spec(tmp_path)
    out = tmp_path / "out"
    fake.fail = {"single_no_rouge-data_fraction_1.0"}
    fake.error_detail = f" while calling https://judge.example/v1?key={secret}"
    assert main([str(spec), f"sweep.out={out}", "run.seed=42", f"logger.wandb.entity={secret}"]) == 1
    written = [p for p in out.rglob("*") if p.is_file() and p.suffix in (".json", ".txt", ".md", ".html")]
    assert {p.name for p in written} >= {"sweep.json", "report.md",
                                         "single_no_rouge-data_fraction_1.0.traceback.txt"}
    for p in written:
        assert secret not in p.read_text(), p
    idx = index(out)
    assert "logger.wandb.entity=***" in idx["command_line"]
    assert "key=***" in idx["variants"]["single_no_rouge-data_fraction_1.0"]["error"]


def test_interrupted_sweep_resumes(tmp_path, fake):
    spec = fraction_spec(tmp_path)
    out = tmp_path / "out"
    fake.interrupt = {"alpha_umi-data_fraction_1.0"}
    no_report = "sweep.report.enabled=false"
    with pytest.raises(KeyboardInterrupt):
        main([str(spec), f"sweep.out={out}", no_report])
    st = {k: v["status"] for k, v in index(out)["variants"].items()}
    assert st["alpha_umi-data_fraction_0.5"] == "done"
    assert st["alpha_umi-data_fraction_1.0"] == "interrupted"
    assert st["single_no_rouge-data_fraction_0.5"] == "pending"
    assert not (out / "report.md").exists()
    fake.interrupt, fake.trained = set(), []
    assert main([str(spec), f"sweep.out={out}", "--only", "alpha_umi", no_report]) == 0
    assert fake.trained == ["alpha_umi-data_fraction_1.0"]  # 0.5 was finished
    fake.trained = []
    assert main([str(spec), f"sweep.out={out}", no_report]) == 0
    assert sorted(fake.trained) == sorted(k for k in st if not k.startswith("alpha_umi"))


def test_changed_evaluation_settings_reevaluate_without_retraining(tmp_path, fake):
    spec = fraction_spec(tmp_path)
    out = tmp_path / "out"
    only = ["--only", "alpha_umi-data_fraction_0.5"]
    assert main([str(spec), f"sweep.out={out}", "sweep.report.enabled=false", *only]) == 0
    fake.trained, fake.evaluated = [], []
    assert main([str(spec), f"sweep.out={out}", "sweep.report.enabled=false", *only,
                 "sweep.evaluate.limit=7"]) == 0
    assert fake.trained == [] and fake.evaluated == ["alpha_umi-data_fraction_0.5"]
    # a changed training setting is not silently mixed in: the finished run is kept, with a warning
    assert main([str(spec), f"sweep.out={out}", *only, "sweep.evaluate.limit=7", "data.val_fraction=0.3"]) == 0
    entry = index(out)["variants"]["alpha_umi-data_fraction_0.5"]
    assert fake.trained == [] and "data.val_fraction" in entry["warning"]
    assert "data.val_fraction" in (out / "report.md").read_text()


def test_eval_currency_reads_recorded_times_not_mtimes(tmp_path):
    """An evaluation is current when its recorded end time follows every stage's; file mtimes
    (touched here the other way round) do not matter."""
    import os

    from pipeline.sweeps import eval_is_current
    recipe = {"run": {"dir": str(tmp_path / "run")}, "stages": {"backbone": {"role": "backbone"}}}
    run, cfg = RunDir.of(recipe), {"test_sets": {"dev": "dev.json"}, "limit": None, "max_new_tokens": 8}
    inference = {"references": "dev.json", "limit": None, "decoding": {"requested_max_new_tokens": 8}}
    run.stage("backbone").write_done({"role": "backbone"}, started=now())
    run.eval().write_metrics({"inference": inference}, "dev", started=now(), finished=now())
    os.utime(run.eval().metrics_file("dev"), (0, 0))  # an old file time: ignored
    assert eval_is_current(recipe, cfg)
    assert not eval_is_current(recipe, {**cfg, "max_new_tokens": 9})
    run.stage("backbone").write_done({"role": "backbone"}, started=now())  # retrained since
    os.utime(run.stage("backbone").done_file, (0, 0))
    assert not eval_is_current(recipe, cfg)
    run.eval().write_metrics({"inference": {k: v for k, v in inference.items()}}, "dev", started=now(), finished=now())
    assert eval_is_current(recipe, cfg)
    assert not eval_is_current(recipe, {**cfg, "test_sets": {"dev": "dev.json", "more": "more.json"}})
    # a metrics file without a recorded end time is never taken as current
    run.eval().metrics_file("dev").write_text(json.dumps({"inference": inference}))
    assert not eval_is_current(recipe, cfg)


def test_report_only_trains_nothing(tmp_path, fake):
    spec = fraction_spec(tmp_path)
    out = tmp_path / "out"
    assert main([str(spec), f"sweep.out={out}", "--report-only"]) == 0
    assert fake.trained == [] and fake.evaluated == []
    rows = table_rows((out / "report.md").read_text())
    assert len(rows) == 4 and all(c.startswith("–[^1]") for r in rows for c in r[2:])
    assert "not evaluated yet (status: pending)" in (out / "report.md").read_text()
    assert "Figure 4" not in (out / "report.md").read_text()


def test_report_lines_per_test_set_and_blank_notes(tmp_path):
    from evaluation.report import write_report
    runs = []
    for name, sets in (("a", ("held-in", "out-of-domain")), ("b", ("held-in",)), ("c", ())):
        d = RunDir(tmp_path / name).eval()
        m = {k: 10.0 for k in METRIC_KEYS} | {"n_steps": 4}
        for s in sets:
            d.write_metrics(m | ({"rouge_l": None} if s == "out-of-domain" else {}), s, started=now(), finished=now())
        runs.append({"name": name, "run_dir": str(tmp_path / name)})
    paths = write_report(runs, tmp_path / "rep", title="T")
    md = Path(paths["markdown"]).read_text()
    rows = [r[:2] for r in table_rows(md)]
    assert rows == [["a", "held-in"], ["a", "out-of-domain"], ["b", "held-in"], ["c", "–"]]
    lines = table_rows(md)
    assert lines[1][6].startswith("–[^") and all(c.startswith("–[^") for c in lines[3][2:])
    assert "undefined: no reference step is a conclusion" in md and "not evaluated (no eval/<test set>/metrics.json" in md
    data = json.loads(Path(paths["json"]).read_text())
    assert len(data["blank_cells"]) == 6 and len(data["footnotes"]) == 2
    assert_png(paths["plots"]["runs"]["a"])  # no stage logs: still a valid (annotated) figure


def test_seed_table_mean_std_and_two_sigma_marks(tmp_path, fake, capsys):
    """Three seeds per variant: the report and the console give mean ± sample std per variant, and
    mark a difference from the reference variant only when it exceeds two pooled std."""
    spec = write_spec(tmp_path / "seeds.yaml", source=FRACTION_SPEC,
                      variants={"alpha_umi": {"recipes": ["recipes/ablations/alpha_umi.yaml"]},
                                "single_llm": {"recipes": ["recipes/ablations/single_llm.yaml"]}},
                      grid={"run.seed": [1, 2, 3]}, report={"wandb": {"enabled": False}, "reference": "single_llm"})
    plain = fake.evaluate_run

    def by_seed(recipe, node=None):  # Plan ACC spread by seed, Act. EM shifted by 1 + seed / 100
        out = plain(recipe, node)
        seed = recipe["run"]["seed"]
        for path in RunDir.of(recipe).path.glob("eval/*/metrics.json"):
            m = json.loads(path.read_text())
            m["plan_acc"] += 5.0 * seed
            m["act_em"] += seed / 100 + (1.0 if RunDir.of(recipe).path.name.startswith("alpha_umi") else 0.0)
            path.write_text(json.dumps(m))
        return out

    fake.evaluate_run = by_seed
    assert main([str(spec), f"sweep.out={tmp_path / 'out'}", "--no-wandb"]) == 0
    printed = capsys.readouterr().out
    data = json.loads((tmp_path / "out" / "results.json").read_text())["seed_summary"]
    assert data["reference"] == "single_llm"
    groups = {g["group"]: g for g in data["groups"]}
    assert set(groups) == {"alpha_umi", "single_llm"} and all(len(g["runs"]) == 3 for g in groups.values())
    plan = groups["alpha_umi"]["sets"]["out-of-domain"]["plan_acc"]
    assert plan["n"] == 3 and plan["std"] == pytest.approx(5.0)  # seeds 1, 2, 3 x 5: sample std 5
    # Plan ACC: Δ = +10 (the team's bonus), σ = 5: not beyond 2σ; Act. EM: Δ = 1, σ = 0.01: beyond
    assert plan["delta"] == pytest.approx(10.0) and plan["beyond_2sigma"] is False
    act = groups["alpha_umi"]["sets"]["out-of-domain"]["act_em"]
    assert act["delta"] == pytest.approx(1.0) and act["beyond_2sigma"] is True
    assert groups["single_llm"]["sets"]["out-of-domain"]["act_em"]["beyond_2sigma"] is None
    md = (tmp_path / "out" / "report.md").read_text()
    line = next(x for x in md.splitlines() if x.startswith("| alpha_umi | out-of-domain | 3 |"))
    cells = [c.strip() for c in line.strip("| ").split(" | ")]
    assert cells[3].endswith("± 5.00") and cells[4].endswith(" *")
    assert "differs from single_llm by more than two standard deviations" in md
    assert "| alpha_umi | out-of-domain | 3 |" in printed


# ----- end to end on the quickstart ---------------------------------------------------------
@pytest.fixture(scope="module")
def e2e(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    full = OmegaConf.to_container(OmegaConf.load(ABLATIONS_SPEC))["sweep"]["variants"]
    spec = write_spec(root / "ablations.yaml", variants={k: full[k] for k in E2E_VARIANTS})
    out = root / "out"
    args = [str(spec), f"sweep.out={out}", *EVAL_SMALL, *SHRINK]
    # a partial sweep first (as if interrupted after its first variant)...
    assert main(args + ["--only", "single_llm"]) == 0
    partial = index(out)
    single_done = done_mtimes(out)
    # ...then the whole sweep in one command: it resumes
    t0 = time.perf_counter()
    assert main(args) == 0
    return {"out": out, "args": args, "partial": partial, "single_done": single_done,
            "seconds": time.perf_counter() - t0}


def test_partial_sweep_then_resume(e2e):
    st = {k: v["status"] for k, v in e2e["partial"]["variants"].items()}
    assert st == {"alpha_umi": "pending", "single_llm": "done", "single_llm_multitask": "pending"}
    after = done_mtimes(e2e["out"])
    assert {k: after[k] for k in e2e["single_done"]} == e2e["single_done"]  # not retrained


def test_sweep_trains_and_evaluates_every_variant(e2e):
    out = e2e["out"]
    idx = index(out)
    assert idx["order"] == list(E2E_VARIANTS)
    for name in E2E_VARIANTS:
        e = idx["variants"][name]
        run = out / "runs" / name
        assert e["status"] == "done" and e["run_dir"] == str(run)
        assert all(e["metrics"]["out-of-domain"][k] is not None for k in METRIC_KEYS)
        saved = RunDir(run).load_recipe()
        assert saved["run"]["name"] == saved["run"]["group"] == f"quickstart-ablations/{name}"
        assert RunDir(run).eval().metrics_file("out-of-domain").is_file()
        done = [RunDir(run).stage(s["name"]).read_done() for s in e["stages"]]
        assert all(d["started"] < d["finished"] for d in done)  # recorded, not read from mtimes
        inference = RunDir(run).eval().read_metrics("out-of-domain")["inference"]
        assert max(d["finished"] for d in done) < inference["started"] < inference["finished"]
    stages = {n: sorted(s.name for s in RunDir(out / "runs" / n).done_stages()) for n in E2E_VARIANTS}
    assert stages == {"alpha_umi": ["backbone", "caller", "planner", "summarizer"],
                      "single_llm": ["backbone"], "single_llm_multitask": ["multitask"]}
    models = {n: RunDir(out / "runs" / n).eval().read_metrics("out-of-domain")["inference"] for n in E2E_VARIANTS}
    assert models["single_llm"]["mode"] == "single"
    assert models["alpha_umi"]["mode"] == "alpha_umi"
    # the multitask model serves all three roles (with their own system prompts)
    mt = models["single_llm_multitask"]
    assert mt["mode"] == "alpha_umi"
    assert set(mt["models"].values()) == {str(RunDir(out / "runs/single_llm_multitask").stage("multitask").export)}


def test_report_has_a_filled_row_per_variant(e2e):
    out = e2e["out"]
    md = (out / "report.md").read_text()
    rows = table_rows(md)
    assert [r[0] for r in rows] == list(E2E_VARIANTS)
    for r in rows:
        assert len(r) == 7 and r[1] == "out-of-domain" and all(c != "–" and float(c) >= 0 for c in r[2:])
    assert "[^" not in md.split("## Runs")[0]  # no blank cell, no footnote
    html = (out / "report.html").read_text()
    assert html.count("<tr>") >= 2 * (len(E2E_VARIANTS) + 1) and "plots/loss_by_span.png" in html
    for name in ("metrics", "loss_by_span", *(f"loss_{n}" for n in E2E_VARIANTS)):
        assert_png(out / "plots" / f"{name}.png")
        assert f"plots/{name}.png" in md and f"plots/{name}.png" in html
    assert not (out / "plots/data_fraction.png").exists()  # no data-fraction grid here
    results = json.loads((out / "results.json").read_text())
    assert len(results["rows"]) == 3 and not results["blank_cells"]
    assert list((out / "wandb").glob("offline-run-*/run-*.wandb"))  # the W&B report run (offline)


def test_rerun_skips_finished_variants(e2e, capsys):
    out = e2e["out"]
    before, evals = done_mtimes(out), eval_mtimes(out)
    assert len(before) == 6 and len(evals) == 3
    (out / "report.md").unlink()
    t0 = time.perf_counter()
    assert main(e2e["args"] + ["--no-wandb"]) == 0
    elapsed = time.perf_counter() - t0
    assert done_mtimes(out) == before and eval_mtimes(out) == evals
    log = capsys.readouterr().out
    assert log.count("not training") == 3 and log.count("evaluation is up to date") == 3
    assert (out / "report.md").is_file()
    assert elapsed < 20 and elapsed < e2e["seconds"] / 2


def test_report_only_rebuilds_the_report(e2e):
    out = e2e["out"]
    before = done_mtimes(out)
    shutil.rmtree(out / "plots")
    assert main(e2e["args"] + ["--report-only", "--no-wandb"]) == 0
    assert done_mtimes(out) == before
    assert_png(out / "plots" / "loss_alpha_umi.png")
