import os

import pytest
import torch

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
torch.set_num_threads(2)


@pytest.fixture(scope="session")
def toy():
    from cancel_cli.config import load_policy

    return load_policy("toy")


@pytest.fixture()
def store(tmp_path):
    from cancel_cli.store import Store

    return Store(tmp_path / "results")


@pytest.fixture(scope="session")
def toy_batch(toy):
    """One rewarded GRPO batch of the toy: 8 prompts x 8 rollouts."""
    from cancel_cli.analysis.common import ProblemSource, RolloutConfig, sample_batch

    cfg = RolloutConfig(prompts=8, n=8, seed=3)
    return sample_batch(toy, ProblemSource("toy", 3).take(8), cfg, torch.Generator().manual_seed(3))
