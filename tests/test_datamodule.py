"""The DataModule: splits, caching, the reuse switch, step batches and per-epoch shuffling."""
import json

import pytest
from lightning.fabric.utilities.data import _set_sampler_epoch

from conftest import CHAINS, load_template
from core.batch_plan import BatchPlan
from datamodules.tool_use_datamodule import StepBatchSampler, ToolUseDataModule

SOURCES = [{"path": str(CHAINS), "format": "alpha_umi_chains"}]


def make_dm(tokenizer, tmp_path, micro_batch_size=2, accumulation=1, **kw):
    args = dict(sources=SOURCES, role="planner", template=load_template(), tokenizer=tokenizer,
                max_length=2048, val_fraction=0.2, cache_dir=str(tmp_path), seed=42, add_bos=True,
                batch_plan=BatchPlan(micro_batch_size, accumulation, world_size=1))
    return ToolUseDataModule(**{**args, **kw})


def test_second_build_reads_the_cache(bpe_tokenizer, tmp_path, monkeypatch):
    dm = make_dm(bpe_tokenizer, tmp_path)
    dm.setup()
    first = [r["input_ids"] for r in dm.splits["train"]]
    calls = []
    import datamodules.split_writer as writer
    monkeypatch.setattr(writer, "role_view", lambda *a, **k: calls.append(1) or [])
    again = make_dm(bpe_tokenizer, tmp_path)
    again.setup()
    assert calls == [] and [r["input_ids"] for r in again.splits["train"]] == first
    # another template is another cache entry
    other = load_template()
    other["turns"]["planner"]["prefix"] = "Plan: "
    assert make_dm(bpe_tokenizer, tmp_path, template=other).cache_key() != dm.cache_key()


def test_train_and_val_are_disjoint_and_stable(bpe_tokenizer, tmp_path):
    dm = make_dm(bpe_tokenizer, tmp_path)
    splits = dm.load_split_trajectories()
    train, val = ({t["id"] for t in splits[k]} for k in ("train", "val"))
    assert train and val and not train & val and len(train | val) == 20
    assert {t["id"] for t in make_dm(bpe_tokenizer, tmp_path).load_split_trajectories()["val"]} == val


def test_without_reuse_stage_one_and_two_see_disjoint_instructions(bpe_tokenizer, tmp_path):
    parts = {p: make_dm(bpe_tokenizer, tmp_path, instruction_part=p, val_fraction=0.0).load_split_trajectories()["train"]
             for p in ("all", "global", "local")}
    g, l = ({t["instruction"] for t in parts[p]} for p in ("global", "local"))
    assert g and l and not g & l
    assert g | l == {t["instruction"] for t in parts["all"]}


def test_reference_only_records_train_only_the_caller(bpe_tokenizer, tmp_path):
    sources = SOURCES + [{"path": str(CHAINS.parents[1] / "toolalpaca" / "eval_simulated.json"),
                          "format": "toolalpaca_eval"}]
    n = {role: len(make_dm(bpe_tokenizer, tmp_path, role=role, sources=sources, val_fraction=0.0)
                   .load_split_trajectories()["train"]) for role in ("caller", "planner")}
    assert n == {"caller": 120, "planner": 20}


def test_step_batches_and_epoch_shuffling(bpe_tokenizer, tmp_path):
    dm = make_dm(bpe_tokenizer, tmp_path, accumulation=2)
    dm.setup()
    loader = dm.train_dataloader()
    step = next(iter(loader))
    assert isinstance(step, list) and len(step) == 2 and step[0]["input_ids"].shape[0] == 2
    order = lambda: [i for chunk in loader.batch_sampler for i in chunk]
    epoch0 = order()
    _set_sampler_epoch(loader, 1)  # what Lightning's fit loop calls at each epoch
    assert sorted(order()) == sorted(epoch0) and order() != epoch0


@pytest.mark.parametrize("world", [1, 2, 3])
def test_every_rank_gets_the_same_number_of_steps(world):
    lengths = list(range(1, 12))
    per_rank = [list(StepBatchSampler(lengths, BatchPlan(2, 1, world), r, seed=0, group_by_length=True)) for r in range(world)]
    assert len({len(p) for p in per_rank}) == 1
    seen = sorted(i for p in per_rank for chunk in p for i in chunk if i >= 0)
    assert seen == list(range(len(lengths)))


def test_malformed_source_error_names_the_file(bpe_tokenizer, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"tools": [], "instruction": "x"}]))
    dm = make_dm(bpe_tokenizer, tmp_path, sources=[{"path": str(bad), "format": "alpha_umi_chains"}])
    with pytest.raises(ValueError, match="bad.json"):
        dm.setup()


def test_parallel_build_writes_the_same_rows_and_stats(bpe_tokenizer, tmp_path, monkeypatch):
    import datamodules.split_writer as writer
    monkeypatch.setattr(writer, "MAP_BATCH", 3)  # several map batches, so two processes share them
    one = make_dm(bpe_tokenizer, tmp_path / "one", layout="per_step", role="caller")
    two = make_dm(bpe_tokenizer, tmp_path / "two", layout="per_step", role="caller", num_proc=2)
    a, b = one.build_splits(), two.build_splits()
    for split in ("train", "val"):
        assert a[split].to_list() == b[split].to_list() and len(a[split]) > 3
    assert one.stats == two.stats and one.stats["train"]["examples"] > 0


@pytest.mark.parametrize("global_batch", [(2, 3), (3, 1)])
def test_examples_per_step_do_not_depend_on_packing(bpe_tokenizer, tmp_path, global_batch):
    micro, accumulate = global_batch
    per_step = {}
    for packing in (False, True):
        dm = make_dm(bpe_tokenizer, tmp_path, role="caller", layout="per_step", micro_batch_size=micro,
                     accumulation=accumulate, packing={"enabled": packing, "max_tokens": 4096})
        dm.setup()
        steps = list(dm.train_dataloader())
        per_step[packing] = [sum(b["num_examples"] for b in step) for step in steps]
        assert len(steps) == len(dm.train_dataloader())  # what the LR schedule counts
    assert per_step[True] == per_step[False]
    assert set(per_step[True][:-1]) == {micro * accumulate} and sum(per_step[True]) == len(dm.splits["train"])
    rows = make_dm(bpe_tokenizer, tmp_path, role="caller", layout="per_step", micro_batch_size=micro,
                   accumulation=accumulate, batch_unit="rows",
                   packing={"enabled": True, "max_tokens": 4096})
    rows.setup()
    # the documented alternative: a step is micro_batch_size x accumulation packed rows
    assert max(sum(b["num_examples"] for b in step) for step in rows.train_dataloader()) > micro * accumulate
