import pytest
import torch
from transformers import AttentionInterface, LlamaConfig, LlamaForCausalLM
from transformers.modeling_flash_attention_utils import prepare_fa_kwargs_from_position_ids

from datamodules.packing import blank_batch, collate_packed, equalize_rank_batches, pack_examples
from datamodules.optimizer_steps import pad_batch
from lightning_modules.packed_attention import block_causal_mask, packed_attention_kwargs
from lightning_modules.span_loss import (
    dense_token_losses, forward_hidden, reduce_span_losses, shift_labels, span_loss_sums)

VOCAB = 128


def _example(n, seed):
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, VOCAB, (n,), generator=g)
    labels[: n // 3] = -100  # a context prefix, then supervised spans
    kinds = torch.where(labels != -100, torch.randint(1, 4, (n,), generator=g), 0)
    return {"input_ids": torch.randint(0, VOCAB, (n,), generator=g).tolist(),
            "labels": labels.tolist(), "span_kinds": kinds.tolist()}


def _examples(lengths):
    return [_example(n, i) for i, n in enumerate(lengths)]


def test_best_fit_decreasing_known_instance():
    rows = pack_examples(_examples([7, 5, 4, 3, 3, 2, 2]), max_len=10)
    assert [r["seq_lens"] for r in rows] == [[7, 3], [5, 4], [3, 2, 2]]
    assert [r["example_ids"] for r in rows] == [[0, 3], [1, 2], [4, 5, 6]]


def test_pack_rows_content():
    exs = _examples([6, 4, 5, 3])
    for row in pack_examples(exs, max_len=12):
        assert len(row["input_ids"]) <= 12 and sum(row["seq_lens"]) == len(row["input_ids"])
        start = 0
        for i, n in zip(row["example_ids"], row["seq_lens"]):
            ex = exs[i]
            assert row["input_ids"][start:start + n] == ex["input_ids"]
            assert row["position_ids"][start:start + n] == list(range(n))
            assert row["labels"][start] == -100 and row["span_kinds"][start] == 0
            assert row["labels"][start + 1:start + n] == ex["labels"][1:]
            assert row["span_kinds"][start + 1:start + n] == ex["span_kinds"][1:]
            start += n


def test_pack_too_long_names_index():
    with pytest.raises(ValueError, match="example 1 "):
        pack_examples(_examples([3, 11, 2]), max_len=10)


def test_pack_seed_shuffles_rows_deterministically():
    exs = _examples([5] * 12)
    a, b = pack_examples(exs, 10, seed=1), pack_examples(exs, 10, seed=1)
    plain = pack_examples(exs, 10)
    assert [r["example_ids"] for r in a] == [r["example_ids"] for r in b]
    assert sorted(map(tuple, (r["example_ids"] for r in a))) == \
        sorted(map(tuple, (r["example_ids"] for r in plain)))


def test_collate_packed_shapes_and_cu_seqlens():
    rows = pack_examples(_examples([7, 5, 4, 3, 3, 2, 2]), max_len=10)  # rows of 10, 9, 7 tokens
    batch = collate_packed(rows, pad_id=0)
    for k in ("input_ids", "labels", "span_kinds", "position_ids"):
        assert batch[k].shape == (3, 10)
    assert batch["seq_lens"] == [[7, 3], [5, 4, 1], [3, 2, 2, 3]]
    assert batch["cu_seqlens"].dtype == torch.int32
    assert batch["cu_seqlens"].tolist() == [0, 7, 10, 15, 19, 20, 23, 25, 27, 30]
    assert batch["max_seqlen"] == 7
    assert batch["labels"][2, 7:].tolist() == [-100] * 3
    assert batch["position_ids"][2, 7:].tolist() == [0, 1, 2]
    # HF derives the same boundaries from the flattened position_ids.
    (cu, _), (mx, _) = prepare_fa_kwargs_from_position_ids(batch["position_ids"])
    assert cu.tolist() == batch["cu_seqlens"].tolist() and int(mx) == batch["max_seqlen"]
    wide = collate_packed(rows, pad_id=0, pad_to=12)
    assert wide["input_ids"].shape == (3, 12) and wide["seq_lens"][0] == [7, 3, 2]


def test_equalize_rank_batches():
    rows = pack_examples(_examples([4] * 7), max_len=4)
    batches = [[r] for r in rows]  # 7 batches of one row
    padded = equalize_rank_batches(batches, world_size=3)
    assert len(padded) == 9 and padded[:7] == batches
    for filler in padded[7:]:
        assert all(l == -100 for l in filler[0]["labels"]) and not any(filler[0]["span_kinds"])
    assert equalize_rank_batches(batches, world_size=7) == batches
    collated = blank_batch(collate_packed(rows[:2], pad_id=0))
    assert (collated["labels"] == -100).all() and (collated["span_kinds"] == 0).all()


def test_block_causal_mask():
    m = block_causal_mask([[2, 1]])
    assert m.shape == (1, 1, 3, 3)
    assert m[0, 0].tolist() == [[True, False, False], [True, True, False], [False, False, True]]
    f = block_causal_mask([[2, 1]], dtype=torch.float32)
    assert f[0, 0, 1, 0] == 0 and f[0, 0, 2, 0] == torch.finfo(torch.float32).min


def test_flash_kwargs_carry_varlen_boundaries():
    batch = collate_packed(pack_examples(_examples([5, 3, 4]), max_len=8), pad_id=0)
    kw = packed_attention_kwargs(batch, "flash_attention_2")
    assert "attention_mask" not in kw and kw["use_cache"] is False
    assert kw["cu_seq_lens_q"] is batch["cu_seqlens"] and kw["max_length_k"] == 5
    with pytest.raises(ValueError, match="attn_implementation"):
        packed_attention_kwargs(batch, "paged|sdpa")


def _varlen_reference(module, query, key, value, attention_mask, scaling=None, dropout=0.0,
                      cu_seq_lens_q=None, max_length_q=None, **kwargs):
    """Pure-torch stand-in for flash-attn's varlen kernel over flattened [B*T] tokens."""
    assert attention_mask is None and cu_seq_lens_q is not None and max_length_q is not None
    b, h, t, d = query.shape
    rep = h // key.shape[1]
    q, k, v = (x.transpose(1, 2).reshape(b * t, x.shape[1], d) for x in (query, key, value))
    out = torch.empty_like(q)
    bounds = cu_seq_lens_q.tolist()
    for s, e in zip(bounds[:-1], bounds[1:]):
        qs, ks, vs = q[s:e].transpose(0, 1), k[s:e].transpose(0, 1), v[s:e].transpose(0, 1)
        ks, vs = ks.repeat_interleave(rep, 0), vs.repeat_interleave(rep, 0)
        out[s:e] = torch.nn.functional.scaled_dot_product_attention(
            qs, ks, vs, is_causal=True, scale=scaling).transpose(0, 1)
    return out.view(b, t, h, d), None


AttentionInterface.register("varlen_reference", _varlen_reference)


def _tiny_model(impl):
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                      attn_implementation=impl)
    return LlamaForCausalLM(cfg).eval()


