"""Tokenization with span labels: exact targets, EOS, span kinds, layouts and lengths."""
import pytest
import torch

from conftest import load_template
from core.vocabulary import SPAN_KINDS
from prompting.prompt_template import PromptTemplate
from datamodules.views import role_view
from core.vocabulary import IGNORE_INDEX
from datamodules.span_tokenization import EncodeStats, encode_example
from prompting.text_encoder import TextEncoder

ROLES = ("backbone", "planner", "caller", "summarizer")


def supervised_runs(row):
    """Contiguous runs of supervised token ids."""
    runs, cur = [], []
    for tok, lab in zip(row["input_ids"], row["labels"]):
        if lab != IGNORE_INDEX:
            assert lab == tok, "labels are aligned with input_ids"
            cur.append(tok)
        elif cur:
            runs.append(cur)
            cur = []
    return runs + ([cur] if cur else [])


@pytest.mark.parametrize("layout,template", [("folded", "glpft"), ("per_step", "glpft"),
                                             ("per_step", "alpha_umi_reference")])
@pytest.mark.parametrize("role", ROLES)
def test_supervised_tokens_decode_to_target_plus_eos(chains_trajectories, bpe_tokenizer, role, layout, template):
    tpl = PromptTemplate(load_template(template))
    enc = TextEncoder(bpe_tokenizer, add_bos=True)
    checked = 0
    for traj in chains_trajectories:
        for ex in role_view(tpl, traj, role, layout):
            rows = encode_example(ex, enc, 100_000, stats=EncodeStats())
            assert len(rows) == 1
            runs = supervised_runs(rows[0])
            decoded = [bpe_tokenizer.decode(r) for r in runs]
            assert decoded == [t + bpe_tokenizer.eos_token for t in ex.target_text()]
            checked += len(runs)
    assert checked > 0


def test_span_kinds_follow_the_fields(chains_trajectories, bpe_tokenizer):
    tpl = PromptTemplate(load_template())
    enc = TextEncoder(bpe_tokenizer, add_bos=True)
    traj = next(t for t in chains_trajectories if any(x["role"] == "summarizer" for x in t["turns"]))
    row = encode_example(role_view(tpl, traj, "backbone")[0], enc, 100_000, EncodeStats())[0]
    text_of = {k: bpe_tokenizer.decode([t for t, kind, lab in zip(row["input_ids"], row["span_kinds"], row["labels"])
                                        if kind == SPAN_KINDS.index(k) and lab != IGNORE_INDEX]) for k in SPAN_KINDS[1:]}
    first_call = next(x for x in traj["turns"] if x["role"] == "caller")
    answer = next(x["answer"] for x in traj["turns"] if x["role"] == "summarizer")
    assert f"Action: {first_call['name']}" in text_of["action"]
    assert answer in text_of["answer"] and "Action:" not in text_of["answer"]
    assert "Next: caller." in text_of["thought"]
    assert all(k == 0 for k, lab in zip(row["span_kinds"], row["labels"]) if lab == IGNORE_INDEX)


def test_per_step_keeps_the_header_and_cuts_history_from_the_left_never_the_target(
        chains_trajectories, bpe_tokenizer):
    from datamodules.step_context import ContextBudget
    tpl = PromptTemplate(load_template())
    enc = TextEncoder(bpe_tokenizer, add_bos=True)
    ex = role_view(tpl, chains_trajectories[0], "caller", "per_step")[-1]
    full = encode_example(ex, enc, 100_000, EncodeStats())[0]
    n_target = sum(l != IGNORE_INDEX for l in full["labels"])
    header = enc.bos + [t for p in enc.encode(ex.context[:ex.n_header]) for t in p]
    max_len = 2 * len(header) + 2 * n_target + 40
    stats = EncodeStats()
    short = encode_example(ex, enc, ContextBudget(max_len, n_target), stats)[0]
    assert len(short["input_ids"]) == max_len
    assert short["input_ids"][:len(header)] == header          # the header is kept
    kept = max_len - len(header)                                 # the history's tail + the target
    assert short["input_ids"][len(header):] == full["input_ids"][-kept:]
    assert short["labels"][-n_target:] == full["labels"][-n_target:]
    assert stats.dropped["context_truncated(kept)"] == 1
    dropped = EncodeStats()
    assert encode_example(ex, enc, ContextBudget(2 * n_target, n_target // 2), dropped) == []
    assert dropped.dropped["target_too_long"] == 1


def test_folded_split_keeps_the_header_in_every_piece(chains_trajectories, bpe_tokenizer):
    tpl = PromptTemplate(load_template())
    enc = TextEncoder(bpe_tokenizer, add_bos=True)
    traj = max(chains_trajectories, key=lambda t: len(t["turns"]))
    ex = role_view(tpl, traj, "planner")[0]
    whole = encode_example(ex, enc, 100_000, EncodeStats())[0]
    stats = EncodeStats()
    pieces = encode_example(ex, enc, len(whole["input_ids"]) // 2 + 200, stats)
    assert len(pieces) >= 2
    header = [enc.bos[0]] + [t for p in enc.encode(ex.context) for t in p]
    for piece in pieces:
        assert piece["input_ids"][:len(header)] == header
    # every supervised token of the whole sequence is kept across the pieces (nothing silently lost)
    n_sup = lambda r: sum(l != IGNORE_INDEX for l in r["labels"])
    assert sum(map(n_sup, pieces)) == n_sup(whole) or stats.dropped["step_too_long"] > 0


def test_empty_target_is_dropped_with_a_count(bpe_tokenizer):
    tpl = PromptTemplate(load_template())
    traj = {"id": "t", "tools": [{"name": "a", "description": "", "parameters": {}}], "instruction": "do",
            "turns": [{"role": "planner", "thought": "x", "decision": "conclusion"},
                      {"role": "summarizer", "answer": ""}]}
    stats = EncodeStats()
    ex = role_view(tpl, traj, "summarizer", "per_step")[0]
    assert encode_example(ex, TextEncoder(bpe_tokenizer, add_bos=True), 1000, stats) == []
    assert stats.dropped["empty_target"] == 1


def test_folded_and_per_step_give_the_same_token_losses(chains_trajectories, bpe_tokenizer):
    """Each step's per-step context is a prefix of the folded sequence, so a causal LM gives the
    same loss to every target token in both layouts, at far fewer tokens for the folded one."""
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(bpe_tokenizer), hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                         max_position_embeddings=8192)).eval()
    tpl, enc = PromptTemplate(load_template()), TextEncoder(bpe_tokenizer, add_bos=True)

    def token_losses(row):
        ids = torch.tensor([row["input_ids"]])
        labels = torch.tensor(row["labels"][1:])
        with torch.no_grad():
            logits = model(ids).logits[0, :-1]
        losses = torch.nn.functional.cross_entropy(logits, labels.clamp(min=0), reduction="none")
        return losses[labels != IGNORE_INDEX]

    traj = min(chains_trajectories, key=lambda t: sum(len(str(x)) for x in t["turns"]))
    for role in ROLES:
        folded = encode_example(role_view(tpl, traj, role)[0], enc, 100_000, EncodeStats())[0]
        steps = [encode_example(ex, enc, 100_000, EncodeStats())[0]
                 for ex in role_view(tpl, traj, role, "per_step")]
        per_step = torch.cat([token_losses(r) for r in steps])
        assert torch.allclose(token_losses(folded), per_step, atol=1e-5), role
        if len(steps) > 1:
            assert len(folded["input_ids"]) < sum(len(r["input_ids"]) for r in steps)
