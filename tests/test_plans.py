import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cancel_cli.errors import UserError
from cancel_cli.grpo.advantages import grpo_advantage
from cancel_cli.grpo.plans import groups_split_fraction, make_plan, verl_default_plan
from cancel_cli.grpo.reward_balanced import Group, RBStarved, RewardBalancedBuffer, check_tau, select_balanced


def realistic(G=32, n=8, seed=0):
    """Response lengths like an RLVR batch: log-normal, correct answers shorter, long tail at the cap."""
    rng = np.random.default_rng(seed)
    reward = (rng.random(G * n) < rng.uniform(0.1, 0.9, G).repeat(n)).astype(float)
    lengths = np.minimum(rng.lognormal(6.5, 0.7, G * n) * np.where(reward > 0, 0.8, 1.2), 8192).astype(int) + 1
    uid = np.repeat(np.arange(G), n).astype(str)
    import torch

    adv = grpo_advantage(torch.tensor(reward), uid).numpy()
    return uid, reward, adv, lengths


batches = st.tuples(st.integers(2, 16), st.sampled_from([2, 4, 8]), st.integers(0, 10_000)).map(
    lambda t: (*realistic(t[0], t[1], t[2]), t[1]))


@settings(max_examples=60, deadline=None)
@given(batches, st.integers(1, 4))
def test_query_preserved_never_splits_a_group(b, k):
    uid, reward, adv, lengths, n = b
    G = len(uid) // n
    mb = max(1, G // k) * n
    plan = make_plan("query-preserved", uid, adv, lengths, mb)
    assert sorted(i for m in plan.minibatches for i in m) == list(range(len(uid)))
    assert plan.stats.groups_split.sum() == 0
    assert groups_split_fraction(plan.minibatches, uid)[0] == 0.0
    assert np.allclose(plan.stats.abs_group_adv_sum, 0, atol=1e-5)  # every S_B is a whole group's sum = 0


@settings(max_examples=60, deadline=None)
@given(batches, st.integers(1, 4))
def test_sign_partitioned_minibatches_are_single_sign(b, k):
    uid, reward, adv, lengths, n = b
    mb = max(1, len(uid) // k)
    plan = make_plan("sign-partitioned", uid, adv, lengths, mb)
    assert sorted(i for m in plan.minibatches for i in m) == list(range(len(uid)))
    for m in plan.minibatches:
        a = adv[m]
        assert not ((a > 0).any() and (a < 0).any())


@settings(max_examples=40, deadline=None)
@given(batches)
def test_random_and_verl_default_are_partitions(b):
    uid, reward, adv, lengths, n = b
    for name in ("random", "verl-default"):
        plan = make_plan(name, uid, adv, lengths, max(1, len(uid) // 4))
        assert sorted(i for m in plan.minibatches for i in m) == list(range(len(uid)))


@pytest.mark.parametrize("dp", [1, 4])
def test_verl_default_splits_most_groups(dp):
    uid, reward, adv, lengths = realistic(128, 8, 1)
    mbs = verl_default_plan(lengths, np.full(len(uid), 200), 32 * 8, dp=dp)  # paper: 128 x 8, mini-batch 32 prompts
    frac, per_group = groups_split_fraction(mbs, uid)
    assert frac > 0.8 and per_group > 2.5, (frac, per_group)
    qb = make_plan("query-preserved", uid, adv, lengths, 32 * 8)
    assert groups_split_fraction(qb.minibatches, uid)[0] == 0


@pytest.mark.parametrize("dp", [1, 2, 4])
def test_verl_default_uses_verls_own_balancing(dp):
    from verl.utils.seqlen_balancing import calculate_workload, get_seqlen_balanced_partitions
    import torch

    uid, reward, adv, lengths = realistic(16, 8, 2)
    prompt = np.full(len(uid), 100)
    mbs = verl_default_plan(lengths, prompt, 32, dp=dp, seed=5)
    tie = np.random.default_rng(5).random(len(uid))
    arrival = np.lexsort((tie, lengths))
    work = calculate_workload(torch.tensor(lengths[arrival] + prompt[arrival])).tolist()
    parts = get_seqlen_balanced_partitions(work, k_partitions=dp, equal_size=True)
    layout = [arrival[j] for p in parts for j in p]
    shard, local = len(uid) // dp, 32 // dp
    expected = [[int(layout[r * shard + k * local + i]) for r in range(dp) for i in range(local)] for k in range(shard // local)]
    assert mbs == expected


def test_plan_stats_S_B():
    uid = np.array(["a"] * 4 + ["b"] * 4)
    adv = np.array([1, 1, -1, -1, 1, -1, -1, 1.0])
    plan = make_plan("random", uid, adv, np.full(8, 10), 4, seed=0)
    for row, m in zip(plan.stats.itertuples(), plan.minibatches):
        s = sum(abs(adv[[i for i in m if uid[i] == g]].sum()) for g in "ab")
        assert row.abs_group_adv_sum == pytest.approx(s)
        assert row.n_pos + row.n_neg == 4


def test_bad_sizes():
    uid, reward, adv, lengths = realistic(4, 8)
    with pytest.raises(UserError, match="larger than the batch"):
        make_plan("random", uid, adv, lengths, 64)
    with pytest.raises(UserError, match="smaller than a group"):
        make_plan("query-preserved", uid, adv, lengths, 4)
    with pytest.raises(UserError, match="unknown"):
        make_plan("nope", uid, adv, lengths, 8)


# -- reward-balanced batching ----------------------------------------------------------------------
@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 4), min_size=1, max_size=9), st.integers(1, 4), st.sampled_from([0.0, 0.1, 0.25, 0.4, 0.5]))
def test_select_balanced_is_exact(pos_counts, k, tau):
    size = 4
    got = select_balanced(pos_counts, size, k, tau)
    feasible = [c for c in itertools.combinations(range(len(pos_counts)), k)
                if min(sum(pos_counts[i] for i in c), k * size - sum(pos_counts[i] for i in c)) >= tau * k * size - 1e-9]
    if got is None:
        assert not feasible
    else:
        assert len(got) == k == len(set(got))
        p = sum(pos_counts[i] for i in got)
        assert min(p, k * size - p) >= tau * k * size - 1e-9


@settings(max_examples=50, deadline=None)
@given(st.lists(st.lists(st.integers(0, 8), min_size=1, max_size=6), min_size=1, max_size=12),
       st.sampled_from([0.25, 0.5]), st.integers(1, 3))
def test_every_rb_release_satisfies_the_constraint(stream, tau, k):
    buf = RewardBalancedBuffer(batch_groups=k, tau=tau, max_age=3, max_wait=10**6)
    for t, step in enumerate(stream):
        buf.add([Group(f"{t}-{i}", [1.0] * p + [0.0] * (8 - p)) for i, p in enumerate(step)])
        out = buf.release()
        if out is not None:
            assert len(out) == k
            pos = sum(g.n_pos for g in out)
            assert min(pos, 8 * k - pos) >= tau * 8 * k - 1e-9
    assert buf.used + buf.dropped + sum(len(g.rewards) for g in buf.groups) == buf.sampled


def test_rb_chooses_not_first_come():
    buf = RewardBalancedBuffer(batch_groups=2, tau=0.5)
    buf.add([Group("a", [1] * 8), Group("b", [1] * 8), Group("c", [0] * 8)])
    out = buf.release()
    assert out is not None and {g.uid for g in out} in ({"a", "c"}, {"b", "c"})
    assert buf.utilization == pytest.approx(16 / 24)


def test_rb_starves_with_a_clear_message():
    buf = RewardBalancedBuffer(batch_groups=2, tau=0.25, max_wait=3)
    with pytest.raises(RBStarved, match="no batch"):
        for _ in range(10):
            buf.add([Group("x", [1.0] * 8), Group("y", [1.0] * 8)])
            buf.release()


@pytest.mark.parametrize("tau", [-0.1, 0.51, 1.0])
def test_tau_out_of_range(tau):
    with pytest.raises(UserError, match="tau"):
        check_tau(tau)
