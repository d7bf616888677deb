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

from conftest import REPO
from pipeline.sweep import SweepError, load_sweep
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


def done_mtimes(out: Path) -> dict:
    return {str(p.relative_to(out)): p.stat().st_mtime_ns for p in sorted(out.glob("runs/*/*/DONE.json"))}


def eval_mtimes(out: Path) -> dict:
    return {str(p.relative_to(out)): p.stat().st_mtime_ns for p in sorted(out.glob("runs/*/eval/metrics.json"))}


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
    assert [v.name for v in sweep.variants] == ["alpha_umi", "alpha_umi_no_reuse", "multi_llm_one_stage",
                                                "single_llm", "single_llm_multitask"]
    assert sweep.out == Path("runs/sweeps/quickstart-ablations")
    for v in sweep.variants:
        assert v.recipe["run"]["name"] == v.recipe["run"]["group"] == f"quickstart-ablations/{v.name}"
        assert v.run_dir == sweep.out / "runs" / v.name
        assert v.recipe["data"]["cache_dir"] == f"{v.run_dir}/cache"  # ${run.dir} follows
        assert {"sweep:quickstart-ablations", f"variant:{v.name}"} <= set(v.recipe["logger"]["wandb"]["tags"])
        assert v.recipes[-1].endswith(f"recipes/ablations/{v.name}.yaml")
    assert sweep.evaluate["references"] == str(REPO / "data/toolbench/dev_conversations.json")
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


