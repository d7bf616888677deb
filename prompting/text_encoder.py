"""Rendered segments to token ids: the text of all segments tokenized at once, as every server,
pipeline and chat template tokenizes it, and each token given to the segment its first character
lies in (the fast tokenizer's offset mapping). Training (span labels) and inference (prompts) share
this encoder.

An inference prompt is the text up to a target's first character. It is a token prefix of the
training row only where the tokenizer does not merge across that point; `prefix_failures` checks
it, and the template ends prompts where tokenizers split (`Planner:` then a body starting with a
space).

A budget cuts a rendered text at token boundaries that are also character boundaries (`Layout`):
the cut text is tokenized again, so the ids a model is fed are always the tokenizer's ids of a
text (what a server given that text computes)."""
from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass

from prompting.prompt_template import EOS, Segment


@dataclass(frozen=True)
class Layout:
    """The whole text of some segments tokenized once: each token's character offsets, and per
    segment the indices of the tokens that start in it (what the budget rules cut)."""
    text: str
    ids: list[int]
    bounds: list[tuple[int, int]]   # each segment's character span
    offsets: list[tuple[int, int]]  # each token's character span
    pieces: list[list[int]]         # per segment: indices of its tokens

    def clean(self, k: int) -> bool:
        """A cut before token k lands on a character boundary (no character split across tokens,
        as byte-level tokens split a multi-byte character)."""
        return k <= 0 or k >= len(self.offsets) or self.offsets[k][0] >= self.offsets[k - 1][1]

    def spans(self, kept) -> list[tuple[int, int]]:
        """Character spans of the kept tokens: each run of consecutive tokens shrunk to clean cuts."""
        kept, out, n = sorted(kept), [], len(self.offsets)
        i = 0
        while i < len(kept):
            j = i
            while j + 1 < len(kept) and kept[j + 1] == kept[j] + 1:
                j += 1
            a, b = kept[i], kept[j] + 1
            while a < b and not self.clean(a):
                a += 1
            while b > a and not self.clean(b):
                b -= 1
            if a < b:
                out.append((0 if a == 0 else self.offsets[a][0], len(self.text) if b == n else self.offsets[b][0]))
            i = j + 1
        return out

    def kept_texts(self, kept) -> list[str]:
        """Each segment's text that the kept tokens cover ("" where none)."""
        spans = self.spans(kept)
        return ["".join(self.text[max(s, a):min(e, b)] for a, b in spans if a < e and b > s)
                for s, e in self.bounds]


class TextEncoder:
    def __init__(self, tokenizer, *, add_bos: bool):  # tokenizer.add_bos, passed by every caller
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
        lay = self.layout(segments)
        return [[lay.ids[k] for k in piece] for piece in lay.pieces]

    def layout(self, segments: list[Segment]) -> Layout:
        texts = self.texts(segments)
        bounds, at = [], 0
        for t in texts:
            bounds.append((at, at + len(t)))
            at += len(t)
        text = "".join(texts)
        out = self.tok(text, add_special_tokens=False, return_offsets_mapping=True)
        starts = [a for a, _ in bounds]
        pieces: list[list[int]] = [[] for _ in segments]
        for k, (a, _b) in enumerate(out["offset_mapping"]):
            pieces[bisect_right(starts, a) - 1].append(k)
        return Layout(text, out["input_ids"], bounds, [tuple(o) for o in out["offset_mapping"]], pieces)

    def kept_segments(self, segments: list[Segment], layout: Layout, kept) -> list[Segment]:
        """`segments` with the text the kept tokens cover (an EOS kept whole or not at all)."""
        out = []
        for seg, text in zip(segments, layout.kept_texts(kept)):
            eos = seg.text is EOS and text == self.eos_text
            out.append(Segment(EOS if eos else text, seg.kind, seg.producer, seg.turn))
        return out

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
