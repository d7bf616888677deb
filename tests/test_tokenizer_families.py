"""Whole-text tokenization for real tokenizer families (tests/tokenizer_families.py): for each,
a role's labels decode to exactly its target texts + EOS, a training row is the tokenizer's ids of
its text (so no supervised token is one that tokenizing the text would not produce), and every
inference prompt the team renders is a token prefix of the row that trains what comes after it."""
import pytest

import tokenizer_families
from conftest import load_template
from core.vocabulary import IGNORE_INDEX
from datamodules.views import role_view
from datamodules.span_tokenization import EncodeStats, encode_example
from prompting.prompt_template import PromptTemplate
from prompting.text_encoder import TextEncoder

ROLES = ("backbone", "planner", "caller", "summarizer")


@pytest.fixture(scope="module", params=tokenizer_families.FAMILIES)
def tokenizer(request, chains_trajectories, tmp_path_factory):
    tpl = PromptTemplate(load_template())
    texts = ["".join(s.text for s in tpl.render_history("backbone", t) if s.text)
             for t in chains_trajectories]
    tok = tokenizer_families.build(request.param, texts, tmp_path_factory.mktemp(request.param))
    if tok is None:
        pytest.skip(f"{request.param}: the optional package is not installed")
    return tok


def supervised_spans(row):
    """(start, end) index ranges of the runs of supervised tokens."""
    spans, start = [], None
    for i, lab in enumerate(row["labels"] + [IGNORE_INDEX]):
        if lab != IGNORE_INDEX and start is None:
            start = i
        elif lab == IGNORE_INDEX and start is not None:
            spans.append((start, i))
            start = None
    return spans


def decoded_between(tok, ids, a, b) -> str:
    """The text tokens a..b-1 add to the decoded text before them (a leading dummy-prefix space
    that decoding strips at the start of a text is kept this way)."""
    before = tok.decode(ids[:a], skip_special_tokens=False)
    return tok.decode(ids[:b], skip_special_tokens=False)[len(before):]


@pytest.mark.parametrize("template,layout", [("glpft", "folded"), ("alpha_umi_reference", "per_step")])
def test_labels_rows_and_prompts_on_whole_text_tokens(tokenizer, chains_trajectories, template, layout):
    tpl, enc = PromptTemplate(load_template(template)), TextEncoder(tokenizer, add_bos=True)
    checked_prompts = 0
    for role in ROLES:
        stats = EncodeStats()
        for traj in chains_trajectories[:8]:
            for ex in role_view(tpl, traj, role, layout):
                (row,) = encode_example(ex, enc, 100_000, stats)
                ids = row["input_ids"]
                segs = ex.context + (ex.target if layout == "per_step" else [s for st in ex.steps for s in st])
                assert ids == enc.bos + tokenizer("".join(enc.texts(segs)), add_special_tokens=False)["input_ids"]
                spans = supervised_spans(row)
                assert [decoded_between(tokenizer, ids, a, b) for a, b in spans] == \
                    [t + tokenizer.eos_token for t in ex.target_text()]
                if layout == "folded":  # the prompts the team renders at each step
                    turns = traj["turns"]
                    starts = iter(a for a, _ in spans)
                    for i, turn in enumerate(turns):
                        if turn["role"] in ("planner", "caller", "summarizer") and \
                                (role == "backbone" or turn["role"] == role):
                            prompt = enc.prompt_ids(tpl.render_prompt(role, {**traj, "turns": turns[:i]},
                                                                      turn["role"]))
                            assert ids[:len(prompt)] == prompt and len(prompt) == next(starts)
                            checked_prompts += 1
        assert stats.prefix_checked > 0 and stats.prefix_failures == 0, role
    assert checked_prompts > 0 or layout == "per_step"


def test_isolated_spaces_give_a_word_the_same_tokens_in_every_context(chains_trajectories, tmp_path):
    """With `isolate_spaces`, a name has one tokenization after a space, a quote or an underscore,
    so copying it from the prompt is copying tokens; the default byte-level BPE gives `ĠName` and
    `Name` unrelated ids."""
    tpl = PromptTemplate(load_template())
    texts = ["".join(s.text for s in tpl.render_history("backbone", t) if s.text) for t in chains_trajectories]
    for isolate in (False, True):
        tok = tokenizer_families.embedded_bpe(texts * 4, tmp_path, isolate_spaces=isolate)
        ids = lambda text: tok(text, add_special_tokens=False)["input_ids"]  # noqa: E731
        space, quoted = ids(" the"), ids('"the')
        shared = space[-len(quoted) + 1:] == quoted[1:]
        assert shared == isolate, (isolate, tok.convert_ids_to_tokens(space), tok.convert_ids_to_tokens(quoted))
        assert tok.decode(ids('{"city": "Oslo"} now')) == '{"city": "Oslo"} now'
