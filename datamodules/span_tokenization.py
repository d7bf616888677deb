"""Segments to token ids with exact span labels.

The example's whole text is tokenized at once (prompting.text_encoder): a row's ids are the
tokenizer's ids of its text, and a token is supervised when it starts in a target span (its EOS
included). Labels are -100 elsewhere; `span_kinds` gives each supervised token its kind (1 thought,
2 action, 3 answer) for per-kind loss curves. Each target's prompt (the text before it) is checked
to be a token prefix of the row (`prefix_checked` / `prefix_failures`). A row the context budget
cuts is the text kept (cut at character boundaries) tokenized again, as inference prompts are.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from core.vocabulary import IGNORE_INDEX, SPAN_KINDS
from prompting.prompt_template import EOS
from prompting.text_encoder import TextEncoder
from .views import RoleExample
from .step_context import ContextBudget, fit_header, folded_rows, per_step_context, protected



@dataclass
class EncodeStats:
    examples: int = 0
    sequences: int = 0
    tokens: int = 0
    supervised_tokens: int = 0
    dropped: Counter = field(default_factory=Counter)  # reason -> count
    max_target_tokens: Counter = field(default_factory=Counter)  # producing turn -> longest target
    prefix_checked: int = 0   # targets whose prompt was checked to be a token prefix of the row
    prefix_failures: int = 0  # ... and was not (the tokenizer merges across the prompt's end)

    def check_prefixes(self, enc, segments, pieces, supervised) -> None:
        checked, failed = enc.prefix_failures(segments, pieces, supervised)
        self.prefix_checked += checked
        self.prefix_failures += failed

    def note_target(self, segments, pieces) -> None:
        """Count each target's tokens (its EOS included) under the turn role that produces it."""
        n, producer = 0, None
        for seg, piece in zip(segments, pieces):
            n, producer = n + len(piece), seg.producer
            if seg.text is EOS:
                self.max_target_tokens[producer] = max(self.max_target_tokens[producer], n)
                n = 0

    def as_dict(self) -> dict:
        return {"examples": self.examples, "sequences": self.sequences, "tokens": self.tokens,
                "supervised_tokens": self.supervised_tokens, "dropped": dict(self.dropped),
                "max_target_tokens": dict(self.max_target_tokens),
                "prefix_checked": self.prefix_checked, "prefix_failures": self.prefix_failures}


def _labelled(pieces, segments, supervised) -> tuple[list, list, list]:
    ids, labels, kinds = [], [], []
    for piece, seg, sup in zip(pieces, segments, supervised):
        ids += piece
        labels += piece if sup else [IGNORE_INDEX] * len(piece)
        kinds += [SPAN_KINDS.index(seg.kind) if sup else 0] * len(piece)
    return ids, labels, kinds


def _flat(pieces) -> list[int]:
    return [k for p in pieces for k in p]


def _refit(enc, segments, lay, kept, supervised) -> tuple[list, list, list, list]:
    """A row from the tokens the budget kept: their text (cut at character boundaries) tokenized
    again, so the row's ids are the tokenizer's ids of its text; (ids, labels, kinds, pieces)."""
    if len(kept) == len(lay.ids):
        segs, pieces = segments, [[lay.ids[k] for k in p] for p in lay.pieces]
    else:
        segs = enc.kept_segments(segments, lay, kept)
        pieces = enc.encode(segs)
    return (*_labelled(pieces, segs, supervised), pieces)


def encode_per_step(ex: RoleExample, enc: TextEncoder, budget: ContextBudget,
                    stats: EncodeStats) -> list[dict]:
    """The header kept, the rest of the context cut from the left (step_context), never the target."""
    stats.examples += 1
    n_head, n_ctx = ex.n_header, len(ex.context)
    segs = ex.context + ex.target
    lay = enc.layout(segs)
    stats.check_prefixes(enc, segs, [[lay.ids[k] for k in p] for p in lay.pieces],
                         [False] * n_ctx + [True] * len(ex.target))
    head, rest, target = lay.pieces[:n_head], lay.pieces[n_head:n_ctx], lay.pieces[n_ctx:]
    if not any(s.text.strip() for s in ex.target if s.text is not EOS):
        stats.dropped["empty_target"] += 1
        return []
    n_target = sum(map(len, target))
    head = fit_header(head, budget.max_length, stats.dropped)
    if n_target > budget.max_length - len(enc.bos) - sum(map(len, head)):
        stats.dropped["target_too_long"] += 1
        return []
    kept = per_step_context(head, rest, budget, len(enc.bos), n_target, stats.dropped) + _flat(target)
    ids, labels, kinds, pieces = _refit(enc, segs, lay, kept, [False] * n_ctx + [True] * len(ex.target))
    stats.note_target(ex.target, pieces[n_ctx:])
    return [_row(ex, enc, ids, labels, kinds, stats)]


def encode_folded(ex: RoleExample, enc: TextEncoder, budget: ContextBudget,
                  stats: EncodeStats) -> list[dict]:
    """One sequence per trajectory, or rows overlapping in context when it does not fit
    (step_context)."""
    stats.examples += 1
    segs = [s for step in ex.steps for s in step]
    n = len(ex.context)
    lay = enc.layout(ex.context + segs)
    whole, sup = [[lay.ids[k] for k in p] for p in lay.pieces], [ex.is_supervised(s) for s in segs]
    stats.check_prefixes(enc, ex.context + segs, whole, [False] * n + sup)
    stats.note_target([s for s, k in zip(segs, sup) if k], [p for p, k in zip(whole[n:], sup) if k])
    header, pieces, rows = folded_rows(lay.pieces[:n], lay.pieces[n:], sup, budget, len(enc.bos),
                                       stats.dropped, protected(segs))
    room = budget.max_length - len(enc.bos)
    out = []
    for a, first, b in rows:
        row_sup = [False] * n + [k and first <= i < b for i, k in enumerate(sup)]
        ids, labels, kinds, _ = _refit(enc, ex.context + segs, lay, _flat(header) + _flat(pieces[a:b]), row_sup)
        if len(ids) > room:
            stats.dropped["row_tail_cut"] += 1
            ids, labels, kinds = ids[:room], labels[:room], kinds[:room]
        if any(l != IGNORE_INDEX for l in labels):
            out.append(_row(ex, enc, ids, labels, kinds, stats))
    if len(out) > 1:
        stats.dropped["split_into_rows(kept)"] += 1
    return out


def _row(ex, enc, ids, labels, kinds, stats) -> dict:
    ids, labels, kinds = enc.bos + ids, [IGNORE_INDEX] * len(enc.bos) + labels, [0] * len(enc.bos) + kinds
    stats.sequences += 1
    stats.tokens += len(ids)
    stats.supervised_tokens += sum(l != IGNORE_INDEX for l in labels)
    return {"id": ex.id, "role": ex.role, "input_ids": ids, "labels": labels, "span_kinds": kinds}


def encode_example(ex: RoleExample, enc: TextEncoder, budget: ContextBudget | int,
                   stats: EncodeStats) -> list[dict]:
    """Training rows of one example; an int budget is a max_length with the default reserve."""
    if isinstance(budget, int):
        budget = ContextBudget.of(budget)
    fn = encode_per_step if ex.layout == "per_step" else encode_folded
    return fn(ex, enc, budget, stats)
