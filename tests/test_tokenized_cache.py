"""A damaged tokenized cache (an Arrow file truncated or deleted, rows missing) is a cache: the
next build says so in one line, removes the entry and rebuilds it, with the same rows."""
import json

import pytest

from conftest import CHAINS, load_template
from datamodules.tool_use_datamodule import ToolUseDataModule

SOURCES = [{"path": str(CHAINS), "format": "alpha_umi_chains"}]


def _rows(tokenizer, cache):
    dm = ToolUseDataModule(sources=SOURCES, role="planner", template=load_template(), tokenizer=tokenizer,
                           max_length=2048, val_fraction=0.2, cache_dir=str(cache), seed=0, add_bos=True)
    dm.setup()
    return [r["input_ids"] for r in dm.splits["train"]], [r["input_ids"] for r in dm.splits["val"]]


def _truncate(path):
    with open(path, "r+b") as fh:
        fh.truncate(path.stat().st_size // 2)


def _fewer_rows(entry):
    stats = json.loads((entry / "stats.json").read_text())
    stats["train"]["sequences"] += 1  # as if a cut at a record boundary lost the last row
    (entry / "stats.json").write_text(json.dumps(stats))


@pytest.mark.parametrize("damage", [_truncate, lambda p: p.unlink(), lambda p: _fewer_rows(p.parent.parent)],
                         ids=["truncated", "deleted", "rows-missing"])
def test_a_damaged_cache_is_rebuilt_with_one_line(bpe_tokenizer, tmp_path, capsys, damage):
    cache = tmp_path / "cache"
    first = _rows(bpe_tokenizer, cache)
    (entry,) = [p for p in cache.iterdir() if p.is_dir()]
    damage(entry / "train" / "rows.arrow")
    capsys.readouterr()
    assert _rows(bpe_tokenizer, cache) == first
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and f"the tokenized cache {entry} is damaged" in err[0]
    assert "removing and rebuilding it" in err[0] and "Traceback" not in err[0]
    assert _rows(bpe_tokenizer, cache) == first  # the rebuilt entry is read as is
    assert not capsys.readouterr().err.strip()