@pytest.mark.parametrize("change,args,message", [
    ({"variant": {}}, [], "key 'sweep.variant' (in {spec}): unknown key"),
    ({"name": None}, [], "key 'sweep.name' (in {spec}): required"),
    ({"base": None}, [], "key 'sweep.base' (in {spec}): required"),
    ({"base": ["recipes/nope.yaml"]}, [], "key 'sweep.base[0]' (in {spec}): file not found: recipes/nope.yaml"),
    ({"overrides": ["max_length"]}, [], "key 'sweep.overrides[0]' (in {spec}): 'max_length' is not of the form"),
    ({"overrides": ["trainer.max_epoch=2"]}, [],
     "unknown key 'trainer.max_epoch' (from 'sweep.overrides[0]' in {spec})"),
    ({"variants": {"a": {"recipe": []}}}, [], "key 'sweep.variants.a.recipe' (in {spec}): unknown key"),
    ({"variants": {"a b": {}}}, [], "key 'sweep.variants.a b' (in {spec}): a variant name"),
    ({"variants": {"a": {"overrides": ["data.layout=zigzag"]}}}, [],
     "key 'data.layout'"),
    ({"grid": {"data.data_fraction": 0.5}}, [], "key 'sweep.grid' (in {spec}): 'data.data_fraction' must be a non-empty list"),
    ({"grid": {"data.data_fraction": [0.5, 2.0]}}, [],
     "variant 'alpha_umi-data_fraction_2.0': invalid recipe:\n  key 'data.data_fraction': 2.0 is greater than the maximum of 1 "
     "(from 'sweep.grid.data.data_fraction' in {spec})"),
    ({"evaluate": {"refs": "x"}}, [], "key 'sweep.evaluate' (in {spec}): unknown key 'refs'"),
    ({"evaluate": {"references": None}}, [], "variant 'alpha_umi': evaluation is enabled but no test set "
                                             "is given: set 'references' (key 'sweep.evaluate' (in {spec}))"),
    ({"evaluate": {"enabled": "yes"}}, [], "key 'sweep.evaluate.enabled' (in {spec}): true or false"),
    ({"evaluate": {"references": "nope.json"}}, [], "key 'sweep.evaluate.references' (in {spec}): file not found"),
    ({"report": {"wandb": {"mode": "cloud"}}}, [], "key 'sweep.report.wandb.mode' (in {spec})"),
    ({}, ["sweep.evaluate.limit=0"], "key 'sweep.evaluate.limit' (in the command line): must be a positive integer"),
    ({}, ["sweep.runs_dir=null", "run.dir=/tmp/same"], "would share the run directory"),
    ({}, ["trainer.max_epoch=2"], "unknown key 'trainer.max_epoch' (from command line)"),
])
def test_spec_errors_name_the_key_and_file(tmp_path, change, args, message):
    spec = write_spec(tmp_path / "bad.yaml", **change)
    with pytest.raises(SweepError) as err:
        load_sweep(spec, args)
    assert message.format(spec=spec) in str(err.value)


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
    """Stand-ins for run_recipe and evaluate_run: stage folders with a CSV log and DONE.json, and
    metrics that grow with the data fraction (Rouge-L undefined for `no_rouge` variants)."""

    def __init__(self, fail=(), interrupt=()):
        self.trained, self.evaluated = [], []
        self.fail, self.interrupt = set(fail), set(interrupt)

    def run_recipe(self, recipe, only=None):
        from core.recipe import redact, to_yaml
        from pipeline.sweep import enabled_stages
        run_dir = Path(recipe["run"]["dir"])
        name = run_dir.name
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "recipe.yaml").write_text(to_yaml(redact(recipe)))
        if any(name.startswith(f) for f in self.interrupt):
            raise KeyboardInterrupt
        if any(name.startswith(f) for f in self.fail):
            raise RuntimeError("CUDA out of memory (pretend)")
        ran = []
        for stage in enabled_stages(recipe):
            sdir = run_dir / stage
            if (sdir / "DONE.json").exists():
                continue
            role = recipe["stages"][stage]["role"]
            (sdir / "logs").mkdir(parents=True, exist_ok=True)
            kinds = {"planner": ["thought"], "caller": ["action"], "summarizer": ["answer"]}.get(
                role, ["thought", "action", "answer"])
            cols = ["epoch", "step", "train/loss"] + [f"train/loss_{k}" for k in kinds] + ["val/loss"]
            lines = [",".join(cols)]
            for step in range(6):
                vals = [3.0 - 0.2 * step + 0.1 * i for i in range(len(kinds))]
                lines.append(",".join(["0", str(step), f"{3 - 0.2 * step:.3f}"] + [f"{v:.3f}" for v in vals] + [""]))
            lines.append(",".join(["0", "5", "", *([""] * len(kinds)), "2.5"]))
            (sdir / "logs" / "metrics.csv").write_text("\n".join(lines) + "\n")
            (sdir / "DONE.json").write_text(json.dumps({"stage": stage, "role": role}))
            ran.append(stage)
        self.trained.append(name)
        return ran

    def evaluate_run(self, recipe, cfg):
        run_dir = Path(recipe["run"]["dir"])
        frac = recipe["data"]["data_fraction"]
        name = run_dir.name
        single = name.startswith("single")
        m = {"plan_acc": 40 * frac + 10 * (not single), "act_em": 30 * frac, "hallu": 5 / frac,
             "arg_f1": 20 * frac, "rouge_l": None if "no_rouge" in name else 15 * frac, "n_steps": 12,
             "counts": {"reference": {"call": 9, "finish": 0 if "no_rouge" in name else 2, "give_up": 1}},
             "inference": {"mode": "single" if single else "alpha_umi", "references": cfg["references"],
                           "limit": cfg.get("limit"), "decoding": {"do_sample": False,
                                                                   "max_new_tokens": cfg.get("max_new_tokens")}}}
        (run_dir / "eval").mkdir(parents=True, exist_ok=True)
        (run_dir / "eval" / "metrics.json").write_text(json.dumps(m))
        self.evaluated.append(name)
        return {"mode": m["inference"]["mode"], "metrics": m}


