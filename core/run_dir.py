"""The on-disk layout of a run (`run.dir`). Nothing else in the code spells these names.

    .lock                     held (core.dir_lock) while a stage trains or evaluates: its PID and host
    recipe.yaml               the composed recipe the run was trained with (secrets redacted)
    tokenizer/                the tokenizer trained on the corpus (embedded default only)
    <stage>/checkpoints/      Lightning checkpoints (last.ckpt resumes an interrupted stage)
    <stage>/logs/metrics.csv  CSV metrics (per-span losses, lr, grad norm, tokens/s)
    <stage>/wandb/            the W&B run; <stage>/wandb_id.txt keeps its id across resumes
    <stage>/hf/               save_pretrained of model and tokenizer
    <stage>/adapter/          an adapter stage's adapter (PEFT format, its adapter_config.json
                              naming the base export) and tokenizer; hf/ then holds the merged
                              model, when asked for
    <stage>/DONE.json         written last, with the stage's start and end time: a finished stage
                              is skipped on rerun
    eval/<test set>/          metrics.json and predictions.jsonl per test set (EvalDir); each
                              metrics file records when its inference started and finished
                              (`inference.started`, `inference.finished`), so nothing reads time
                              from file mtimes; episodes/ holds `evaluate.py episodes` on the set
"""
from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path

from core.atomic_files import write_json_atomic, write_text_atomic

RECIPE_FILE = "recipe.yaml"
DONE_FILE = "DONE.json"
# Recipe keys that do not change what a stage trains: a finished stage stays valid when they change.
NOT_TRAINING_KEYS = ("logger", "telemetry", "evaluate", "run.group", "run.name", "run.dir",
                     "run.check_disk_space", "data.num_workers", "data.num_proc", "data.cache_dir")


def now() -> str:
    """A timestamp for the layout's records: UTC, ISO 8601, microseconds (sorts as text)."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="microseconds")


def parse_time(stamp) -> _dt.datetime | None:
    try:
        t = _dt.datetime.fromisoformat(stamp) if isinstance(stamp, str) else None
    except ValueError:
        return None
    return t.replace(tzinfo=_dt.timezone.utc) if t is not None and t.tzinfo is None else t


def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


class StageDir:
    """One stage's folder: its checkpoints, logs, W&B run, export and DONE marker."""

    def __init__(self, path):
        self.path = Path(path)
        self.name = self.path.name

    def __repr__(self) -> str:
        return f"StageDir({str(self.path)!r})"

    checkpoints = property(lambda self: self.path / "checkpoints")
    last_checkpoint = property(lambda self: self.checkpoints / "last.ckpt")
    logs = property(lambda self: self.path / "logs")
    csv_log = property(lambda self: self.logs / "metrics.csv")
    wandb = property(lambda self: self.path / "wandb")
    wandb_run_id_file = property(lambda self: self.path / "wandb_id.txt")
    export = property(lambda self: self.path / "hf")
    adapter = property(lambda self: self.path / "adapter")
    consolidated = property(lambda self: self.path / "consolidated")
    done_file = property(lambda self: self.path / DONE_FILE)

    def is_done(self) -> bool:
        return self.done_file.is_file()

    def has_export(self) -> bool:
        return (self.export / "config.json").is_file()

    def has_adapter(self) -> bool:
        return (self.adapter / "adapter_config.json").is_file()

    def model_export(self) -> Path | None:
        """What evaluation loads for this stage: its adapter (on its base) if it has one, else its
        full export, else None."""
        return self.adapter if self.has_adapter() else self.export if self.has_export() else None

    def read_done(self) -> dict | None:
        """The stage's summary (None: not finished, or unreadable)."""
        return _read_json(self.done_file)

    def write_done(self, summary: dict, started: str | None = None) -> None:
        """Mark the stage finished (atomically); `finished` is stamped now."""
        write_json_atomic(self.done_file, {**summary, "started": started, "finished": now()})

    def finished(self) -> _dt.datetime | None:
        return parse_time((self.read_done() or {}).get("finished"))


