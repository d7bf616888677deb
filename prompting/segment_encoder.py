"""Rendered segments to token ids: each segment tokenized on its own, so every span starts and ends
on a token boundary. Training (span labels) and inference (prompts) share this encoder."""
from __future__ import annotations

from prompting.prompt_template import EOS, Segment


class SegmentEncoder:
    def __init__(self, tokenizer, add_bos: bool = True):
        if tokenizer.eos_token_id is None:
            raise ValueError("the tokenizer has no EOS token; set one (e.g. tokenizer.eos_token)")
        self.tok = tokenizer
        self.bos = [tokenizer.bos_token_id] if add_bos and tokenizer.bos_token_id is not None else []
        self.eos = tokenizer.eos_token_id

    def encode(self, segments: list[Segment]) -> list[list[int]]:
        texts = [s.text for s in segments if s.text is not EOS]
        ids = iter(self.tok(texts, add_special_tokens=False)["input_ids"] if texts else [])
        return [[self.eos] if s.text is EOS else next(ids) for s in segments]

    def prompt_ids(self, segments: list[Segment]) -> list[int]:
        """Inference: the token ids of a rendered prompt, exactly as training builds them."""
        return self.bos + [t for piece in self.encode(segments) for t in piece]
