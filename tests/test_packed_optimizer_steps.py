import csv
import math
import random

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from conftest import QUICKSTART
from core.batch_plan import BatchPlan
from datamodules.packed_optimizer_steps import PackedKey, PackedRows, PackedStepCollator, PackedStepSampler
from datamodules.packing import best_fit_decreasing, pack_examples
from datamodules.optimizer_steps import pad_batch
from lightning_modules.packed_attention import segment_ids
from lightning_modules.span_lm_module import SpanLMModule
from lightning_modules.span_loss import forward_hidden, shift_labels, sparse_span_loss
from core.run_dir import RunDir

VOCAB, PAD = 97, 0


def _example(n, seed):
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(1, VOCAB, (n,), generator=g)
    labels[: max(1, n // 2)] = -100  # BOS/context first, as the tokenizer side produces
    kinds = torch.where(labels != -100, torch.randint(1, 4, (n,), generator=g), 0)
    return {"input_ids": torch.randint(1, VOCAB, (n,), generator=g).tolist(),
            "labels": labels.tolist(), "span_kinds": kinds.tolist()}


def _examples(lengths):
    return [_example(n, i) for i, n in enumerate(lengths)]


def _lengths(n, seed, lo=3, hi=30):
    rng = random.Random(seed)
    return [rng.randint(lo, hi) for _ in range(n)]


def _loader_steps(exs, sampler, pad_to=None):
    """What a DataLoader with this batch sampler and collator yields, without the DataLoader."""
    ds, collate = PackedRows(exs), PackedStepCollator(PAD, pad_to)
    return [collate(ds.__getitems__(keys)) for keys in sampler]


# ----- sampler --------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(5))
def test_best_fit_decreasing_matches_pack_examples(seed):
    lengths = _lengths(40, seed)
    exs = [{"input_ids": [1] * n, "labels": [-100] * n} for n in lengths]
    order = list(range(len(lengths)))
    random.Random(seed).shuffle(order)
    ref = pack_examples([exs[i] for i in order], max_len=32)
    bins = best_fit_decreasing(lengths, 32, order)
    assert bins == [[order[j] for j in r["example_ids"]] for r in ref]
    assert len(best_fit_decreasing(lengths, 32)) == len(bins)  # row count independent of order


def test_best_fit_decreasing_rejects_too_long():
    with pytest.raises(ValueError, match="max_tokens=10"):
        best_fit_decreasing([3, 11, 2], 10)


@pytest.mark.parametrize("world", [1, 2, 3, 4])
@pytest.mark.parametrize("rows,accumulate", [(1, 1), (2, 3), (3, 2)])
@pytest.mark.parametrize("n", [1, 7, 50])
def test_ranks_equal_steps_and_every_example_once(world, rows, accumulate, n):
    lengths = _lengths(n, seed=n + world)
    for epoch in (0, 1):
        seen, steps, shapes = [], set(), set()
        for rank in range(world):
            sampler = PackedStepSampler(lengths, 32, rows, BatchPlan(1, accumulate, world), rank, seed=3)
            sampler.set_epoch(epoch)
            out = list(sampler)
            assert len(out) == len(sampler) > 0
            steps.add(len(out))
            for keys in out:
                micro = {k.micro for k in keys}
                assert micro == set(range(accumulate))  # every step: `accumulate` micro-batches
                shapes.add(len(micro))
                for m in micro:
                    assert len({k.row for k in keys if k.micro == m}) <= rows
                    for r in {k.row for k in keys if k.micro == m}:
                        assert sum(lengths[k.index] for k in keys if (k.micro, k.row) == (m, r)) <= 32
                seen += [k.index for k in keys if not k.filler]
        assert len(steps) == 1 and len(shapes) == 1
        assert sorted(seen) == list(range(n))  # exactly once per epoch across ranks


@pytest.mark.parametrize("world", [1, 2, 3])
@pytest.mark.parametrize("per_step", [1, 5, 12])
def test_examples_unit_fixed_examples_per_step(world, per_step):
    lengths = _lengths(50, seed=world)
    plans = [list(PackedStepSampler(lengths, 32, 2, BatchPlan(1, 1, world), rank, seed=3,
                                    examples_per_step=per_step)) for rank in range(world)]
    assert {len(p) for p in plans} == {math.ceil(50 / per_step)}  # as many steps as unpacked
    seen = []
    for s in range(len(plans[0])):
        real = [k.index for p in plans for k in p[s] if not k.filler]
        assert len(real) == min(per_step, 50 - s * per_step)  # every step: per_step examples
        assert len({len({k.micro for k in p[s]}) for p in plans}) == 1  # same micro-batches per rank
        seen += real
    assert sorted(seen) == list(range(50))


def test_epochs_reshuffle_and_are_deterministic():
    lengths = _lengths(60, seed=1)
    a = PackedStepSampler(lengths, 40, 2, BatchPlan(1, 1, 1), 0, seed=5)
    b = PackedStepSampler(lengths, 40, 2, BatchPlan(1, 1, 1), 0, seed=5)
    assert list(a) == list(b)
    first = list(a)
    a.set_epoch(1)
    assert list(a) != first and len(list(a)) == len(first)


def test_lightning_sets_the_epoch():
    from lightning.fabric.utilities.data import _set_sampler_epoch
    from torch.utils.data import DataLoader
    sampler = PackedStepSampler(_lengths(20, seed=4), 32, 2, BatchPlan(1, 1, 1), 0, seed=0)
    loader = DataLoader(PackedRows(_examples(_lengths(20, seed=4))), batch_sampler=sampler,
                        collate_fn=PackedStepCollator(PAD))
    _set_sampler_epoch(loader, 3)  # what Lightning's fit loop calls at each epoch start
    assert sampler.epoch == 3
    assert len(list(loader)) == len(sampler)


def test_val_sampler_keeps_order_and_fills_nothing_for_one_rank():
    lengths = _lengths(9, seed=2)
    keys = [k for step in PackedStepSampler(lengths, 32, 1, BatchPlan(1, 1, 1), 0, seed=0, shuffle=False) for k in step]
    assert not any(k.filler for k in keys)
    assert keys == [k for step in PackedStepSampler(lengths, 32, 1, BatchPlan(1, 1, 1), 0, seed=0, shuffle=False)
                    for k in step]


# ----- collator -------------------------------------------------------------------------------
def test_collator_rows_fillers_and_example_lens():
    exs = _examples([5, 3, 4, 6, 2])
    keys = [PackedKey(0, 0, 0), PackedKey(1, 0, 0), PackedKey(3, 0, 1),
            PackedKey(2, 1, 0, True), PackedKey(4, 1, 0, True)]
    batches = PackedStepCollator(PAD)(PackedRows(exs).__getitems__(keys))
    assert len(batches) == 2
    b0, b1 = batches
    assert b0["input_ids"].shape == (2, 8) and b0["example_lens"] == [[5, 3], [6]]
    assert b0["seq_lens"] == [[5, 3], [6, 2]]  # collate_packed's padding tail segment
    assert b0["input_ids"][0].tolist() == exs[0]["input_ids"] + exs[1]["input_ids"]
    assert b0["labels"][1, 6:].tolist() == [-100, -100]
    assert (b0["labels"][0, [0, 5]] == -100).all()  # each example's first label is cleared
    assert b1["example_lens"] == [[4, 2]] and (b1["labels"] == -100).all()  # a filler row
    assert "attention_mask" not in b0


# ----- packed vs unpacked through the module's loss path ------------------------------------
def _module(sparse):
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                      attn_implementation="sdpa")
    module = SpanLMModule(model={}, optimizer={}, scheduler={}, loss={"sparse": sparse, "chunk_size": 7, "recompute_chunks": False},
                          gradient_clip_val=1.0)
    module.model = LlamaForCausalLM(cfg).eval()
    return module


@pytest.mark.parametrize("sparse", [True, False])
def test_packed_matches_unpacked_per_example(sparse):
    lengths = _lengths(23, seed=7, lo=4, hi=40)
    exs = _examples(lengths)
    module = _module(sparse)
    # Unpacked reference: the repo's padded micro-batches, one example each and four at a time.
    single = [module.span_sums(pad_batch([ex], PAD)) for ex in exs]
    four = [module.span_sums(pad_batch(exs[i:i + 4], PAD)) for i in range(0, len(exs), 4)]
    tol = dict(atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(sum(s.loss_sum for s in four), sum(s.loss_sum for s in single), **tol)

    sampler = PackedStepSampler(lengths, 64, rows_per_micro_batch=2, plan=BatchPlan(1, 2, 1), rank=0, seed=1)
    steps = _loader_steps(exs, sampler)
    per_example = {}
    n_packed = n_unpacked = 0
    for keys, micro_batches in zip(sampler, steps):
        n_packed += sum(int((b["labels"][:, 1:] != -100).sum()) for b in micro_batches)
        for m, batch in enumerate(micro_batches):
            ids = [k.index for k in keys if k.micro == m and not k.filler]
            sums = module.span_sums(batch)  # the module's own (sparse or dense) loss path
            torch.testing.assert_close(sums.loss_sum, sum(single[i].loss_sum for i in ids), **tol)
            torch.testing.assert_close(sums.kind_counts, sum(single[i].kind_counts for i in ids))
            torch.testing.assert_close(sums.kind_sums, sum(single[i].kind_sums for i in ids), **tol)
            # Per example: token losses mapped back to their example through the segment ids.
            hidden = forward_hidden(module.model, batch)
            labels, _ = shift_labels(batch["labels"], batch["span_kinds"], batch["position_ids"])
            losses, idx = sparse_span_loss(hidden, module.model.lm_head.weight, labels, module.chunk_size)
            seg = segment_ids(batch["seq_lens"]).reshape(-1)[idx]
            row_of = torch.arange(batch["input_ids"].shape[0]).repeat_interleave(
                batch["input_ids"].shape[1])[idx]
            for r in range(batch["input_ids"].shape[0]):
                row_ids = [k.index for k in keys if k.micro == m and k.row == r]
                # the collator packs a row's examples longest first (pack_examples' order)
                row_ids.sort(key=lambda i: -lengths[i])
                for s, i in enumerate(row_ids):
                    got = losses[(row_of == r) & (seg == s)].sum()
                    per_example[i] = got
    for i, ex in enumerate(exs):
        torch.testing.assert_close(per_example.get(i, torch.tensor(0.0)), single[i].loss_sum, **tol)
        n_unpacked += sum(l != -100 for l in ex["labels"][1:])
    assert n_packed == n_unpacked  # the module's step normaliser sees the same token count


# ----- end to end through the pipeline --------------------------------------------------------
def test_quickstart_packed_end_to_end(tmp_path):
    from core.recipe import load_recipe
    from pipeline.stage_runner import run_recipe

    recipe = load_recipe([QUICKSTART], [
        f"run.dir={tmp_path}", "data.packing.enabled=true", "data.packing.rows_per_micro_batch=2",
        "data.max_length=512", "data.data_fraction=0.5", "tokenizer.train_bpe.vocab_size=512",
        "data.micro_batch_size=2",  # 2 examples per optimizer step (the examples unit): enough steps
        "stages.planner.enabled=false", "stages.caller.enabled=false",
        "stages.summarizer.enabled=false", "stages.backbone.trainer.max_epochs=1",
        "trainer.limit_val_batches=0", "logger.wandb.enabled=false", "logger.progress_bar=false",
        "telemetry.log_every_n_steps=2", "evaluate.enabled=false"])  # packing is about training
    assert run_recipe(recipe) == ["backbone"]
    rows = list(csv.DictReader(open(RunDir(tmp_path).stage("backbone").csv_log)))
    losses = [float(r["train/loss"]) for r in rows if r.get("train/loss")]
    assert len(losses) >= 4 and all(math.isfinite(x) for x in losses)
    assert sum(losses[-2:]) / 2 < losses[0]
    perf = [r for r in rows if r.get("perf/supervised_tokens_per_sec_per_device")]
    assert perf and float(perf[0]["perf/nonpad_tokens_per_sec_per_device"]) > 0
    assert "perf/mfu" not in rows[0]  # CPU and no peak_flops: no MFU
    assert RunDir(tmp_path).stage("backbone").has_export()
