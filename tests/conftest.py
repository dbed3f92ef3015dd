import os
from pathlib import Path

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
    from cancel_cli.rollout import ProblemSource, RolloutConfig, sample_batch

    cfg = RolloutConfig(prompts=8, n=8, seed=3)
    return sample_batch(toy, ProblemSource("toy", 3).take(8), cfg, torch.Generator().manual_seed(3))


@pytest.fixture()
def shared_data(monkeypatch):
    """The benchmark files in ../shared/data/benchmarks beside the checkout (or a worktree's parent), passed
    to the product code the way a user does: through $CANCEL_DATA."""
    here = Path(__file__).resolve().parent.parent
    found = next((p / "shared" / "data" / "benchmarks" for p in here.parents
                  if (p / "shared" / "data" / "benchmarks").is_dir()), None)
    if found is None:
        pytest.skip("no shared/data/benchmarks folder beside the checkout (the benchmark files are not in the repo)")
    monkeypatch.setenv("CANCEL_DATA", str(found))
    return found
