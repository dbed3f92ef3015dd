"""The ``cancel_sync`` trainer's own methods against real verl 0.9.1 code on CPU.

One Ray session (module scope) with the real TransferQueue.  Trajectories are put the way verl's agent
loop puts them (one ``kv_batch_put`` per trajectory, the same fields and tags).  The trainer is built by
its real ``__init__`` from the hydra config the CLI's ``--dry-run`` command composes to, and a whole
``_step_once`` runs: the replay buffer (verl's, or ours loaded by verl's own ``pkg://`` loader), the
cancel layout in ``_balance_batch``, verl's old-log-prob and advantage steps, and ``_update_actor`` with
the probe.  Only the actor worker group is fake: a bigram policy whose update iterates every rank's
shard with verl's own ``tensordict_utils.make_iterator`` -- the mini-batches verl would form -- and
records them, so layouts are checked on what verl executes.
"""

import shlex
import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest
import torch

pytest.importorskip("verl")
pytest.importorskip("transfer_queue")
ray = pytest.importorskip("ray")

V, P = 12, 6  # fake vocabulary, prompt length


@pytest.fixture(scope="module")
def tq():
    import transfer_queue

    ray.init(num_cpus=8, include_dashboard=False, log_to_driver=False)  # oversubscribe: TQ actors hang on 2 cores
    transfer_queue.init()
    yield transfer_queue
    transfer_queue.close()
    ray.shutdown()


def _clear(tq, partition="train"):
    keys = list((tq.kv_list(partition_id=partition) or {}).get(partition, {}))
    if keys:
        tq.kv_clear(partition_id=partition, keys=keys)


class FakePolicy:
    """log p(x_t | x_{t-1}) = log_softmax(theta[x_{t-1}] / T)[x_t]."""

    def __init__(self, seed=0):
        self.theta = (0.3 * torch.randn(V, V, generator=torch.Generator().manual_seed(seed))).requires_grad_()

    def logp(self, ids: torch.Tensor, temperature: float) -> torch.Tensor:
        """verl's convention: entry i is log p(ids[i+1]); the last entry is 0."""
        lp = torch.log_softmax(self.theta[ids[:-1]] / temperature, -1).gather(1, ids[1:, None])[:, 0]
        return torch.cat([lp, lp.new_zeros(1)])

    def entropy(self, ids, temperature):
        p = torch.softmax(self.theta[ids] / temperature, -1)
        return -(p * p.clamp_min(1e-12).log()).sum(-1)


def put_trajectory(tq, uid, j, reward, length, step, policy, partition="train", seed=0):
    from verl.utils.tensordict_utils import list_of_dict_to_tensordict

    g = torch.Generator().manual_seed(hash((uid, j, seed)) % 2**31)
    prompts = torch.randint(2, V, (P,), generator=g)
    responses = torch.randint(2, V, (length,), generator=g)
    ids = torch.cat([prompts, responses])
    rm = torch.zeros(length)
    rm[-1] = float(reward)
    with torch.no_grad():
        rollout_lp = policy.logp(ids, 1.0)[P - 1 : P - 1 + length]
    field = {"prompts": prompts, "responses": responses, "input_ids": ids, "attention_mask": torch.ones_like(ids),
             "position_ids": torch.arange(len(ids)), "response_mask": torch.ones(length, dtype=torch.int64),
             "loss_mask": torch.ones(length, dtype=torch.int64), "rm_scores": rm, "rollout_log_probs": rollout_lp,
             "uid": uid}
    tag = {"status": "success", "prompt_len": P, "response_len": length, "seq_len": P + length, "global_steps": step,
           "min_global_steps": step, "max_global_steps": step}
    tq.kv_batch_put(keys=[f"{uid}_{j}_0"], fields=list_of_dict_to_tensordict([field]), tags=[tag], partition_id=partition)


def put_group(tq, uid, rewards, step, policy, lengths=None, status="finished", partition="train"):
    tq.kv_put(key=uid, partition_id=partition, tag={"is_prompt": True, "status": "pending", "global_steps": step})
    if status == "pending":
        return
    for j, r in enumerate(rewards):
        put_trajectory(tq, uid, j, r, (lengths or [3 + (7 * j + 5 * sum(map(ord, uid))) % 11 for j in range(len(rewards))])[j], step, policy,
                       partition)
    tq.kv_put(key=uid, partition_id=partition, tag={"status": status})


