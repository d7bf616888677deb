import os
from pathlib import Path

import pytest
from omegaconf import OmegaConf

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "data"
CHAINS = DATA / "toolbench" / "train_sample_chains.json"


def load_template(name: str = "glpft") -> dict:
    return OmegaConf.to_container(OmegaConf.load(REPO / "recipes" / "template" / f"{name}.yaml"))["template"]


@pytest.fixture(scope="session")
def chains_trajectories():
    from trajectories.sources import load_trajectories
    return load_trajectories(CHAINS, format="alpha_umi_chains").trajectories


@pytest.fixture(scope="session")
def bpe_tokenizer(tmp_path_factory, chains_trajectories):
    """A byte-level BPE trained on the rendered sample corpus, as the quickstart does."""
    from prompting.bpe_tokenizer import train_bpe_tokenizer
    from prompting.prompt_template import PromptTemplate
    tpl = PromptTemplate(load_template())
    texts = [s.text for t in chains_trajectories for s in tpl.render_history("backbone", t) if s.text]
    return train_bpe_tokenizer(texts, vocab_size=600, out_dir=tmp_path_factory.mktemp("tok") / "bpe")
