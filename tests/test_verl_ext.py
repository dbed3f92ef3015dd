"""verl integration on CPU: plugin registration, hydra config, the --dry-run command, QB layout on
DataProto, and the RB sampler against verl's own replay buffer (real TransferQueue under Ray)."""

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
def test_qb_layout_on_dataproto(dp):
    from verl import DataProto
    from verl.trainer.ppo.core_algos import compute_grpo_outcome_advantage

    from cancel_cli.grpo.plans import workload
    from cancel_cli.verl_ext.layout import global_minibatches, grouped_layout

    G, n, L, P = 32, 8, 64, 16
    rng = np.random.default_rng(dp)
    resp_len = rng.integers(4, L, G * n)
    mask = torch.zeros(G * n, P + L, dtype=torch.long)
    for i, r in enumerate(resp_len):
        mask[i, : P + r] = 1
    rewards = torch.zeros(G * n, L)
    rewards[torch.arange(G * n), torch.as_tensor(resp_len) - 1] = torch.tensor(rng.integers(0, 2, G * n), dtype=torch.float)
    uid = np.array([f"q{i // n}" for i in rng.permutation(G * n)], dtype=object)  # groups arrive interleaved
    resp_mask = (torch.arange(L)[None] < torch.as_tensor(resp_len)[:, None]).float()
    data = DataProto.from_dict(tensors={"attention_mask": mask, "token_level_rewards": rewards, "response_mask": resp_mask},
                               non_tensors={"uid": uid})
    before, _ = compute_grpo_outcome_advantage(rewards, resp_mask, uid)
    mb = 8 * n  # ppo_mini_batch_size 8 prompts
    order = grouped_layout(list(uid), mask.sum(1).tolist(), mb, dp)
    data.reorder(torch.tensor(order))
    after, _ = compute_grpo_outcome_advantage(data.batch["token_level_rewards"], data.batch["response_mask"],
                                              data.non_tensor_batch["uid"])
    assert torch.allclose(after, before[order], atol=1e-6)  # advantages unchanged by the reordering
    shards = data.chunk(dp)  # what verl's dispatch gives each rank
    local = mb // dp
    for k in range(len(order) // mb):  # global mini-batch k = union of every rank's k-th local chunk
        mbk = [u for s in shards for u in s.non_tensor_batch["uid"][k * local : (k + 1) * local]]
        assert len(mbk) == mb
        for u in set(mbk):
            assert mbk.count(u) == n, "a group was split across mini-batches"
        loads = [workload(s.batch["attention_mask"][k * local : (k + 1) * local].sum(1).numpy()).sum() for s in shards]
        assert max(loads) / min(loads) < 1.05  # ranks balanced inside every mini-batch
    assert global_minibatches(order, mb, dp) == [order[k * mb : (k + 1) * mb] if dp == 1 else global_minibatches(order, mb, dp)[k]
                                                 for k in range(len(order) // mb)]


# -- reward-balanced sampler vs verl's replay buffer (TransferQueue under Ray) ---------------------
@pytest.fixture(scope="module")
def tq_session():
    ray = pytest.importorskip("ray")
    import transfer_queue as tq

    ray.init(num_cpus=8, include_dashboard=False, log_to_driver=False)  # oversubscribe: TQ actors hang on 2 cores
    tq.init()
    yield tq
    tq.close()
    ray.shutdown()


def _put_group(tq, uid, rewards, step, partition="train"):
    from tensordict import TensorDict

    tq.kv_put(key=uid, partition_id=partition, tag={"is_prompt": True, "status": "finished", "global_steps": step})
    keys = [f"{uid}_{j}_0" for j in range(len(rewards))]
    td = TensorDict({"rm_scores": torch.tensor([[0.0, float(r)] for r in rewards])}, batch_size=[len(rewards)])
    tq.kv_batch_put(keys=keys, partition_id=partition, fields=td, tags=[{"seq_len": 10} for _ in keys])


def _buffers(refill, **kw):
    from omegaconf import OmegaConf
    from verl.trainer.ppo.v1.replay_buffer import ReplayBuffer

    from cancel_cli.verl_ext.rb_sampler import RewardBalancedReplayBuffer

    common = dict(trainer_mode="sync", trainer_config=OmegaConf.create({}), max_off_policy_threshold=None,
                  max_off_policy_strategy="drop", refill_fn=refill)
    ref = ReplayBuffer(sampler_kwargs=OmegaConf.create({}), train_batch_size=2, gen_batch_size=2, **common)
    ours = RewardBalancedReplayBuffer(sampler_kwargs=OmegaConf.create(kw), **common)
    ours.poll_interval = ref.poll_interval = 0.05
    return ref, ours


def _clear(tq, partition="train"):
    listing = tq.kv_list(partition_id=partition) or {}
    keys = list(listing.get(partition, {}))
    if keys:
        tq.kv_clear(partition_id=partition, keys=keys)


def test_rb_sampler_against_verls_replay_buffer(tq_session):
    tq = tq_session
    # tau = 0: the same groups verl's sync buffer selects (oldest first)
    for step, (uid, r) in enumerate([("g0", [1, 1, 1, 1]), ("g1", [1, 1, 1, 0]), ("g2", [0, 0, 0, 0]), ("g3", [1, 0, 1, 0])]):
        _put_group(tq, uid, r, step)
    ref, ours = _buffers(lambda n: None, tau=0.0)
    b_ours, _ = ours.sample(global_steps=4, partition_id="train", batch_size=2)
    _clear(tq)
    for step, (uid, r) in enumerate([("g0", [1, 1, 1, 1]), ("g1", [1, 1, 1, 0]), ("g2", [0, 0, 0, 0]), ("g3", [1, 0, 1, 0])]):
        _put_group(tq, uid, r, step)
    b_ref, _ = ref.sample(global_steps=4, partition_id="train", batch_size=2)
    assert sorted(b_ours.keys) == sorted(b_ref.keys)
    _clear(tq)

    # tau = 0.5: verl takes the two oldest (7 of 8 positive); RB waits for a balanced choice and keeps the rest
    for step, (uid, r) in enumerate([("h0", [1, 1, 1, 1]), ("h1", [1, 1, 1, 0]), ("h2", [0, 0, 0, 1]), ("h3", [1, 1, 0, 0])]):
        _put_group(tq, uid, r, step)
    _, ours = _buffers(lambda n: None, tau=0.5)
    batch, metrics = ours.sample(global_steps=4, partition_id="train", batch_size=2)
    chosen = {k.split("_")[0] for k in batch.keys}
    pos = sum({"h0": 4, "h1": 3, "h2": 1, "h3": 2}[u] for u in chosen)
    assert len(chosen) == 2 and min(pos, 8 - pos) >= 4, chosen
    assert chosen == {"h1", "h2"}  # the oldest balanced pair (h0+h2 has 5 of 8 positive)
    left = {k for k, t in (tq.kv_list(partition_id="train") or {}).get("train", {}).items() if t.get("is_prompt")}
    assert {"h0", "h3"} <= left  # leftovers kept for later steps (sync verl would not buffer them)
    assert metrics["training/rb/positive_share"] == 0.5
    _clear(tq)


def test_rb_sampler_refills_then_starves_with_a_clear_message(tq_session):
    from cancel_cli.grpo.reward_balanced import RBStarved

    tq = tq_session
    calls = {"n": 0}

    def refill(n):  # the "policy" only ever produces all-correct groups
        calls["n"] += 1
        for j in range(n):
            _put_group(tq, f"r{calls['n']}x{j}", [1, 1, 1, 1], calls["n"])

    _put_group(tq, "s0", [1, 1, 1, 1], 0)
    _, ours = _buffers(refill, tau=0.25, max_refills=3, max_age=100)
    with pytest.raises(RBStarved, match="after 3 refills"):
        ours.sample(global_steps=1, partition_id="train", batch_size=2)
    assert calls["n"] == 3
    _clear(tq)
