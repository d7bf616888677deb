"""attn_implementation "sdpa_varlen": attention within each packed example (sum len^2, not row^2)
gives the logits of the block-diagonal masked attention, and of each example run alone."""
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from datamodules.packing import collate_packed, pack_examples
from lightning_modules.packed_attention import packed_attention_kwargs

CFG = dict(vocab_size=100, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
           num_attention_heads=4, num_key_value_heads=2)


def _model(impl):
    torch.manual_seed(1)
    return LlamaForCausalLM(LlamaConfig(**CFG, attn_implementation=impl)).eval()


def test_varlen_matches_masked_and_alone():
    g = torch.Generator().manual_seed(0)
    exs = [{"input_ids": torch.randint(1, 100, (n,), generator=g).tolist(),
            "labels": [-100] + [1] * (n - 1), "span_kinds": [0] * n} for n in (50, 30, 70, 20)]
    batch = collate_packed(pack_examples(exs, max_len=128), pad_id=0, pad_to=128)
    varlen = _model("sdpa_varlen")(input_ids=batch["input_ids"],
                                   **packed_attention_kwargs(batch, "sdpa_varlen")).logits
    eager = _model("eager")(input_ids=batch["input_ids"],
                            **packed_attention_kwargs(batch, "eager")).logits
    torch.testing.assert_close(varlen, eager, atol=1e-5, rtol=1e-4)
    alone = _model("sdpa")(input_ids=torch.tensor([exs[2]["input_ids"]])).logits
    torch.testing.assert_close(varlen[0, :70], alone[0], atol=1e-5, rtol=1e-4)


def test_unpacked_batches_keep_the_padding_mask():
    ids = torch.randint(1, 100, (2, 12))
    mask = torch.ones(2, 12, dtype=torch.long)
    mask[1, 8:] = 0
    a = _model("sdpa_varlen")(input_ids=ids, attention_mask=mask).logits
    b = _model("sdpa")(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(a, b)
