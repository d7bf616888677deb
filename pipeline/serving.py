"""What an export needs to be served by an OpenAI-compatible server (`transformers serve`, vLLM):
the tokenizer's `model_max_length` (the training sequence length, else the model's positions), a
generation config whose EOS / BOS / pad ids are the tokenizer's (training supervises the
tokenizer's EOS as the end of a turn), and a chat template for the chat API (the recipe's
`tokenizer.chat_template`, unless the tokenizer has its own). The agent's roles use the text
`/completions` API with prompts rendered as in training; the chat template serves other clients
(the simulator's agents, a judge)."""
from __future__ import annotations


def make_servable(model, tokenizer, *, max_length: int | None = None,
                  chat_template: str | None = None) -> None:
    """Set, in place, what the export of `model` and `tokenizer` must carry."""
    positions = getattr(model.config, "max_position_embeddings", None)
    limit = min(n for n in (max_length, positions) if n) if (max_length or positions) else None
    if limit:
        tokenizer.model_max_length = int(limit)
    if chat_template and not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = chat_template
    gen = getattr(model, "generation_config", None)
    if gen is not None:
        for key in ("eos_token_id", "bos_token_id", "pad_token_id"):
            value = getattr(tokenizer, key, None)
            if value is not None:
                setattr(gen, key, value)
        if gen.pad_token_id is None:
            gen.pad_token_id = tokenizer.eos_token_id