class EvalDir:
    """Evaluation outputs, one folder per test set, named for what the set is (the recipe's
    `evaluate.test_sets` keys: held-in, out-of-domain, unseen-apis, or a test file's own name):

        <test set>/metrics.json         step metrics (teacher-forced), with the inference's times
        <test set>/predictions.jsonl    one prediction per agent step
        <test set>/episodes/            `evaluate.py episodes` on the set: episodes.jsonl,
                                        metrics.json (pass rates), summary.json
        gentool_metrics.json, gentool_predictions.jsonl, gentool_table.md   (GenTool's task)
    """

    def __init__(self, path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"EvalDir({str(self.path)!r})"

    def test_set(self, name: str) -> Path:
        return self.path / name

    def metrics_file(self, name: str) -> Path:
        return self.test_set(name) / "metrics.json"

    def predictions_file(self, name: str) -> Path:
        return self.test_set(name) / "predictions.jsonl"

    def episodes(self, name: str) -> Path:
        """The folder of `evaluate.py episodes` on test set `name`."""
        return self.test_set(name) / "episodes"

    def episode_metrics_file(self, name: str) -> Path:
        return self.episodes(name) / "metrics.json"

    def test_sets(self) -> list[str]:
        """Names of the test sets with step or episode metrics here, in the order their first
        metrics were written."""
        found = {}
        for f in (*self.path.glob("*/metrics.json"), *self.path.glob("*/episodes/metrics.json")):
            name = f.relative_to(self.path).parts[0]
            stamp = ((_read_json(f) or {}).get("inference") or {}).get("started") or ""
            found[name] = min(found.get(name, stamp), stamp)
        return sorted(found, key=lambda n: (found[n], n))

    def gentool_metrics_file(self) -> Path:
        return self.path / "gentool_metrics.json"

    def gentool_predictions_file(self) -> Path:
        return self.path / "gentool_predictions.jsonl"

    def gentool_table_file(self) -> Path:
        return self.path / "gentool_table.md"

    def read_metrics(self, name: str) -> dict | None:
        return _read_json(self.metrics_file(name))

    def read_episode_metrics(self, name: str) -> dict | None:
        return _read_json(self.episode_metrics_file(name))

    def write_metrics(self, metrics: dict, name: str, *, started: str, finished: str) -> dict:
        """Write test set `name`'s step metrics with the inference's start and end time in their
        `inference` block; returns what was written."""
        metrics = {**metrics, "inference": {**(metrics.get("inference") or {}),
                                            "started": started, "finished": finished}}
        write_text_atomic(self.metrics_file(name), json.dumps(metrics, indent=2) + "\n")
        return metrics

    def finished(self, name: str) -> _dt.datetime | None:
        """When test set `name`'s inference finished (None: no metrics, or no timestamp)."""
        return parse_time(((self.read_metrics(name) or {}).get("inference") or {}).get("finished"))


class RunDir:
    """A run directory: the saved recipe, the tokenizer, one StageDir per stage, the eval folder."""

    def __init__(self, path):
        self.path = Path(path)

    @classmethod
    def of(cls, recipe: dict) -> "RunDir":
        return cls(recipe["run"]["dir"])

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    recipe_file = property(lambda self: self.path / RECIPE_FILE)
    tokenizer = property(lambda self: self.path / "tokenizer")

    def lock(self, what: str = "training"):
        """The run's lock: `with run_dir.lock():` stops with one line naming the holder when
        another process trains or evaluates here."""
        from core.dir_lock import DirLock
        return DirLock(self.path, what=f"{what} of {self.path}")

    def stage(self, name: str) -> StageDir:
        return StageDir(self.path / name)

    def eval(self, out_dir=None) -> EvalDir:
        """The evaluation folder (`out_dir` when the recipe's `evaluate.out_dir` moves it)."""
        return EvalDir(out_dir if out_dir else self.path / "eval")

    @classmethod
    def owning_eval(cls, path) -> "RunDir | None":
        """The run whose default eval folder `path` is (None: `path` is not one)."""
        path = Path(path)
        run = cls(path.parent)
        return run if run.eval().path.name == path.name else None

    def save_recipe(self, text: str) -> None:
        write_text_atomic(self.recipe_file, text)

    def load_recipe(self) -> dict | None:
        """The saved recipe as a dict (None: none saved). Raises ValueError when unreadable."""
        if not self.recipe_file.is_file():
            return None
        from omegaconf import OmegaConf
        try:
            data = OmegaConf.to_container(OmegaConf.load(self.recipe_file), resolve=True)
        except Exception as exc:  # noqa: BLE001 - yaml or interpolation errors
            raise ValueError(f"{self.recipe_file}: {exc}") from None
        return data if isinstance(data, dict) else None

    def recipe_drift(self, recipe: dict) -> list[str]:
        """Keys (dotted) where `recipe` differs from the saved one in what it trains."""
        from core.secrets import redact
        try:
            old = self.load_recipe()
        except ValueError:
            return [f"{self.recipe_file.name} (unreadable)"]
        if old is None:
            return []
        diffs: list[str] = []

        def walk(a, b, path):
            if isinstance(a, dict) and isinstance(b, dict):
                for k in sorted(set(a) | set(b), key=str):
                    walk(a.get(k), b.get(k), f"{path}.{k}" if path else str(k))
            elif a != b and not any(path == p or path.startswith(p + ".") for p in NOT_TRAINING_KEYS):
                diffs.append(path)

        walk(old, redact(recipe), "")
        return diffs

    def done_stages(self) -> list[StageDir]:
        """Stage folders holding a DONE marker, by name."""
        return [StageDir(p.parent) for p in sorted(self.path.glob(f"*/{DONE_FILE}"))]

    def logged_stages(self) -> list[StageDir]:
        """Stage folders holding a CSV log, by name."""
        return [StageDir(p.parent.parent) for p in sorted(self.path.glob("*/logs/metrics.csv"))]

    def has_trace(self, stages) -> bool:
        """Anything of the run on disk: a finished stage among `stages`, or the saved recipe."""
        return self.recipe_file.is_file() or any(self.stage(n).is_done() for n in stages)