@pytest.mark.parametrize("impl", ["sdpa", "eager", "varlen_reference"])
def test_packed_matches_unpacked(impl):
    model = _tiny_model(impl)
    exs = _examples([9, 4, 7, 3, 6, 2, 5])
    rows = pack_examples(exs, max_len=16, seed=0)
    batch = collate_packed(rows, pad_id=0)
    if impl == "varlen_reference":  # route the flash kwargs through HF to our reference kernel
        kwargs = packed_attention_kwargs(batch, "flash_attention_2")
        hidden = model.get_decoder()(input_ids=batch["input_ids"], **kwargs).last_hidden_state
    else:
        hidden = forward_hidden(model, batch)
    logits = model.lm_head(hidden)
    labels, kinds = shift_labels(batch["labels"], batch["span_kinds"], batch["position_ids"])
    packed_losses = dense_token_losses(logits, labels)

    ref_model = _tiny_model("sdpa")
    for r, row in enumerate(rows):
        start = 0
        for i, n in zip(row["example_ids"], row["seq_lens"]):
            ids = torch.tensor([exs[i]["input_ids"]])
            ref_logits = ref_model(input_ids=ids, use_cache=False).logits[0]
            torch.testing.assert_close(logits[r, start:start + n], ref_logits, atol=1e-5, rtol=1e-5)
            ref_labels, _ = shift_labels(torch.tensor(exs[i]["labels"]),
                                         torch.tensor(exs[i]["span_kinds"]))
            torch.testing.assert_close(packed_losses[r, start:start + n],
                                       dense_token_losses(ref_logits, ref_labels),
                                       atol=1e-5, rtol=1e-5)
            start += n

    if impl != "varlen_reference":
        packed = span_loss_sums(model, batch, chunk_size=5)
        unpacked = [span_loss_sums(ref_model, pad_batch([ex], pad_id=0), chunk_size=1024) for ex in exs]
        tol = dict(atol=1e-4, rtol=1e-5)
        torch.testing.assert_close(packed.loss_sum, sum(u.loss_sum for u in unpacked), **tol)
        torch.testing.assert_close(packed.kind_counts, sum(u.kind_counts for u in unpacked))
        torch.testing.assert_close(packed.kind_sums, sum(u.kind_sums for u in unpacked), **tol)
        dense = reduce_span_losses(packed_losses, kinds, mask=labels != -100)
        torch.testing.assert_close(dense.loss_sum, packed.loss_sum, atol=1e-5, rtol=1e-5)
