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
from .role_examples import RoleExample



@dataclass
class EncodeStats:
    examples: int = 0
    sequences: int = 0
    tokens: int = 0
    supervised_tokens: int = 0
    dropped: Counter = field(default_factory=Counter)  # reason -> count

    def as_dict(self) -> dict:
        return {"examples": self.examples, "sequences": self.sequences, "tokens": self.tokens,
                "supervised_tokens": self.supervised_tokens, "dropped": dict(self.dropped)}


def _labelled(pieces, segments, supervised) -> tuple[list, list, list]:
    ids, labels, kinds = [], [], []
    for piece, seg, sup in zip(pieces, segments, supervised):
        ids += piece
        labels += piece if sup else [IGNORE_INDEX] * len(piece)
        kinds += [SPAN_KINDS.index(seg.kind) if sup else 0] * len(piece)
    return ids, labels, kinds


def encode_per_step(ex: RoleExample, enc: SegmentEncoder, max_len: int,
                    stats: EncodeStats) -> list[dict]:
    """Context truncated from the left (after BOS), never into the target."""
    stats.examples += 1
    segs = ex.context + ex.target
    pieces = enc.encode(segs)
    sup = [False] * len(ex.context) + [True] * len(ex.target)
    ids, labels, kinds = _labelled(pieces, segs, sup)
    n_target = sum(len(p) for p in pieces[len(ex.context):])
    if not any(s.text for s in ex.target if s.text is not EOS):
        stats.dropped["empty_target"] += 1
        return []
    budget = max_len - len(enc.bos)
    if n_target > budget:
        stats.dropped["target_too_long"] += 1
        return []
    if len(ids) > budget:
        cut = len(ids) - budget
        ids, labels, kinds = ids[cut:], labels[cut:], kinds[cut:]
        stats.dropped["context_truncated(kept)"] += 1
    return [_row(ex, enc, ids, labels, kinds, stats)]


def encode_folded(ex: RoleExample, enc: SegmentEncoder, max_len: int,
                  stats: EncodeStats) -> list[dict]:
    """One sequence per trajectory; split at step boundaries when longer than `max_len`, each
    piece starting again with the header (system prompt, tools, instruction)."""
    stats.examples += 1
    head_pieces = enc.encode(ex.context)
    if sum(map(len, head_pieces)) > max_len // 2:
        # A tool list longer than half the budget is cut at its end (the system segment comes first).
        head_pieces[0] = head_pieces[0][:max(0, max_len // 2 - sum(map(len, head_pieces[1:])))]
        stats.dropped["tool_list_trimmed(kept)"] += 1
    head = _labelled(head_pieces, ex.context, [False] * len(ex.context))
    budget = max_len - len(enc.bos) - len(head[0])
    steps = []
    for step in ex.steps:
        sup = [ex.is_supervised(s) for s in step]
        pieces = _trim_context(enc.encode(step), sup, budget, stats)
        steps.append(_labelled(pieces, step, sup))
    rows, cur = [], ([], [], [])
    for i, step in enumerate(steps):
        if len(step[0]) > budget:
            stats.dropped["step_too_long"] += 1
            continue
        if len(cur[0]) + len(step[0]) > budget:
            rows.append(cur)
            cur = ([], [], [])
        cur = tuple(a + b for a, b in zip(cur, step))
    rows.append(cur)
    out = []
    for ids, labels, kinds in rows:
        if any(l != IGNORE_INDEX for l in labels):
            out.append(_row(ex, enc, head[0] + ids, head[1] + labels, head[2] + kinds, stats))
    if len(out) > 1:
        stats.dropped["split_at_step_boundary(kept)"] += 1
    return out


def _trim_context(pieces: list[list[int]], supervised: list[bool], budget: int,
                  stats: EncodeStats) -> list[list[int]]:
    """A step longer than the budget loses tokens from the end of its longest context pieces
    (long tool observations, usually), never from a target."""
    excess = sum(map(len, pieces)) - budget
    if excess <= 0:
        return pieces
    pieces = list(pieces)
    context = sorted((i for i, sup in enumerate(supervised) if not sup), key=lambda i: -len(pieces[i]))
    for i in context:
        if excess <= 0:
            break
        cut = min(excess, len(pieces[i]))
        pieces[i] = pieces[i][:len(pieces[i]) - cut]
        excess -= cut
    stats.dropped["context_trimmed(kept)"] += 1
    return pieces


def _row(ex, enc, ids, labels, kinds, stats) -> dict:
    ids, labels, kinds = enc.bos + ids, [IGNORE_INDEX] * len(enc.bos) + labels, [0] * len(enc.bos) + kinds
    stats.sequences += 1
    stats.tokens += len(ids)
    stats.supervised_tokens += sum(l != IGNORE_INDEX for l in labels)
    return {"id": ex.id, "role": ex.role, "input_ids": ids, "labels": labels, "span_kinds": kinds}


def encode_example(ex: RoleExample, enc: SegmentEncoder, max_len: int, stats: EncodeStats) -> list[dict]:
    fn = encode_per_step if ex.layout == "per_step" else encode_folded
    return fn(ex, enc, max_len, stats)
