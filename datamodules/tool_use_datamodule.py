"""The Lightning DataModule: sources -> canonical trajectories -> one role's tokenized examples.

Tokenized splits are cached with `datasets` under a hash of the sources, the template, the
tokenizer and the settings, so a second run (or the next stage on the same data) skips the work.
Each training step receives the list of its micro-batches (see SpanLMModule).
"""
from __future__ import annotations

import hashlib
import json
import math
import shutil
import sys
from pathlib import Path
from dataclasses import replace
from typing import Literal, Mapping, Sequence

import lightning as L
from datasets import Dataset
from torch.utils.data import DataLoader

from core.batch_plan import BatchPlan
from core.context_budget import ContextBudget
from core.dir_lock import DirLock
from core.errors import DataError
from core.repo_paths import resolve_data_path
from core.stable_split import stable_fraction
from core.vocabulary import GENTOOL_ROLES, MULTITASK, TEAM_ROLES
from prompting.prompt_template import PromptTemplate
from prompting.selection_template import SelectionTemplate
from trajectories.selection import is_selection_record
from trajectories.sources import LoadResult, iter_trajectories
from .data_report import no_examples_message, skip_lines
from .resumable import StepLoader
from .views import Layout
from .split_writer import RoleViews, load_cache, write_splits
from .optimizer_steps import Rows, StepBatchSampler, StepCollator

CACHE_VERSION = 3  # 2: a split is the Arrow files its map wrote (split_writer); 3: whole-text tokens
# Which instructions a stage trains on: all, or one of two disjoint halves (stage 1 "global",
# stage 2 "local": the paper's "without reuse" ablation).
InstructionPart = Literal["all", "global", "local"]


def file_digest(path: str | Path) -> str:
    path = Path(path)
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    h = hashlib.sha256()
    for p in files:
        with open(p, "rb") as fh:
            while chunk := fh.read(1 << 20):
                h.update(chunk)
    return h.hexdigest()


