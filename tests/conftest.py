import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "data"
CHAINS = DATA / "toolbench" / "train_sample_chains.json"
RECIPES = REPO / "recipes"
# The fixed ToolBench-sample run the numerics tests pin (recipes/quickstart.yaml trains on the tool
# world since issue 22; tests/test_world_learning.py guards that one)
QUICKSTART = RECIPES / "toolbench_sample.yaml"
ABLATIONS = RECIPES / "ablations"
STRATEGIES = RECIPES / "strategy"


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


def kill_training_at(cmd: list[str], last_checkpoint: Path, ready, timeout_s: float) -> int:
    """Start `cmd` (a train.py command) from the repo, SIGKILL it once the global step saved in
    `last_checkpoint` satisfies `ready(step)`, and return that step."""
    import torch

    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + timeout_s
    def saved_step():
        try:
            return torch.load(last_checkpoint, map_location="cpu", weights_only=False)["global_step"]
        except (FileNotFoundError, EOFError, RuntimeError):  # not written yet, or being replaced
            return None

    while time.time() < deadline and proc.poll() is None:
        step = saved_step()
        if step is not None and ready(step):
            break
        time.sleep(0.2)
    assert proc.poll() is None, "the stage finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return torch.load(last_checkpoint, map_location="cpu", weights_only=False)["global_step"]
