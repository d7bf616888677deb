"""The context of every step, for training rows and inference prompts alike: one function, one
budget.

A budget is `max_length` (tokens of a training row; a prompt plus its generation) and `reserve`
(the room a prompt leaves for what the model writes; `data.context_reserve`). With the header
(system prompt with the tools, and the instruction) fitted first, `room = max_length - BOS -
header - reserve` tokens are left for the steps before the point where the model writes.

The rules depend only on what comes *before* a point of the sequence, so a prompt built at
inference is exactly a prefix of the training row that supervises the tokens after it:
1. header: longer than half of `max_length`, its first (system) segment is cut at its end (the end
   of the tool list);
2. unit: the sequence after the header is cut into units, each a run of context followed by one
   target (a turn the role writes, with its EOS). A context piece (an observation, a user
   message, another role's turn) is cut at its end so that its unit, read left to right, stays
   within `room`, leaving room for the turn boundaries after it (turn prefixes and suffixes, EOS:
   `protected`), which are kept whole, so the prefix of the turn being predicted is never cut;
   targets are never cut;
3. history: unit k is preceded by units s(k)..k-1, the most that fit `room` together with unit
   k's context. Training groups the units with the same s(k) into one row (header + units
   s..last of the group; only the group's targets supervised), so a trajectory that fits is one
   row, and a longer one gives rows that overlap in context only. A row longer than
   `max_length` (a target longer than `reserve`) loses its tail.
Per-step templates (cues, merged targets) use rule 1 and keep the history's last `room` tokens.

The rules count the tokens of the whole text (prompting.text_encoder.Layout) and cut at token
boundaries that are character boundaries; the text kept is then tokenized again (`fitted_text`),
so a prompt's ids are the tokenizer's ids of its text, what a server given that text computes.
"""
from __future__ import annotations

from collections import Counter

from core.context_budget import ContextBudget
from prompting.prompt_template import EOS, TARGET_TURNS


