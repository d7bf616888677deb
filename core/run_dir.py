"""The on-disk layout of a run (`run.dir`). Nothing else in the code spells these names.

    recipe.yaml               the composed recipe the run was trained with (secrets redacted)
    tokenizer/                the tokenizer trained on the corpus (embedded default only)
    <stage>/checkpoints/      Lightning checkpoints (last.ckpt resumes an interrupted stage)
    <stage>/logs/metrics.csv  CSV metrics (per-span losses, lr, grad norm, tokens/s)
    <stage>/wandb/            the W&B run; <stage>/wandb_id.txt keeps its id across resumes
    <stage>/hf/               save_pretrained of model and tokenizer
    <stage>/DONE.json         written last, with the stage's start and end time: a finished stage
                              is skipped on rerun
    eval/                     predictions{,_ood}.jsonl and metrics{,_ood}.json; each metrics file
                              records when its inference started and finished (`inference.started`,
                              `inference.finished`), so nothing reads time from file mtimes;
                              episodes/<config>/ holds each `evaluate.py episodes` run
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
                     "run.check_disk_space", "data.num_workers", "data.num_proc")
EVAL_SUFFIXES = ("", "_ood")  # the in-domain and the out-of-domain test set


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
    consolidated = property(lambda self: self.path / "consolidated")
    done_file = property(lambda self: self.path / DONE_FILE)

    def is_done(self) -> bool:
        return self.done_file.is_file()

    def has_export(self) -> bool:
        return (self.export / "config.json").is_file()

    def read_done(self) -> dict | None:
        """The stage's summary (None: not finished, or unreadable)."""
        return _read_json(self.done_file)

    def write_done(self, summary: dict, started: str | None = None) -> None:
        """Mark the stage finished (atomically); `finished` is stamped now."""
        write_json_atomic(self.done_file, {**summary, "started": started, "finished": now()})

    def finished(self) -> _dt.datetime | None:
        return parse_time((self.read_done() or {}).get("finished"))


class EvalDir:
    """Static-evaluation outputs: predictions and metrics per test set (suffix "" or "_ood")."""

    def __init__(self, path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"EvalDir({str(self.path)!r})"

    def metrics_file(self, suffix: str = "") -> Path:
        return self.path / f"metrics{suffix}.json"

    def predictions_file(self, suffix: str = "") -> Path:
        return self.path / f"predictions{suffix}.jsonl"

    def gentool_metrics_file(self) -> Path:
        return self.path / "gentool_metrics.json"

    def gentool_predictions_file(self) -> Path:
        return self.path / "gentool_predictions.jsonl"

    def gentool_table_file(self) -> Path:
        return self.path / "gentool_table.md"

    def episodes(self, name: str) -> Path:
        """The folder of one `evaluate.py episodes` run (named after its config)."""
        return self.path / "episodes" / name

    def episode_metrics_files(self) -> list[Path]:
        return sorted(self.path.glob("episodes/*/metrics.json"))

    def has_metrics(self) -> bool:
        return any(self.metrics_file(s).is_file() for s in EVAL_SUFFIXES)

    def read_metrics(self, suffix: str = "") -> dict | None:
        return _read_json(self.metrics_file(suffix))

    def write_metrics(self, metrics: dict, suffix: str = "", *, started: str, finished: str) -> dict:
        """Write metrics{suffix}.json with the inference's start and end time in its `inference`
        block; returns what was written."""
        metrics = {**metrics, "inference": {**(metrics.get("inference") or {}),
                                            "started": started, "finished": finished}}
        write_text_atomic(self.metrics_file(suffix), json.dumps(metrics, indent=2) + "\n")
        return metrics

    def finished(self, suffix: str = "") -> _dt.datetime | None:
        """When the metrics file's inference finished (None: no file, or no timestamp)."""
        return parse_time(((self.read_metrics(suffix) or {}).get("inference") or {}).get("finished"))


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