class FakeActorWG:
    """The actor worker group's interface (dispatch info, compute_log_prob, update_actor) over a FakePolicy."""

    def __init__(self, tq, policy, dp=2, lr=0.5):
        self.tq, self.policy, self.dp, self.lr = tq, policy, dp, lr
        self._dispatch_info = {}
        self.minibatches: list[list[str]] = []  # keys of every global mini-batch, in update order

    def _query_dispatch_info(self, role):
        return list(range(self.dp))

    def compute_log_prob(self, batch):
        from tensordict import TensorDict

        T = batch.extra_info["temperature"]
        data = self.tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id, select_fields=["input_ids"])
        ids = [data["input_ids"][i] for i in range(len(batch))]
        with torch.no_grad():
            lp = [self.policy.logp(x, T) for x in ids]
            ent = [self.policy.entropy(x, T) for x in ids]
        nested = lambda xs: torch.nested.as_nested_tensor(xs, layout=torch.jagged)  # noqa: E731
        self.tq.kv_batch_put(keys=batch.keys, partition_id=batch.partition_id,
                             fields=TensorDict({"log_probs": nested(lp), "entropy": nested(ent)}, batch_size=len(batch)))
        return batch

    def update_actor(self, batch):
        """verl's dispatch (contiguous dp shards) and per-rank iterator; a token-mean PG step per global mini-batch."""
        from tensordict import TensorDict
        from verl.utils import tensordict_utils as tu

        info = batch.extra_info
        n, local = len(batch), info["mini_batch_size"] // self.dp
        shard = n // self.dp
        per_rank = []
        for r in range(self.dp):
            td = TensorDict({"i": torch.arange(r * shard, (r + 1) * shard)}, batch_size=shard)
            it = tu.make_iterator(td, mini_batch_size=local, epochs=info["epochs"], seed=info["seed"] + r,
                                  dataloader_kwargs=info["dataloader_kwargs"])
            per_rank.append([m["i"].tolist() for m in it])
        data = self.tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id,
                                    select_fields=["input_ids", "response_mask", "advantages", "old_log_probs"])
        opt = torch.optim.SGD([self.policy.theta], lr=self.lr)
        for k in range(len(per_rank[0])):
            idx = [i for r in range(self.dp) for i in per_rank[r][k]]
            self.minibatches.append([batch.keys[i] for i in idx])
            num = den = 0
            for i in idx:
                L = int(data["response_mask"][i].sum())
                if L == 0:
                    continue
                lp = self.policy.logp(data["input_ids"][i], info["temperature"])[-L - 1 : -1]
                ratio = torch.exp(lp - data["old_log_probs"][i][:L])
                num = num - (ratio * data["advantages"][i][:L]).sum()
                den += L
            opt.zero_grad()
            (num / max(den, 1)).backward()
            opt.step()
        return {"metrics": {"mfu": 0.0, "pg_loss": [0.0]}}


def dry_run_overrides(tmp_path, *flags):
    from typer.testing import CliRunner

    from cancel_cli.cli import app

    res = CliRunner().invoke(app, ["--results", str(tmp_path), "train", "--engine", "verl", "--preset", "train_toy",
                                   "--prompts", "8", "--n", "4", "--minibatch-prompts", "2", *flags, "--dry-run"])
    assert res.exit_code == 0, res.output
    return [c for c in shlex.split(res.output.strip().splitlines()[-1])[3:] if not c.startswith("--config")]


def make_trainer(tq, tmp_path, flags=(), dp=2):
    from hydra import compose, initialize_config_dir

    from cancel_cli.store import Store
    from cancel_cli.verl_ext.launcher import CONFIG_DIR
    from cancel_cli.verl_ext.trainer import CancelSyncTrainer

    run = Store(tmp_path).new_run("train", {"model": "toy", "engine": "verl"}, model="toy")
    ov = [o for o in dry_run_overrides(tmp_path, *flags) if not o.startswith("cancel.run_dir=")]
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        cfg = compose("cancel_grpo", overrides=ov + [f"cancel.run_dir={run.path}"])
    tr = CancelSyncTrainer(cfg)
    policy = FakePolicy()
    tr.actor_rollout_wg = FakeActorWG(tq, policy, dp=dp)
    tr.tokenizer = SimpleNamespace(eos_token_id=1, pad_token_id=0)
    tr.sleeps = []
    tr.checkpoint_manager = SimpleNamespace(sleep_replicas=lambda: tr.sleeps.append(_inflight(tq)))
    tr.reward_loop_manager = SimpleNamespace(reward_loop_worker_handles=[object()])  # rewards come with the rollouts
    tr.global_steps, tr.curr_step_profile = 1, False
    return tr, run, policy


def _inflight(tq, partition="train"):
    tags = (tq.kv_list(partition_id=partition) or {}).get(partition, {})
    return sum(t.get("is_prompt", False) and t["status"] in ("pending", "running") for t in tags.values())


