"""verl integration on CPU without Ray: plugin registration, hydra config, the --dry-run command, and the
plan-to-verl layout on DataProto (the Ray/TransferQueue harness is tests/test_verl_harness.py)."""

import shlex
import subprocess
import sys

import numpy as np
import pytest
import torch

pytest.importorskip("verl")
pytest.importorskip("transfer_queue")


def test_plugin_registers_in_a_fresh_process():
    code = ("import verl\nfrom verl.trainer.ppo.v1.trainer_base import TRAINER_REGISTRY\n"
            "from cancel_cli.verl_ext.trainer import CancelSyncTrainer\n"
            "assert TRAINER_REGISTRY['cancel_sync'] is CancelSyncTrainer, sorted(TRAINER_REGISTRY)\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]


def _compose(overrides):
    from hydra import compose, initialize_config_dir
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import validate_config

    from cancel_cli.verl_ext.launcher import CONFIG_DIR

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        cfg = compose("cancel_grpo", overrides=overrides)
    validate_config(config=cfg, use_reference_policy=need_reference_policy(cfg), use_critic=need_critic(cfg))
    return cfg


def test_hydra_config_composes_and_passes_verl_checks():
    cfg = _compose(["actor_rollout_ref.model.path=Qwen/Qwen3-4B-Base"])
    a = cfg.actor_rollout_ref.actor
    assert (a.clip_ratio_low, a.clip_ratio_high, a.loss_agg_mode) == (0.2, 0.28, "token-mean")
    assert a.entropy_coeff == 0 and not a.use_kl_loss and not cfg.algorithm.use_kl_in_reward
    assert a.optim.lr == 1e-6 and a.ppo_mini_batch_size == 32 and cfg.data.train_batch_size == 128
    assert cfg.actor_rollout_ref.rollout.n == 8 and cfg.data.max_response_length == 8192
    assert cfg.trainer.v1.trainer_mode == "cancel_sync"


def test_dry_run_prints_a_command_verl_accepts(tmp_path):
    from typer.testing import CliRunner

    from cancel_cli.cli import app

    res = CliRunner().invoke(app, ["--results", str(tmp_path), "train", "--engine", "verl", "--model", "qwen3-4b",
                                   "--preset", "train_qwen3-4b", "--qb", "--rb", "--dry-run"])
    assert res.exit_code == 0, res.output
    cmd = shlex.split(res.output.strip().splitlines()[-1])
    assert cmd[1:3] == ["-m", "verl.trainer.main_ppo"]
    overrides = [c for c in cmd[3:] if not c.startswith("--config")]
    cfg = _compose(overrides)  # what verl's main does with the same config path and overrides
    assert cfg.cancel.mini_batching == "query-preserved"
    assert cfg.trainer.v1.sampler.custom_sampler.name == "RewardBalancedReplayBuffer"
    assert cfg.trainer.v1.sampler.sampler_kwargs.tau == 0.5
    assert cfg.actor_rollout_ref.model.path == "Qwen/Qwen3-4B-Base"
    assert not list(tmp_path.glob("train/*"))  # a dry run writes nothing


@pytest.mark.parametrize("dp", [1, 2, 4])
@pytest.mark.parametrize("plan", ["query-preserved", "sign-partitioned", "random"])
def test_plan_layout_on_dataproto(dp, plan):
    """verl_order maps make_plan's mini-batches onto verl's dispatch (contiguous dp shards, k-th local
    chunk of every rank = global mini-batch k); GRPO advantages are unchanged by the reordering."""
    from verl import DataProto
    from verl.trainer.ppo.core_algos import compute_grpo_outcome_advantage

    from cancel_cli.grpo.plans import make_plan
    from cancel_cli.verl_ext.layout import global_minibatches, padded_size, verl_order, workload

    G, n, L, P = 16, 8, 64, 16
    rng = np.random.default_rng(dp)
    resp_len = rng.integers(4, L, G * n)
    reward = rng.integers(0, 2, G * n).astype(float)
    uid = np.array([f"q{i // n}" for i in rng.permutation(G * n)], dtype=object)  # groups arrive interleaved
    before, _ = compute_grpo_outcome_advantage(torch.zeros(G * n, 1) + torch.tensor(reward)[:, None],
                                               torch.ones(G * n, 1), uid)
    mb = 4 * n
    p = make_plan(plan, uid, before[:, 0].numpy(), resp_len, mb, seed=3)
    size = padded_size(p.minibatches, mb)
    seq = np.concatenate([resp_len + P, np.full(size - G * n, 128)])  # padding samples: verl's 128-token no-ops
    order = verl_order(p.minibatches, range(G * n, size), seq, mb, dp)
    assert sorted(order) == list(range(size))
    mask = torch.zeros(size, P + L, dtype=torch.long)
    for i, s in enumerate(seq):
        mask[i, : min(s, P + L)] = 1
    data = DataProto.from_dict(tensors={"attention_mask": mask, "idx": torch.arange(size)})
    data.reorder(torch.tensor(order))
    shards, local = data.chunk(dp), mb // dp  # what verl's dispatch gives each rank
    for k, m in enumerate(p.minibatches):
        got = [int(i) for s in shards for i in s.batch["idx"][k * local : (k + 1) * local]]
        assert sorted(i for i in got if i < G * n) == sorted(m)  # global mini-batch k == plan mini-batch k
        assert sorted(got) == sorted(global_minibatches(order, mb, dp)[k])  # the inverse view the trainer measures on
        if dp > 1 and plan == "query-preserved":  # full mini-batches: ranks balanced by verl's workload
            loads = [workload(seq[[int(i) for i in s.batch["idx"][k * local : (k + 1) * local]]]).sum() for s in shards]
            assert max(loads) / min(loads) < 1.1
    if plan == "sign-partitioned":
        for m in p.minibatches:
            assert len({np.sign(before[i, 0].item()) for i in m} - {0.0}) <= 1

