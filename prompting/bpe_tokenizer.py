"""The embedded default tokenizer: a byte-level BPE trained locally on the training corpus."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Iterable

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

SPECIAL = {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"}


def train_bpe_tokenizer(texts: Iterable[str], vocab_size: int, out_dir: str | Path,
                        min_frequency: int = 2, max_token_chars: int = 64,
                        isolate_spaces: bool = False) -> PreTrainedTokenizerFast:
    """Train, save with `save_pretrained` into `out_dir`, and return the HF tokenizer.
    Byte-level, so any text encodes and decodes back exactly.

    Pre-tokens (words, runs of punctuation) longer than `max_token_chars` are cut into pieces of
    that length: BPE training is quadratic in the length of a pre-token, so one long space-free
    string (a base64 blob in an observation) would otherwise dominate training time and put
    enormous tokens in the vocabulary.

    `isolate_spaces`: every space is a token of its own, so a word has the same tokens after a
    space as after a quote or an underscore (`" Tukra"` and `{"x": "Tukra"}` share `Tukra`): a
    name in the prompt can then be copied token for token. Byte-level BPE otherwise learns
    `ĠTukra` and `Tukra` as unrelated tokens (bench/world_learning.md, "Tokens that copy")."""
    tok = Tokenizer(models.BPE())
    spaces = [pre_tokenizers.Split(" ", behavior="isolated")] if isolate_spaces else []
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        *spaces,
        pre_tokenizers.ByteLevel(add_prefix_space=False),
        pre_tokenizers.Split(Regex(f".{{1,{int(max_token_chars)}}}"), behavior="isolated")])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                  max_token_length=max_token_chars,
                                  special_tokens=list(SPECIAL.values()),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, **SPECIAL)
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    hf.save_pretrained(tmp)
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.replace(out_dir)
    return hf