# 8 groups of 4: 18 positive-, 10 negative-, 4 zero-advantage rollouts; with mini-batches of 8 the
# sign-partitioned plan is 8+8+2 positive, 8+2 negative (+4 zero): 5 mini-batches, 8 padding samples
REWARDS = [[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 0], [0, 0, 0, 1], [1, 1, 1, 0], [1, 1, 1, 0], [1, 0, 1, 1], [0, 0, 0, 0]]
PLANS = {"verl-default": (), "query-preserved": ("--qb",), "sign-partitioned": ("--sign-partition",),
         "random": ("--mini-batching", "random")}


@pytest.mark.parametrize("plan", list(PLANS))
def test_step_once_forms_the_plans_minibatches_and_writes_a_readable_run(tq, tmp_path, plan):
    from cancel_cli.grpo.advantages import grpo_advantage
    from cancel_cli.grpo.plans import groups_split_fraction
    from cancel_cli.grpo.trainer import summarize

    tr, run, policy = make_trainer(tq, tmp_path, PLANS[plan])
    assert tr.mini_batching == plan  # the CLI flag reached the trainer (mapping --sign-partition elsewhere fails here)
    for g, r in enumerate(REWARDS):
        put_group(tq, f"q{g}", r, 1, policy)
    metrics = {}
    batch = tr._step_once(metrics, {}, sample_batch_size=len(REWARDS))
    keys, mbs = batch.keys, tr.actor_rollout_wg.minibatches
    real = [[k for k in m if not k.startswith("pad")] for m in mbs]
    assert sorted(k for m in real for k in m) == sorted(k for k in keys if not k.startswith("pad"))  # each once
    assert all(len(m) == 8 for m in mbs)  # verl's fixed mini-batch of 2 prompts x 4
    adv = tq.kv_batch_get(keys=keys, partition_id="train", select_fields=["advantages", "rm_scores"])
    reward = {k: float(adv["rm_scores"][i].sum()) for i, k in enumerate(keys)}
    a = {k: float(adv["advantages"][i][0]) for i, k in enumerate(keys)}
    real_keys = [k for k in keys if not k.startswith("pad")]
    ref = grpo_advantage(torch.tensor([reward[k] for k in real_keys]), [k.split("_")[0] for k in real_keys])
    assert np.allclose([a[k] for k in real_keys], ref.numpy(), atol=1e-4)  # verl's own advantage step
    uid_of = {k: k.split("_")[0] for k in keys}
    split, _ = groups_split_fraction([[real_keys.index(k) for k in m] for m in real], [uid_of[k] for k in real_keys])
    assert metrics["cancel/global_seqlen/groups_split_frac"] == pytest.approx(split)  # counted per group, on verl's order
    if plan == "query-preserved":
        assert split == 0 and len(mbs) == 4
    if plan == "sign-partitioned":
        for m in real:  # Fig. 7a: no mini-batch mixes positive and negative advantages
            signs = {np.sign(a[k]) for k in m} - {0.0}
            assert len(signs) <= 1, [(k, a[k]) for k in m]
        assert len(mbs) == 5 and sum(k.startswith("pad") for m in mbs for k in m) == 8  # padded, not merged
    if plan == "verl-default":
        assert split > 0  # verl's seq-len balancing scatters groups
    row = run.read_table("metrics").iloc[-1]
    assert row.reward == pytest.approx(np.mean([reward[k] for k in real_keys]))
    assert row.groups_split_frac == pytest.approx(split)
    assert 0 <= row.flip_rate <= 1 and row.pos_tokens > 0 and row.neg_tokens > 0
    assert np.isfinite(row["actor/entropy"])
    summary = summarize(run)  # what the launcher calls after verl exits 0
    assert summary.groups_split_frac == pytest.approx(split) and summary.reward_last == pytest.approx(row.reward)
    _clear(tq)


