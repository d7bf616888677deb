"""Rendered segments to token ids: the text of all segments tokenized at once, as every server,
pipeline and chat template tokenizes it, and each token given to the segment its first character
lies in (the fast tokenizer's offset mapping). Training (span labels) and inference (prompts) share
this encoder.

An inference prompt is the text up to a target's first character. It is a token prefix of the
training row only where the tokenizer does not merge across that point; `prefix_failures` checks
it, and the template ends prompts where tokenizers split (`Planner:` then a body starting with a
space)."""
from __future__ import annotations

from bisect import bisect_right

from prompting.prompt_template import EOS, Segment


class TextEncoder:
    def __init__(self, tokenizer, add_bos: bool = True):
        if tokenizer.eos_token_id is None:
            raise ValueError("the tokenizer has no EOS token; set one (e.g. tokenizer.eos_token)")
        if not getattr(tokenizer, "is_fast", False):
            raise ValueError(f"{type(tokenizer).__name__} is not a fast tokenizer: labelling tokens "
                             "by characters needs its offset mapping (load it with use_fast=True)")
        self.tok = tokenizer
        self.bos = [tokenizer.bos_token_id] if add_bos and tokenizer.bos_token_id is not None else []
        self.eos = tokenizer.eos_token_id
        self.eos_text = tokenizer.eos_token

    def texts(self, segments: list[Segment]) -> list[str]:
        return [self.eos_text if s.text is EOS else s.text for s in segments]

    def ids(self, text: str) -> list[int]:
        """The tokenizer's ids of `text` (no BOS: `self.bos` goes in front of a row or prompt)."""
        return self.tok(text, add_special_tokens=False)["input_ids"]

    def encode(self, segments: list[Segment]) -> list[list[int]]:
        """Token ids of the whole text, grouped by the segment each token starts in."""
        texts = self.texts(segments)
        starts, at = [], 0
        for t in texts:
            starts.append(at)
            at += len(t)
        out = self.tok("".join(texts), add_special_tokens=False, return_offsets_mapping=True)
        pieces: list[list[int]] = [[] for _ in segments]
        for tid, (a, _b) in zip(out["input_ids"], out["offset_mapping"]):
            pieces[bisect_right(starts, a) - 1].append(tid)
        return pieces

    def prompt_ids(self, segments: list[Segment]) -> list[int]:
        """Inference: the token ids of a rendered prompt, exactly as training builds them."""
        return self.bos + self.ids("".join(self.texts(segments)))

    def prefix_failures(self, segments: list[Segment], pieces: list[list[int]],
                        supervised: list[bool]) -> tuple[int, int]:
        """(targets checked, targets whose prompt, the text before the target's first character,
        does not tokenize to the tokens before it in `pieces`, the encoding of `segments`)."""
        texts = self.texts(segments)
        cuts, chars, tokens = [], 0, 0
        for i, (text, piece, sup) in enumerate(zip(texts, pieces, supervised)):
            if sup and (i == 0 or not supervised[i - 1]):
                cuts.append((chars, tokens))
            chars, tokens = chars + len(text), tokens + len(piece)
        if not cuts:
            return 0, 0
        whole = "".join(texts)
        flat = [t for p in pieces for t in p]
        prompts = self.tok([whole[:c] for c, _ in cuts], add_special_tokens=False)["input_ids"]
        return len(cuts), sum(p != flat[:k] for p, (_, k) in zip(prompts, cuts))
