import pytest
import torch
import torch.nn.functional as F
from transformers import LlamaConfig, LlamaForCausalLM

from lightning_modules.span_loss import (
    dense_token_losses, forward_hidden, reduce_span_losses, shift_labels,
    span_loss_sums, sparse_span_loss)

B, T, H, V = 2, 9, 16, 37


def _labels(seed=0, frac=0.5):
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, V, (B, T), generator=g)
    labels[torch.rand(B, T, generator=g) > frac] = -100
    kinds = torch.where(labels != -100, torch.randint(1, 4, (B, T), generator=g), 0)
    return labels, kinds


def _leaf(*shape, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g).to(dtype).requires_grad_()


def test_shift_labels():
    labels = torch.tensor([[-100, 5, 6, -100], [-100, -100, 7, 8]])
    kinds = torch.tensor([[0, 1, 2, 0], [0, 0, 3, 3]])
    sl, sk = shift_labels(labels, kinds)
    assert sl.tolist() == [[5, 6, -100, -100], [-100, 7, 8, -100]]
    assert sk.tolist() == [[1, 2, 0, 0], [0, 3, 3, 0]]


def test_shift_labels_rejects_supervised_packed_start():
    labels = torch.tensor([[-100, 5, 6, 9, 4]])
    pos = torch.tensor([[0, 1, 2, 0, 1]])
    with pytest.raises(ValueError, match="first token"):
        shift_labels(labels, torch.zeros_like(labels), position_ids=pos)
    labels[0, 3] = -100
    shift_labels(labels, torch.zeros_like(labels), position_ids=pos)


def test_dense_token_losses_zero_where_ignored():
    labels, _ = _labels()
    losses = dense_token_losses(torch.randn(B, T, V), labels)
    assert losses.dtype == torch.float32 and losses.shape == (B, T)
    assert (losses[labels == -100] == 0).all() and (losses[labels != -100] > 0).all()


@pytest.mark.parametrize("chunk_size", [1, 3, 1000])
@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("recompute", [False, True])
def test_sparse_matches_dense(chunk_size, with_bias, recompute):
    labels, _ = _labels()
    hidden, weight = _leaf(B, T, H), _leaf(V, H, seed=1)
    bias = _leaf(V, seed=2) if with_bias else None
    dense = dense_token_losses(F.linear(hidden, weight, bias), labels)
    dense.sum().backward()
    ref_grads = [t.grad.clone() for t in (hidden, weight, bias) if t is not None]
    for t in (hidden, weight, bias):
        if t is not None:
            t.grad = None

    losses, idx = sparse_span_loss(hidden, weight, labels, chunk_size, bias, recompute)
    assert losses.dtype == torch.float32 and len(idx) == int((labels != -100).sum())
    torch.testing.assert_close(losses, dense.reshape(-1)[idx])
    losses.sum().backward()
    for ref, t in zip(ref_grads, [t for t in (hidden, weight, bias) if t is not None]):
        torch.testing.assert_close(t.grad, ref)


def test_sparse_bf16_upcasts_and_matches_dense():
    labels, _ = _labels()
    hidden, weight = _leaf(B, T, H, dtype=torch.bfloat16), _leaf(V, H, dtype=torch.bfloat16, seed=1)
    dense = dense_token_losses(F.linear(hidden, weight), labels)
    losses, idx = sparse_span_loss(hidden, weight, labels, chunk_size=4)
    assert losses.dtype == torch.float32
    torch.testing.assert_close(losses, dense.reshape(-1)[idx], atol=1e-2, rtol=1e-2)
    losses.sum().backward()
    assert hidden.grad.dtype == torch.bfloat16 and weight.grad.dtype == torch.bfloat16


def test_sparse_with_no_supervised_token_is_connected():
    hidden, weight = _leaf(B, T, H), _leaf(V, H, seed=1)
    losses, idx = sparse_span_loss(hidden, weight, torch.full((B, T), -100), chunk_size=4)
    assert losses.numel() == 0 and idx.numel() == 0
    sums = reduce_span_losses(losses, torch.zeros(0, dtype=torch.long))
    assert sums.loss_sum.item() == 0 and sums.kind_counts.sum().item() == 0 and sums.loss_sum.requires_grad
    sums.loss_sum.backward()
    assert (hidden.grad == 0).all() and (weight.grad == 0).all()


def test_reduce_span_losses_sparse_equals_dense():
    labels, kinds = _labels(seed=3)
    hidden, weight = _leaf(B, T, H), _leaf(V, H, seed=1)
    dense = dense_token_losses(F.linear(hidden, weight), labels)
    by_mask = reduce_span_losses(dense, kinds, mask=labels != -100)
    losses, idx = sparse_span_loss(hidden, weight, labels, chunk_size=1024)
    by_idx = reduce_span_losses(losses, kinds.reshape(-1)[idx])
    for a, b in zip(by_mask, by_idx):
        torch.testing.assert_close(a, b)
    assert by_idx.kind_counts.sum().item() == (labels != -100).sum().item()
    torch.testing.assert_close(by_idx.kind_sums.sum(), by_idx.loss_sum)
    assert by_idx.kind_counts[0].item() == 0


def test_reduce_span_losses_known_values():
    sums = reduce_span_losses(torch.tensor([1.0, 2.0, 3.0, 4.0]), torch.tensor([1, 2, 2, 3]))
    assert sums.loss_sum.item() == 10 and sums.kind_counts.sum().item() == 4
    assert sums.kind_sums.tolist() == [0, 1, 5, 4, 0] and sums.kind_counts.tolist() == [0, 1, 2, 1, 0]


@pytest.mark.parametrize("tie", [False, True])
def test_span_loss_sums_matches_hf_loss(tie):
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=V, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=tie,
                      attn_implementation="sdpa")
    model = LlamaForCausalLM(cfg)
    labels, kinds = _labels(seed=4)
    ids = torch.randint(0, V, (B, T))
    mask = torch.ones(B, T, dtype=torch.long)
    mask[1, -2:] = 0
    labels[1, -2:] = -100
    kinds[1, -2:] = 0
    batch = {"input_ids": ids, "attention_mask": mask, "labels": labels, "span_kinds": kinds}
    out = model(input_ids=ids, attention_mask=mask, labels=labels, use_cache=False)
    hidden = forward_hidden(model, batch)
    torch.testing.assert_close(model.lm_head(hidden), out.logits)
    sums = span_loss_sums(model, batch, chunk_size=3)
    torch.testing.assert_close(sums.loss_sum / sums.kind_counts.sum(), out.loss)
