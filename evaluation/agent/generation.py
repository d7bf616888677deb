"""Batched generation from prompt token ids with a Hugging Face causal LM.

Prompts are token ids built as training builds its rows (`datamodules.step_context.prompt_ids`,
one context budget for both); they are left-padded into batches (sorted by length, results returned in input order), decoded greedily by
default, and cut at the tokenizer's EOS, which is the end-of-turn token training supervises (the
model's own `generation_config` is ignored: its eos id may not be the tokenizer's).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from core.vocabulary import DTYPES
from core.context_budget import ContextBudget


@dataclass
class Generation:
    text: str              # decoded tokens before the first EOS
    token_ids: list[int]   # generated ids before the first EOS
    finished: bool         # True when EOS was generated (else max_new_tokens ran out)
    prompt_tokens: int     # length of the (possibly truncated) prompt


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def load_model(path: str, device: str | None = None, dtype: str | None = None):
    """(model, tokenizer) of a save_pretrained export, in eval mode, with a pad token."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = device or default_device()
    kwargs = {}
    if dtype and dtype != "auto":
        kwargs["dtype"] = DTYPES[dtype]
    elif device.startswith("cuda"):
        kwargs["dtype"] = "auto"
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, **kwargs).to(device).eval()
    return model, prepare_tokenizer(tokenizer)


def prepare_tokenizer(tokenizer):
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no EOS token: generation could not stop")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


@torch.no_grad()
def generate(model, tokenizer, prompts: list[list[int]], *, max_new_tokens: int,
             batch_size: int, do_sample: bool = False, temperature: float | None = None,
             top_p: float | None = None, seed: int | None = None) -> list[Generation]:
    """Generate a continuation for each prompt (lists of token ids); output order = input order.
    Greedy unless `do_sample`; the sampling settings (evaluate.*) apply only then."""
    from transformers import GenerationConfig

    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    pad = eos if pad is None else pad
    cfg = dict(max_new_tokens=max_new_tokens, eos_token_id=eos, pad_token_id=pad,
               bos_token_id=tokenizer.bos_token_id, do_sample=bool(do_sample))
    if do_sample:
        cfg.update(temperature=temperature, top_p=top_p)
    gen_cfg = GenerationConfig(**cfg)
    device = next(model.parameters()).device
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    out: list[Generation | None] = [None] * len(prompts)
    for start in range(0, len(order), max(1, batch_size)):
        idx = order[start:start + batch_size]
        batch = [prompts[i] for i in idx]
        width = max(len(p) for p in batch)
        input_ids = torch.tensor([[pad] * (width - len(p)) + list(p) for p in batch], device=device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in batch], device=device)
        if do_sample and seed is not None:
            torch.manual_seed(seed + start)
        seqs = model.generate(input_ids=input_ids, attention_mask=mask, generation_config=gen_cfg)
        for row, i in enumerate(idx):
            new = seqs[row, width:].tolist()
            finished = eos in new
            new = new[:new.index(eos)] if finished else new
            text = tokenizer.decode(new, skip_special_tokens=True,
                                    clean_up_tokenization_spaces=False)  # text as it was written
            out[i] = Generation(text, new, finished, len(prompts[i]))
    return out  # type: ignore[return-value]


def context_budget(positions: int | None, new_tokens: int, max_prompt_tokens, max_length,
                   context_reserve) -> ContextBudget:
    """The budget training fitted its rows to (data.max_length, data.context_reserve); without a
    recipe, the model's `positions` (its max_position_embeddings, or a served tokenizer's
    model_max_length) less the generation length."""
    if max_prompt_tokens:
        return ContextBudget(int(max_prompt_tokens) + new_tokens, new_tokens)
    if max_length:
        return ContextBudget.of(max_length, context_reserve)
    positions = positions or 4 * new_tokens
    return ContextBudget(positions, min(new_tokens, positions // 2 - 1))