@pytest.fixture
def fake(monkeypatch):
    import evaluation.static_inference as si
    import pipeline.stage_runner as sr

    backend = FakeBackend()
    monkeypatch.setattr(sr, "run_recipe", lambda recipe, only=None: backend.run_recipe(recipe, only))
    monkeypatch.setattr(si, "evaluate_run", lambda recipe, cfg: backend.evaluate_run(recipe, cfg))
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
    assert all(c.startswith("–[^") for c in rows["single_no_rouge-data_fraction_1.0"][1:])
    assert rows["single_no_rouge-data_fraction_0.5"][5].startswith("–[^")
    assert all(not c.startswith("–") for c in rows["alpha_umi-data_fraction_0.5"][1:])
    assert "the run failed (RuntimeError: CUDA out of memory (pretend))" in md
    assert "undefined: no reference step is a conclusion (finish)" in md
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


def test_report_only_trains_nothing(tmp_path, fake):
    spec = fraction_spec(tmp_path)
    out = tmp_path / "out"
    assert main([str(spec), f"sweep.out={out}", "--report-only"]) == 0
    assert fake.trained == [] and fake.evaluated == []
    rows = table_rows((out / "report.md").read_text())
    assert len(rows) == 4 and all(c.startswith("–[^1]") for r in rows for c in r[1:])
    assert "not evaluated yet (status: pending)" in (out / "report.md").read_text()
    assert "Figure 4" not in (out / "report.md").read_text()


def test_report_ood_columns_and_blank_notes(tmp_path):
    from evaluation.report import write_report
    runs = []
    for name, ood in (("a", True), ("b", False)):
        d = tmp_path / name / "eval"
        d.mkdir(parents=True)
        m = {k: 10.0 for k in METRIC_KEYS} | {"n_steps": 4}
        (d / "metrics.json").write_text(json.dumps(m))
        if ood:
            (d / "metrics_ood.json").write_text(json.dumps(m | {"rouge_l": None}))
        runs.append({"name": name, "run_dir": str(tmp_path / name)})
    paths = write_report(runs, tmp_path / "rep", title="T")
    md = Path(paths["markdown"]).read_text()
    assert "Plan ACC (OOD)" in md and "no out-of-domain evaluation for this run" in md
    rows = {r[0]: r for r in table_rows(md)}
    assert rows["a"][10].startswith("–[^") and all(c.startswith("–[^") for c in rows["b"][6:])
    data = json.loads(Path(paths["json"]).read_text())
    assert len(data["blank_cells"]) == 6 and len(data["footnotes"]) == 2
    assert_png(paths["plots"]["runs"]["a"])  # no stage logs: still a valid (annotated) figure


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
        assert all(e["metrics"][k] is not None for k in METRIC_KEYS)
        saved = OmegaConf.load(run / "recipe.yaml")
        assert saved.run.name == saved.run.group == f"quickstart-ablations/{name}"
        assert (run / "eval" / "metrics.json").is_file()
    stages = {n: sorted(p.parent.name for p in (out / "runs" / n).glob("*/DONE.json")) for n in E2E_VARIANTS}
    assert stages == {"alpha_umi": ["backbone", "caller", "planner", "summarizer"],
                      "single_llm": ["backbone"], "single_llm_multitask": ["multitask"]}
    models = {n: json.loads((out / "runs" / n / "eval/metrics.json").read_text())["inference"]
              for n in E2E_VARIANTS}
    assert models["single_llm"]["mode"] == "single"
    assert models["alpha_umi"]["mode"] == "alpha_umi"
    # the multitask model serves all three roles (with their own system prompts)
    mt = models["single_llm_multitask"]
    assert mt["mode"] == "alpha_umi"
    assert set(mt["models"].values()) == {str(out / "runs/single_llm_multitask/multitask/hf")}


def test_report_has_a_filled_row_per_variant(e2e):
    out = e2e["out"]
    md = (out / "report.md").read_text()
    rows = table_rows(md)
    assert [r[0] for r in rows] == list(E2E_VARIANTS)
    for r in rows:
        assert len(r) == 6 and all(c != "–" and float(c) >= 0 for c in r[1:])
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
