"""Whole-text tokenization against the former segment-by-segment one, per tokenizer family
(tests/tokenizer_families.py), on every role's folded training rows of the shipped chains
(glpft template, no context cut):

- prompts_differ: target prompts whose tokens as a server gets them (the prompt's text, tokenized)
  differ from the tokens the member builds for it;
- prefix_failures: target prompts whose served tokens are not a prefix of the training row;
- foreign_supervised: supervised tokens that tokenizing the row's text would not produce (same
  token at the same character), out of all supervised tokens.

    python bench/tokenizer_parity.py
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from conftest import CHAINS, load_template  # noqa: E402
from datamodules.views import role_view  # noqa: E402
from prompting.prompt_template import PromptTemplate  # noqa: E402
from prompting.text_encoder import TextEncoder  # noqa: E402
from trajectories.sources import load_trajectories  # noqa: E402
import tokenizer_families  # noqa: E402

ROLES = ("backbone", "planner", "caller", "summarizer")


def tokens_at(tok, text: str, at: int = 0) -> list[tuple[int, int]]:
    """(id, start char) of the tokens of `text`, placed at character `at`."""
    out = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    return [(i, at + a) for i, (a, _) in zip(out["input_ids"], out["offset_mapping"])]


def row_tokens(tok, texts: list[str], segment_wise: bool) -> list[list[tuple[int, int]]]:
    """Per segment, (id, start char) of its tokens, as either encoder builds them."""
    if not segment_wise:
        whole = tokens_at(tok, "".join(texts))
        starts = [sum(map(len, texts[:i])) for i in range(len(texts))]
        pieces = [[] for _ in texts]
        for t in whole:
            pieces[max(i for i, s in enumerate(starts) if s <= t[1])].append(t)
        return pieces
    pieces, at = [], 0
    for text in texts:
        pieces.append([(tok.eos_token_id, at)] if text == tok.eos_token else tokens_at(tok, text, at))
        at += len(text)
    return pieces


def measure(tok, trajectories) -> dict:
    tpl, enc = PromptTemplate(load_template()), TextEncoder(tok, add_bos=True)
    out = {k: {"prompts": 0, "prompts_differ": 0, "prefix_failures": 0, "supervised": 0,
               "foreign_supervised": 0} for k in ("before", "after")}
    for role in ROLES:
        for traj in trajectories:
            for ex in role_view(tpl, traj, role, "folded"):
                segs = ex.context + [s for step in ex.steps for s in step]
                texts, sup = enc.texts(segs), [False] * len(ex.context) + [ex.is_supervised(s) for s in segs[len(ex.context):]]
                whole_text = "".join(texts)
                whole = set(tokens_at(tok, whole_text))
                for key, segment_wise in (("before", True), ("after", False)):
                    m = out[key]
                    pieces = row_tokens(tok, texts, segment_wise)
                    row = [t for p in pieces for t in p]
                    m["supervised"] += sum(len(p) for p, s in zip(pieces, sup) if s)
                    m["foreign_supervised"] += sum(t not in whole for p, s in zip(pieces, sup) if s for t in p)
                    chars = n = 0
                    for i, (text, piece) in enumerate(zip(texts, pieces)):
                        if sup[i] and not sup[i - 1]:
                            served = [t[0] for t in tokens_at(tok, whole_text[:chars])]
                            m["prompts"] += 1
                            m["prompts_differ"] += served != [t[0] for t in row[:n]]
                            m["prefix_failures"] += served != [t[0] for t in row][:len(served)]
                        chars, n = chars + len(text), n + len(piece)
    return out


def main() -> int:
    trajectories = load_trajectories(CHAINS, format="alpha_umi_chains").trajectories
    tpl = PromptTemplate(load_template())
    texts = ["".join(s.text for s in tpl.render_history("backbone", t) if s.text) for t in trajectories]
    with tempfile.TemporaryDirectory() as tmp:
        for family in tokenizer_families.FAMILIES:
            tok = tokenizer_families.build(family, texts, Path(tmp) / family)
            if tok is None:
                print(f"{family}: not installed")
                continue
            r = measure(tok, trajectories)
            b, a = r["before"], r["after"]
            print(f"{family}: {a['prompts']} prompts; differ {b['prompts_differ']} -> {a['prompts_differ']}; "
                  f"prefix failures {b['prefix_failures']} -> {a['prefix_failures']}; foreign supervised "
                  f"tokens {b['foreign_supervised']}/{b['supervised']} -> {a['foreign_supervised']}/{a['supervised']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