def tokenizer_fingerprint(tokenizer) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    text = backend.to_str() if backend is not None else json.dumps(tokenizer.get_vocab(), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


class ToolUseDataModule(L.LightningDataModule):
    """Settings arrive checked (core/validation.py): the recipe schema, this signature and the
    cross-key rules. `batch_plan` (core/batch_plan.py) is built by the stage runner from
    data.micro_batch_size and data.global_batch_size; without one (reading trajectories only)
    there are no loaders."""

    def __init__(self, sources: Sequence[Mapping], role: str, template: Mapping, tokenizer=None, *,
                 seed: int, add_bos: bool, batch_plan: BatchPlan | None = None,
                 layout: Layout = "folded", max_length: int = 4096, val_fraction: float = 0.1,
                 instruction_part: InstructionPart = "all", data_fraction: float = 1.0,
                 group_by_length: bool = True, cache_dir: str = ".cache/datasets", num_workers: int = 0,
                 num_proc: int | None = None, packing: dict | None = None,
                 batch_unit: Literal["examples", "rows"] = "examples", trajectory_role: str | None = None,
                 context_reserve: int | None = None, max_prefix_failure_share: float = 0.01):
        super().__init__()
        self.sources = [dict(s) for s in sources]
        self.role, self.layout = role, layout
        # "multitask": one model on the union of the three team roles' datasets (a Single-LLM ablation)
        self.roles = TEAM_ROLES if role == MULTITASK else (role,)
        self.template_node = dict(template)
        self.template = PromptTemplate(template)
        # GenTool stages read tool-selection examples through `template.gentool`; trajectories
        # mixed into such a stage are trained with the view of `trajectory_role` (e.g. backbone).
        self.selection_template = SelectionTemplate(template["gentool"]) if template.get("gentool") else None
        self.trajectory_role = trajectory_role
        if role in GENTOOL_ROLES and self.selection_template is None:
            raise ValueError(f"role {role}: the recipe's template has no 'gentool' node "
                             "(add template/gentool to its defaults)")
        self.tokenizer = tokenizer
        self.max_length, self.plan = max_length, batch_plan
        # One budget for training rows and inference prompts (core/context_budget.py).
        self.budget = ContextBudget.of(max_length, context_reserve)
        self.val_fraction, self.instruction_part = val_fraction, instruction_part
        self.data_fraction, self.group_by_length = data_fraction, group_by_length
        self.add_bos, self.seed = add_bos, seed
        self.cache_dir, self.num_workers = Path(cache_dir), num_workers
        self.num_proc = num_proc  # processes that tokenize when the cache is built
        # Packing: {enabled, max_tokens (null: max_length), rows_per_micro_batch}; see packed_optimizer_steps.
        packing = dict(packing or {})
        self.packing = packing.get("enabled", False)
        self.pack_max_tokens = packing.get("max_tokens") or max_length
        self.pack_rows = packing.get("rows_per_micro_batch", 1)
        # What global_batch_size (micro_batch_size x accumulation x world size) counts when packing:
        # "examples" (as without packing, as in the paper) or "rows" (packed rows).
        self.batch_unit = batch_unit
        # Refuse a split where more than this share of targets has a prompt that is not a token
        # prefix of its row (the tokenizer merges across the prompt's end; see prompting/text_encoder).
        self.max_prefix_failure_share = max_prefix_failure_share
        self.stats: dict = {}
        self.splits: dict[str, Dataset] = {}

    # ----- trajectories ----------------------------------------------------------------------
    def source_paths(self) -> list[tuple[dict, Path]]:
        out = []
        for src in self.sources:
            if "path" not in src:
                raise DataError(f"data source {src}: no path (a simulator source is built by the stage "
                                 "runner, pipeline.stage_setup.build_datamodule)")
            out.append((src, resolve_data_path(src["path"])))
        return out

    def load_split_trajectories(self) -> dict[str, list[dict]]:
        """Train/val split by a hash of each trajectory id; the stage's instruction part and data
        fraction are taken from the training split only."""
        splits = {"train": [], "val": []}
        for name, traj in self.iter_split_trajectories():
            splits[name].append(traj)
        return splits

    def iter_split_trajectories(self):
        """(split name, trajectory) for every kept trajectory, streamed from the sources in order;
        per-source counts go to `self.stats["sources"]`."""
        self.stats["sources"] = []
        for src, path in self.source_paths():
            res = LoadResult(path=path, format=src.get("format", "auto"))
            loaded = 0
            for traj in iter_trajectories(path, res.format, src.get("on_error", "raise"), res):
                loaded += 1
                name = self._split_of(traj, path)
                if name is not None:
                    yield name, traj
            self.stats["sources"].append({"path": str(path), "loaded": loaded,
                                          "skipped": res.skipped, "skip_reasons": dict(res.skip_reasons)})

    def _split_of(self, traj: dict, path: Path) -> str | None:
        self._check_record_fits(traj, path)
        views = (self.trajectory_role,) if self.role in GENTOOL_ROLES else self.roles
        if traj.get("meta", {}).get("reference_only") and "caller" not in views:
            return None  # golden call sequences have no thoughts or answers: caller data only
        if stable_fraction(traj["id"], f"val{self.seed}") < self.val_fraction:
            return "val"
        if self.instruction_part != "all":
            # Without reuse, stage 1 ("global") and stage 2 ("local") see disjoint instructions.
            want_global = self.instruction_part == "global"
            instruction = traj.get("instruction") or traj["query"]
            if (stable_fraction(instruction, f"part{self.seed}") < 0.5) != want_global:
                return None
        if self.data_fraction < 1.0 and stable_fraction(traj["id"], f"frac{self.seed}") >= self.data_fraction:
            return None
        return "train"

    def _check_record_fits(self, record: dict, path: Path) -> None:
        gentool = self.role in GENTOOL_ROLES
        if is_selection_record(record) and not gentool:
            raise DataError(f"{path}: holds tool-selection examples, which only GenTool roles "
                            f"({', '.join(GENTOOL_ROLES)}) train, not role {self.role}")
        if gentool and not is_selection_record(record) and not self.trajectory_role:
            raise DataError(f"{path}: holds trajectories; a GenTool stage ({self.role}) trains them "
                            "only with data.trajectory_role set (e.g. backbone)")

    def role_views(self) -> RoleViews:
        return RoleViews(self.template, self.selection_template, self.roles, self.layout,
                         self.trajectory_role)

    def corpus_texts(self):
        """Rendered text of every role's view of the training data (to train a BPE tokenizer)."""
        n = 0
        for name, traj in self.iter_split_trajectories():
            if name != "train":
                continue
            n += 1
            yield from self.role_views().corpus_texts(traj)
        if not n:
            self.check_training_examples(0)

    # ----- tokenized splits --------------------------------------------------------------------
    def cache_key(self) -> str:
        parts = {"v": CACHE_VERSION, "role": self.role, "layout": self.layout,
                 "max_length": self.max_length, "reserve": self.budget.reserve,
                 "template": self.template_node,
                 "tokenizer": tokenizer_fingerprint(self.tokenizer), "bos": self.add_bos,
                 "val_fraction": self.val_fraction, "part": self.instruction_part,
                 "fraction": self.data_fraction, "seed": self.seed,
                 "trajectory_role": self.trajectory_role,
                 "sources": [{**s, "digest": file_digest(p)} for s, p in self.source_paths()]}
        return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def build_splits(self) -> dict[str, Dataset]:
        key = self.cache_key()
        root = self.cache_dir / f"{self.role}-{self.layout}-{key}"
        cached = self._load_cached(root)
        if cached is not None:
            return cached
        # runs in other run directories share the cache: one build at a time, a second process
        # waits and then reads what the first built
        with DirLock(self.cache_dir, what="a tokenized cache build", wait=True):
            return self._load_cached(root) or self._build(root)

    def _build(self, root: Path) -> dict:
        tmp = root.with_name(root.name + ".tmp")
        if tmp.exists():
            shutil.rmtree(tmp)  # left by an interrupted build
        tmp.mkdir(parents=True)
        self.stats = {}
        split_stats = write_splits(tmp, self.iter_split_trajectories, self.role_views(), self.tokenizer,
                                   self.budget, self.add_bos, self.num_proc)
        self.stats.update(split_stats)
        if not split_stats["train"]["sequences"]:  # before anything is cached
            shutil.rmtree(tmp)
            self.check_training_examples(0)
        (tmp / "stats.json").write_text(json.dumps(self.stats, indent=1))
        if root.exists():
            shutil.rmtree(root)
        tmp.rename(root)
        return self._load_cached(root)

    def _load_cached(self, root: Path) -> dict | None:
        """The cache entry's splits (None: not built, or damaged and removed: rebuild it)."""
        cached = load_cache(root) if (root / "stats.json").exists() else None
        if cached is None:
            return None
        self.stats, splits = cached
        return splits

    def prepare_data(self):
        # Rank 0 builds the cache and keeps what it built; setup() on the other ranks reads it.
        if self.splits.get("val") is not None:  # already prepared (the stage runner checks first)
            return
        self.splits = self.build_splits()
        self.check_training_examples(len(self.splits["train"]))
        self.check_prefixes()
        self.report_skips()

    def setup(self, stage=None):
        if not self.splits:
            self.splits = self.build_splits()
            self.check_training_examples(len(self.splits["train"]))

    def check_prefixes(self):
        """Warn when a target's prompt is not a token prefix of its row; stop above the share
        `data.max_prefix_failure_share`."""
        trainer = getattr(self, "trainer", None)
        for name in ("train", "val"):
            split = self.stats.get(name) or {}
            checked, failed = split.get("prefix_checked", 0), split.get("prefix_failures", 0)
            if not failed:
                continue
            what = (f"{self.role} {name} split: {failed} of {checked} targets have a prompt (the text "
                    "before them) that does not tokenize to the tokens before them in training")
            if failed > self.max_prefix_failure_share * checked:
                raise DataError(f"{what}, more than data.max_prefix_failure_share="
                                f"{self.max_prefix_failure_share}; end the template's turn prefixes "
                                "where the tokenizer splits (a body that starts with a space)")
            if trainer is None or trainer.is_global_zero:
                print(f"warning: {what}")

    def check_training_examples(self, n_train: int):
        if n_train == 0:
            raise DataError(no_examples_message(self.role, self.stats))

    def report_skips(self):
        """Skipped records and dropped examples on the console (they are also in DONE.json)."""
        trainer = getattr(self, "trainer", None)
        if trainer is None or trainer.is_global_zero:
            for line in skip_lines(self.role, self.stats):
                print(line)

    # ----- loaders ----------------------------------------------------------------------------
    def _rank(self):
        trainer = getattr(self, "trainer", None)
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def _plan(self, split: str) -> BatchPlan:
        """The stage's plan (validation: one micro-batch per loader batch), with the micro-batch
        fitted to the split; on this trainer's world size, which the plan was built for."""
        rank, world = self._rank()
        if world != self.plan.world_size:
            raise DataError(f"the batch plan is for {self.plan.world_size} device(s) but the trainer "
                            f"runs {world}; build the DataModule with the trainer's world size")
        plan = self.plan if split == "train" else self.plan.for_validation()
        return replace(plan, micro_batch_size=self.fitted_micro_batch(len(self.splits[split]), plan, split))

    def train_dataloader(self):
        rank, _ = self._rank()
        ds = self.splits["train"]
        if self.packing:
            return self._packed_loader(ds, self.plan, rank, shuffle=True)
        plan = self._plan("train")
        sampler = StepBatchSampler([len(x) for x in ds["input_ids"]], plan, rank, self.seed, self.group_by_length)
        return self._resumed(StepLoader(Rows(ds), batch_sampler=sampler, num_workers=self.num_workers,
                                        collate_fn=StepCollator(self.pad_id, plan.micro_batch_size),
                                        steps_trained=self._steps_trained))

    def val_dataloader(self):
        rank, _ = self._rank()
        ds = self.splits["val"]
        if len(ds) == 0:
            return []
        if self.packing:
            return self._packed_loader(ds, self.plan.for_validation(), rank, shuffle=False)
        plan = self._plan("val")
        sampler = StepBatchSampler([len(x) for x in ds["input_ids"]], plan, rank, self.seed,
                                   group_by_length=True, shuffle=False)
        return DataLoader(Rows(ds), batch_sampler=sampler, num_workers=self.num_workers,
                          collate_fn=StepCollator(self.pad_id, plan.micro_batch_size))

    def fitted_micro_batch(self, n_rows: int, plan: BatchPlan, split: str) -> int:
        """micro_batch_size, or less when one step would hold more rows than the split has: the
        rest would be filler copies (zero loss), so the smaller micro-batch trains the same step
        without them (a micro-batch of 5000 on 20 examples would otherwise allocate 5000 rows)."""
        fitted = max(1, math.ceil(n_rows / (plan.accumulation * plan.world_size)))
        if plan.micro_batch_size <= fitted:
            return plan.micro_batch_size
        trainer = getattr(self, "trainer", None)
        if split == "train" and (trainer is None or trainer.is_global_zero):  # validation: no steps to keep
            print(f"[data] warning: data.micro_batch_size={plan.micro_batch_size} is larger than the "
                  f"{split} split allows ({n_rows} sequences, {plan.accumulation} micro-batch(es) per step on "
                  f"{plan.world_size} device(s)); using {fitted}: the same steps without filler rows",
                  file=sys.stderr)
        return fitted

    # The training loader's position, saved in every checkpoint through the DataModule's state (the
    # loader's own state, which Lightning also saves, is restored only if the loader is built after
    # the checkpoint is loaded; it is built earlier, to count the scheduler's steps).
    def state_dict(self) -> dict:
        loader = getattr(self, "_train_loader", None)
        return {"train_loader": loader.state_dict()} if loader is not None and self.trainer else {}

    def load_state_dict(self, state: dict) -> None:
        self._loader_state = state.get("train_loader")

    def _resumed(self, loader: StepLoader) -> StepLoader:
        if getattr(self, "_loader_state", None):
            loader.load_state_dict(self._loader_state)
            self._loader_state = None
        self._train_loader = loader
        return loader

    def _steps_trained(self) -> int:
        """Optimizer steps finished in the current epoch (the loader's position in a checkpoint)."""
        return self.trainer.fit_loop.epoch_loop.batch_progress.current.processed

    def _packed_loader(self, ds, plan: BatchPlan, rank: int, shuffle: bool):
        from .packed_optimizer_steps import PackedRows, PackedStepCollator, PackedStepSampler
        per_step = plan.examples_per_step if self.batch_unit == "examples" else None
        sampler = PackedStepSampler([len(x) for x in ds["input_ids"]], self.pack_max_tokens, self.pack_rows,
                                    plan, rank, self.seed, shuffle=shuffle, examples_per_step=per_step)
        if not shuffle:
            return DataLoader(PackedRows(ds), batch_sampler=sampler, num_workers=self.num_workers,
                              collate_fn=PackedStepCollator(self.pad_id))
        return self._resumed(StepLoader(PackedRows(ds), batch_sampler=sampler, num_workers=self.num_workers,
                                        collate_fn=PackedStepCollator(self.pad_id),
                                        steps_trained=self._steps_trained))

    @property
    def pad_id(self) -> int:
        tok = self.tokenizer
        return tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