def fit_header(pieces: list[list[int]], max_length: int, counts: Counter | None = None) -> list[list[int]]:
    """Rule 1: a header longer than half the budget loses the end of its first segment."""
    if sum(map(len, pieces)) <= max_length // 2:
        return pieces
    if counts is not None:
        counts["tool_list_trimmed(kept)"] += 1
    pieces = list(pieces)
    pieces[0] = pieces[0][:max(0, max_length // 2 - sum(map(len, pieces[1:])))]
    return pieces


def units(supervised: list[bool]) -> list[tuple[int, int]]:
    """Index ranges [a, b) of the pieces that form each unit: a run of context pieces and the run
    of target pieces after it (the last unit may have no target)."""
    out, start, i, n = [], 0, 0, len(supervised)
    while i < n:
        while i < n and not supervised[i]:
            i += 1
        while i < n and supervised[i]:
            i += 1
        out.append((start, i))
        start = i
    if not out or supervised[-1]:
        out.append((n, n))  # a prompt ending right after a target: an empty last unit
    return out


def protected(segments) -> list[bool]:
    """Turn boundaries (a turn's prefix or suffix, an EOS): never cut for a context piece's sake."""
    return [s.text is EOS or s.turn is None for s in segments]


def trim_unit(pieces: list[list[int]], supervised: list[bool], room: int,
              counts: Counter | None = None, keep: list[bool] | None = None) -> list[list[int]]:
    """Rule 2: left to right, a context piece is cut so the unit, with the `keep` (protected)
    context pieces after it, stays within `room`."""
    keep = keep or [False] * len(pieces)
    after, reserved = [], 0
    for piece, sup, k in zip(reversed(pieces), reversed(supervised), reversed(keep)):
        after.append(reserved)
        reserved += len(piece) if k and not sup else 0
    after.reverse()
    out, used, cut = [], 0, False
    for piece, sup, later in zip(pieces, supervised, after):
        if not sup and used + len(piece) + later > room:
            piece, cut = piece[:max(0, room - used - later)], True
        out.append(piece)
        used += len(piece)
    if cut and counts is not None:
        counts["context_trimmed(kept)"] += 1
    return out


def history_start(lengths: list[int], k: int, context: int, room: int) -> int:
    """Rule 3: the first unit kept before unit k, given unit k's context tokens."""
    s, used = k, context
    while s > 0 and used + lengths[s - 1] <= room:
        used += lengths[s - 1]
        s -= 1
    return s


def _fit(header, pieces, supervised, budget, n_bos, counts=None, keep=None):
    header = fit_header(header, budget.max_length, counts)
    room = budget.max_length - n_bos - sum(map(len, header)) - budget.reserve
    spans = units(supervised)
    pieces = list(pieces)
    keep = keep or [False] * len(pieces)
    for a, b in spans:
        pieces[a:b] = trim_unit(pieces[a:b], supervised[a:b], room, counts, keep[a:b])
    lengths = [sum(len(p) for p in pieces[a:b]) for a, b in spans]
    contexts = [sum(len(p) for p, sup in zip(pieces[a:b], supervised[a:b]) if not sup)
                for a, b in spans]
    starts = [history_start(lengths, k, contexts[k], room) for k in range(len(spans))]
    return header, pieces, spans, starts


def folded_rows(header: list[list[int]], pieces: list[list[int]], supervised: list[bool],
                budget: ContextBudget, n_bos: int, counts: Counter | None = None,
                keep: list[bool] | None = None):
    """Training: (fitted header, trimmed pieces, rows), each row (a, first, b): pieces a..first-1
    are context only, pieces first..b-1 keep their supervision; units with the same history start
    share one row."""
    header, pieces, spans, starts = _fit(header, pieces, supervised, budget, n_bos, counts, keep)
    rows, k = [], 0
    while k < len(spans):
        last = k
        while last + 1 < len(spans) and starts[last + 1] == starts[k]:
            last += 1
        rows.append((spans[starts[k]][0], spans[k][0], spans[last][1]))
        k = last + 1
    return header, pieces, rows


def folded_prompt(header: list[list[int]], pieces: list[list[int]], supervised: list[bool],
                  budget: ContextBudget, n_bos: int, keep: list[bool] | None = None) -> list[int]:
    """Inference: the tokens of a prompt, which ends where the model writes, fitted by the same
    rules as `folded_rows`: a prefix of the row that supervises what comes next."""
    header, pieces, spans, starts = _fit(header, pieces, supervised, budget, n_bos, keep=keep)
    first = spans[starts[-1]][0]
    return [t for p in header for t in p] + [t for p in pieces[first:] for t in p]


def per_step_context(header: list[list[int]], rest: list[list[int]], budget: ContextBudget,
                     n_bos: int, target_len: int = 0, counts: Counter | None = None) -> list[int]:
    """Per-step layout (training and inference): the header (rule 1) and the last tokens of the
    rest of the context that leave room for max(reserve, target_len) tokens."""
    header = fit_header(header, budget.max_length, counts)
    head = [t for p in header for t in p]
    body = [t for p in rest for t in p]
    room = max(0, budget.max_length - n_bos - len(head) - max(budget.reserve, target_len))
    if len(body) > room and counts is not None:
        counts["context_truncated(kept)"] += 1
    return head + body[len(body) - room:] if len(body) > room else head + body


def fitted_text(enc, prompt, role: str, budget: ContextBudget, n_header: int = 2) -> str:
    """Inference: the text of a rendered prompt (prompting.RenderedPrompt) for a model trained as
    `role`, fitted to `budget` as training fitted its rows (cut at character boundaries); a plain
    list of segments is read as a per-step prompt whose first `n_header` segments are the header."""
    segments = list(prompt)
    lay = enc.layout(segments)
    n_head = getattr(prompt, "header_len", n_header)
    header, rest = lay.pieces[:n_head], lay.pieces[n_head:]
    if not getattr(prompt, "folded", False):
        kept = per_step_context(header, rest, budget, len(enc.bos))
    else:
        supervised = [s.producer in TARGET_TURNS[role] for s in segments[n_head:]]
        kept = folded_prompt(header, rest, supervised, budget, len(enc.bos), protected(segments[n_head:]))
    return "".join(lay.text[a:b] for a, b in lay.spans(kept))


def prompt_ids(enc, prompt, role: str, budget: ContextBudget, n_header: int = 2) -> list[int]:
    """Inference: the ids of `fitted_text`: the tokenizer's ids of the text, BOS in front."""
    return enc.bos + enc.ids(fitted_text(enc, prompt, role, budget, n_header))
