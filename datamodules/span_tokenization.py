"""Segments to token ids with exact span labels.

Each segment is tokenized on its own and the pieces are concatenated, so a span starts and ends on
a token boundary. Labels are -100 except on the role's target spans and their EOS; `span_kinds`
gives each supervised token its kind (1 thought, 2 action, 3 answer) for per-kind loss curves.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from core.vocabulary import IGNORE_INDEX, SPAN_KINDS
from prompting.prompt_template import EOS
from prompting.segment_encoder import SegmentEncoder
from .views import RoleExample
from .step_context import ContextBudget, fit_header, folded_rows, per_step_context



@dataclass
class EncodeStats:
    examples: int = 0
    sequences: int = 0
    tokens: int = 0
    supervised_tokens: int = 0
    dropped: Counter = field(default_factory=Counter)  # reason -> count
    max_target_tokens: Counter = field(default_factory=Counter)  # producing turn -> longest target

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
                "max_target_tokens": dict(self.max_target_tokens)}


def _labelled(pieces, segments, supervised) -> tuple[list, list, list]:
    ids, labels, kinds = [], [], []
    for piece, seg, sup in zip(pieces, segments, supervised):
        ids += piece
        labels += piece if sup else [IGNORE_INDEX] * len(piece)
        kinds += [SPAN_KINDS.index(seg.kind) if sup else 0] * len(piece)
    return ids, labels, kinds


def encode_per_step(ex: RoleExample, enc: SegmentEncoder, budget: ContextBudget,
                    stats: EncodeStats) -> list[dict]:
    """The header kept, the rest of the context cut from the left (step_context), never the target."""
    stats.examples += 1
    n_head = ex.n_header
    pieces = enc.encode(ex.context + ex.target)
    head, rest, target = pieces[:n_head], pieces[n_head:len(ex.context)], pieces[len(ex.context):]
    if not any(s.text.strip() for s in ex.target if s.text is not EOS):
        stats.dropped["empty_target"] += 1
        return []
    n_target = sum(map(len, target))
    head = fit_header(head, budget.max_length, stats.dropped)
    if n_target > budget.max_length - len(enc.bos) - sum(map(len, head)):
        stats.dropped["target_too_long"] += 1
        return []
    context = per_step_context(head, rest, budget, len(enc.bos), n_target, stats.dropped)
    target_ids, target_labels, target_kinds = _labelled(target, ex.target, [True] * len(ex.target))
    stats.note_target(ex.target, target)
    return [_row(ex, enc, context + target_ids, [IGNORE_INDEX] * len(context) + target_labels,
                 [0] * len(context) + target_kinds, stats)]


def encode_folded(ex: RoleExample, enc: SegmentEncoder, budget: ContextBudget,
                  stats: EncodeStats) -> list[dict]:
    """One sequence per trajectory, or rows overlapping in context when it does not fit
    (step_context)."""
    stats.examples += 1
    segs = [s for step in ex.steps for s in step]
    pieces, sup = enc.encode(segs), [ex.is_supervised(s) for s in segs]
    stats.note_target([s for s, k in zip(segs, sup) if k], [p for p, k in zip(pieces, sup) if k])
    header, pieces, rows = folded_rows(enc.encode(ex.context), pieces, sup, budget, len(enc.bos),
                                       stats.dropped)
    head = _labelled(header, ex.context, [False] * len(ex.context))
    room = budget.max_length - len(enc.bos)
    out = []
    for a, first, b in rows:
        body = _labelled(pieces[a:b], segs[a:b], [False] * (first - a) + sup[first:b])
        ids, labels, kinds = (x + y for x, y in zip(head, body))
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


def encode_example(ex: RoleExample, enc: SegmentEncoder, budget: ContextBudget | int,
                   stats: EncodeStats) -> list[dict]:
    """Training rows of one example; an int budget is a max_length with the default reserve."""
    if isinstance(budget, int):
        budget = ContextBudget.of(budget)
    fn = encode_per_step if ex.layout == "per_step" else encode_folded
    return fn(ex, enc, budget, stats)
