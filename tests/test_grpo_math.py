"""GRPO core against verl and against closed forms."""

import numpy as np
import pytest
import torch

from cancel_cli.grpo.advantages import grpo_advantage
from cancel_cli.grpo.loss import ClipConfig, policy_loss
from cancel_cli.grpo.update import OptimConfig, Updater, grpo_update


def _verl():
    core = pytest.importorskip("verl.trainer.ppo.core_algos")
    from verl.workers.config.actor import ActorConfig

    return core, ActorConfig


@pytest.mark.parametrize("seed", range(5))
def test_advantage_equals_verl(seed):
    core, _ = _verl()
    g = torch.Generator().manual_seed(seed)
    G, n, L = 12, 8, 7
    reward = torch.randint(0, 2, (G * n,), generator=g).float()
    uid = np.repeat(np.arange(G), n).astype(str)
    perm = torch.randperm(G * n, generator=g).numpy()  # groups interleaved
    reward, uid = reward[perm], uid[perm]
    mask = torch.ones(G * n, L)
    ref, _ = core.compute_grpo_outcome_advantage(torch.zeros(G * n, L).index_put_(
        (torch.arange(G * n), torch.full((G * n,), L - 1)), reward), mask, uid)
    ours = grpo_advantage(reward, uid)
    assert torch.allclose(ours, ref[:, 0], atol=1e-6)


@pytest.mark.parametrize("seed", range(5))
def test_loss_equals_verl_vanilla_token_mean(seed):
    core, ActorConfig = _verl()
    g = torch.Generator().manual_seed(seed)
    B, L = 16, 20
    old = -torch.rand(B, L, generator=g) * 3
    new = old + torch.randn(B, L, generator=g) * 0.4  # ratios well outside [0.8, 1.28] too
    adv = torch.randn(B, generator=g)[:, None].expand(B, L).contiguous()
    mask = (torch.rand(B, L, generator=g) > 0.2).float()
    cfg = ActorConfig(clip_ratio=0.2, clip_ratio_low=0.2, clip_ratio_high=0.28, loss_agg_mode="token-mean",
                      strategy="fsdp", rollout_n=1, ppo_micro_batch_size_per_gpu=1)
    ref, _ = core.compute_policy_loss_vanilla(old, new, adv, mask, "token-mean", cfg)
    ours = policy_loss(new, old, adv, mask, ClipConfig(0.2, 0.28))
    assert abs(ours.item() - ref.item()) < 1e-6


def test_n1_advantages_are_zero():
    assert torch.equal(grpo_advantage(torch.tensor([1.0, 0.0, 1.0]), ["a", "b", "c"]), torch.zeros(3))


def test_head_only_sgd_matches_closed_form(toy, toy_batch):
    """W' = W + (eta/N) sum_k A_k r_k h_k^T for one mini-batch at ratio 1."""
    eta = 0.1
    b = toy_batch
    st = toy.token_stats(b.prompt_ids, b.prompt_mask, b.response_ids, b.response_mask, with_hidden=True)
    m = b.response_mask.bool()
    h = st.hidden[m].double()
    tok = b.response_ids[m]
    A = b.advantage[m.nonzero()[:, 0]].double()
    W = toy.lm_head.weight.detach().double()
    pi = torch.softmax(h @ W.T, -1)
    r = torch.nn.functional.one_hot(tok, W.shape[0]).double() - pi
    expected = W + eta / m.sum() * (A[:, None] * r).T @ h
    new = grpo_update(toy, b, None, OptimConfig("sgd", eta, params="head"))
    assert torch.allclose(new.lm_head.weight.double(), expected, atol=1e-5)
    # theta_0 untouched, and only the head moved
    assert torch.equal(toy.lm_head.weight, toy.model.get_output_embeddings().weight)
    for (n0, p0), (n1, p1) in zip(toy.model.named_parameters(), new.model.named_parameters()):
        if "lm_head" not in n0:
            assert torch.equal(p0, p1), n0


def test_later_minibatches_see_the_moved_policy(toy, toy_batch):
    """PPO semantics: old logprobs are fixed before the first mini-batch, so the first mini-batch's loss is
    -mean(A) (ratio 1) and the second one's is not (the policy moved in between)."""
    b = toy_batch
    idx = list(range(len(b)))
    half = [idx[::2], idx[1::2]]
    info = Updater(toy.clone(), OptimConfig("sgd", 0.5)).step(b, half)
    assert info["optimizer_steps"] == 2

    def ratio_one_loss(rows):
        m = b.response_mask[rows].double()
        return float(-(b.advantage[rows].double()[:, None] * m).sum() / m.sum())

    first, second = info["minibatch_losses"]
    assert first == pytest.approx(ratio_one_loss(half[0]), abs=1e-6)
    assert abs(second - ratio_one_loss(half[1])) > 1e-5


def test_update_is_deterministic_and_leaves_input_untouched(toy, toy_batch):
    before = {k: v.clone() for k, v in toy.model.state_dict().items()}
    a = grpo_update(toy, toy_batch, None, OptimConfig("sgd", 0.1))
    b = grpo_update(toy, toy_batch, None, OptimConfig("sgd", 0.1))
    for k, v in toy.model.state_dict().items():
        assert torch.equal(v, before[k])
    for pa, pb in zip(a.model.parameters(), b.model.parameters()):
        assert torch.equal(pa, pb)