def test_rb_sampler_via_verls_loader_waits_for_groups_in_flight(tq, tmp_path):
    from cancel_cli.grpo.trainer import summarize
    from cancel_cli.verl_ext.rb_sampler import RewardBalancedReplayBuffer

    tr, run, policy = make_trainer(tq, tmp_path, ("--qb", "--rb", "--tau", "0.25"))
    assert type(tr.replay_buffer) is RewardBalancedReplayBuffer  # pkg:// path through verl's load_extern_type
    tr.replay_buffer.poll_interval = 0.05
    for g, r in enumerate(REWARDS):
        put_group(tq, f"q{g}", r, 1, policy)
    put_group(tq, "late", [1, 0, 0, 0], 1, policy, status="pending")  # still generating
    out, metrics = {}, {}
    th = threading.Thread(target=lambda: out.setdefault("batch", tr._step_once(metrics, {}, sample_batch_size=8)))
    th.start()
    time.sleep(1.0)
    assert "batch" not in out and not tr.sleeps  # enough balanced groups, but one in flight: no sampling, no sleep
    put_group(tq, "late", [1, 0, 0, 0], 1, policy)
    th.join(60)
    assert "batch" in out and tr.sleeps == [0]  # replicas put to sleep with nothing in flight
    assert metrics["training/rb/positive_share"] >= 0.25
    row = run.read_table("metrics").iloc[-1]
    assert row.rb_positive_share == metrics["training/rb/positive_share"] and 0 < row.rb_utilization <= 1
    assert summarize(run).rb_utilization == row.rb_utilization
    _clear(tq)


def test_validate_writes_verls_core_metrics_to_the_store(tq, tmp_path, monkeypatch):
    from verl.trainer.ppo.v1.trainer_sync import PPOTrainerSync

    tr, run, _ = make_trainer(tq, tmp_path)
    verl_out = {"val-core/toy-2digit/acc/mean@4": 0.5, "val-aux/toy-2digit/acc/mean@2": 0.4,
                "val-core/aime24/acc/mean@32": 0.125, "val-aux/num_turns/min": 1}
    monkeypatch.setattr(PPOTrainerSync, "_validate", lambda self: dict(verl_out))
    tr.global_steps = 0
    assert tr._validate() == verl_out
    val = run.read_table("validation").set_index("benchmark")
    assert val.loc["toy-2digit", "accuracy"] == 0.5 and val.loc["aime24", "k"] == 32 and len(val) == 2


# -- reward-balanced sampler vs verl's replay buffer ------------------------------------------------
def _put_scores(tq, uid, rewards, step, partition="train"):
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


def test_rb_sampler_against_verls_replay_buffer(tq):
    groups = [("g0", [1, 1, 1, 1]), ("g1", [1, 1, 1, 0]), ("g2", [0, 0, 0, 0]), ("g3", [1, 0, 1, 0])]
    for step, (uid, r) in enumerate(groups):  # tau = 0: the groups verl's sync buffer selects (oldest first)
        _put_scores(tq, uid, r, step)
    ref, ours = _buffers(lambda n: None, tau=0.0)
    b_ours, _ = ours.sample(global_steps=4, partition_id="train", batch_size=2)
    _clear(tq)
    for step, (uid, r) in enumerate(groups):
        _put_scores(tq, uid, r, step)
    b_ref, _ = ref.sample(global_steps=4, partition_id="train", batch_size=2)
    assert sorted(b_ours.keys) == sorted(b_ref.keys)
    _clear(tq)

    # tau = 0.5: verl takes the two oldest (7 of 8 positive); RB waits for a balanced choice and keeps the rest
    for step, (uid, r) in enumerate([("h0", [1, 1, 1, 1]), ("h1", [1, 1, 1, 0]), ("h2", [0, 0, 0, 1]), ("h3", [1, 1, 0, 0])]):
        _put_scores(tq, uid, r, step)
    _, ours = _buffers(lambda n: None, tau=0.5)
    batch, metrics = ours.sample(global_steps=4, partition_id="train", batch_size=2)
    chosen = {k.split("_")[0] for k in batch.keys}
    assert chosen == {"h1", "h2"}  # the oldest balanced pair (h0+h2 has 5 of 8 positive)
    left = {k for k, t in (tq.kv_list(partition_id="train") or {}).get("train", {}).items() if t.get("is_prompt")}
    assert {"h0", "h3"} <= left  # leftovers kept for later steps (sync verl would not buffer them)
    assert metrics["training/rb/positive_share"] == 0.5
    _clear(tq)


def test_rb_sampler_refills_then_starves_with_a_clear_message(tq):
    from cancel_cli.grpo.reward_balanced import RBStarved

    calls = {"n": 0}

    def refill(n):  # the "policy" only ever produces all-correct groups
        calls["n"] += 1
        for j in range(n):
            _put_scores(tq, f"r{calls['n']}x{j}", [1, 1, 1, 1], calls["n"])

    _put_scores(tq, "s0", [1, 1, 1, 1], 0)
    _, ours = _buffers(refill, tau=0.25, max_refills=3, max_age=100)
    with pytest.raises(RBStarved, match="after 3 refills"):
        ours.sample(global_steps=1, partition_id="train", batch_size=2)
    assert calls["n"] == 3
    _clear(tq)
