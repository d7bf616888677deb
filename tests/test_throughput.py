from types import SimpleNamespace

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from datamodules.packing import collate_packed, pack_examples
from lightning_modules.throughput import (
    ThroughputCallback, available_flops, batch_token_counts, build_throughput_callback,
    matmul_params, model_shape, step_flops)


def _packed_batch():
    # Two rows of width 8: [5 + 3 tokens] and [4 tokens, 4 pad].
    exs = [{"input_ids": [1] * n, "labels": [-100] + [7] * (n - 1), "span_kinds": [0] * n}
           for n in (4, 3, 5)]
    rows = pack_examples(exs, max_len=8)
    assert [r["seq_lens"] for r in rows] == [[5, 3], [4]]
    batch = collate_packed(rows, pad_id=0, pad_to=8)
    batch["example_lens"] = [list(r["seq_lens"]) for r in rows]
    return batch


def _padded_batch():
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 0, 0, 0, 0]])
    labels = torch.tensor([[-100, 5, 5, -100, 5, -100], [-100, 5, -100, -100, -100, -100]])
    return {"input_ids": torch.ones(2, 6, dtype=torch.long), "attention_mask": mask, "labels": labels}


def test_batch_token_counts_packed_and_padded():
    c = batch_token_counts(_packed_batch())
    assert c["total"] == 16 and c["nonpad"] == 12 and c["sum_sq_lens"] == 25 + 16 + 9
    assert int(c["supervised"]) == 4 + 3 + 2  # each example's first token is unsupervised
    c = batch_token_counts([_padded_batch(), _padded_batch()])  # a step of two micro-batches
    assert c["total"] == 24 and int(c["nonpad"]) == 16 and int(c["sum_sq_lens"]) == 2 * (36 + 4)
    assert int(c["supervised"]) == 2 * 4


def test_flops_formula_and_param_count():
    assert step_flops(1000, 12, 50, n_layers=2, d_model=8) == 6 * 1000 * 12 + 12 * 2 * 8 * 50
    assert step_flops(1000, 12, 50, None, None) == 6 * 1000 * 12
    for tie in (False, True):
        cfg = LlamaConfig(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=3,
                          num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=tie)
        model = LlamaForCausalLM(cfg)
        total = sum(p.numel() for p in model.parameters())  # parameters() dedups tied weights
        assert matmul_params(model) == (total if tie else total - 50 * 16)
        assert model_shape(model) == (3, 16)


@pytest.mark.parametrize("name,precision,peak", [
    ("NVIDIA H100 80GB HBM3", "bf16-true", 989.4e12), ("NVIDIA H100 PCIe", "bf16-mixed", 756e12),
    ("NVIDIA A100-SXM4-80GB", "16-mixed", 312e12), ("NVIDIA H200", "bf16-true", 989e12),
    ("Some Future GPU", "bf16-true", None)])
def test_peak_flops_from_lightning(monkeypatch, name, precision, peak):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
    assert available_flops(torch.device("cuda"), precision) == peak
    assert available_flops(torch.device("cpu"), precision) is None  # CPU: no MFU


class _Logger:
    def __init__(self):
        self.logged = []

    def log_metrics(self, metrics, step):
        self.logged.append((step, dict(metrics)))


def _trainer(logger, every=2):
    return SimpleNamespace(loggers=[logger], world_size=1, is_global_zero=True, global_step=0,
                           log_every_n_steps=every, precision="32-true", training=True,
                           fit_loop=SimpleNamespace(epoch_loop=SimpleNamespace(_batches_that_stepped=7)))


@pytest.mark.parametrize("peak", [None, 1e6])
def test_callback_logs_known_values(monkeypatch, peak):
    cfg = LlamaConfig(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=1)
    module = SimpleNamespace(model=LlamaForCausalLM(cfg), device=torch.device("cpu"))
    cb = build_throughput_callback({"peak_flops": peak, "log_every_n_steps": 2})
    logger = _Logger()
    trainer = _trainer(logger)
    clock = iter([10.0, 10.5, 12.0, 13.0])  # window start; validation pause 10.5-12.0; log at 13.0
    monkeypatch.setattr(ThroughputCallback, "_now", staticmethod(lambda _m: next(clock)))
    cb.setup(trainer, module, "fit")
    cb.on_train_start(trainer, module)
    batch = [_packed_batch()]
    cb.on_train_batch_start(trainer, module, batch, 0)
    cb.on_train_batch_end(trainer, module, None, batch, 0)
    assert logger.logged == []  # not yet: every 2 steps
    cb.on_validation_start(trainer, module)
    cb.on_validation_end(trainer, module)
    cb.on_train_batch_start(trainer, module, batch, 1)
    cb.on_train_batch_end(trainer, module, None, batch, 1)
    (step, m), = logger.logged
    seconds = 3.0 - 1.5  # the validation pause is not counted
    assert step == 7
    n = matmul_params(module.model)
    flops = 2 * (6 * n * 12 + 12 * 2 * 16 * 50)
    assert m["perf/tokens_per_sec_per_device"] == pytest.approx(32 / seconds)
    assert m["perf/nonpad_tokens_per_sec_per_device"] == pytest.approx(24 / seconds)
    assert m["perf/supervised_tokens_per_sec_per_device"] == pytest.approx(18 / seconds)
    assert m["perf/examples_per_sec_per_device"] == pytest.approx(2 * 2 / seconds)  # 2 rows/step
    assert m["perf/pad_fraction"] == pytest.approx(0.25)
    assert m["perf/tflops_per_device"] == pytest.approx(flops / seconds / 1e12)
    if peak is None:
        assert "perf/mfu" not in m  # CPU: no known peak
    else:
        assert m["perf/mfu"] == pytest.approx(flops / seconds / peak)
    assert cb.last_metrics == m


def test_callback_defaults_to_trainer_interval():
    cb = build_throughput_callback(None)
    assert cb.log_every_n_steps is None and cb.peak_flops is None
    with pytest.raises(ValueError):
        build_throughput_callback({"log_every_n_steps": 0})
