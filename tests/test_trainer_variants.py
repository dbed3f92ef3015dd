"""What should change did change (TRL style), for every training variant of the torch trainer.

Each property is read from what the trainer actually did (its ``minibatches`` / ``metrics`` step log in the
store, or ``Trainer.last``), through a check function that returns the violations; the mutation tests
apply a one-line bug with monkeypatch and assert the same check function reports it.
"""

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from cancel_cli.cli import app
from cancel_cli.grpo import trainer as T
from cancel_cli.grpo.update import OptimConfig, grpo_update
from cancel_cli.store import Store

runner = CliRunner()


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: these are tiny models, and 2 spinning OpenMP threads cost ~10x CPU on shared cores."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
TINY = dict(prompts=4, n=4, minibatch_prompts=2, steps=1, max_new_tokens=64, val_sets=[], checkpoint_every=0,
            optimizer="sgd", lr=0.1, grad_clip=None, seed=1)


def train(store, **kw):
    from cancel_cli.config import load_policy

    cfg = T.TrainConfig(**{**TINY, **kw})
    cfg.validate()
    torch.manual_seed(cfg.seed)
    policy = load_policy("toy")
    theta0 = policy.clone()
    with store.running("train", dataclasses.asdict(cfg), model="toy", seed=cfg.seed) as run:
        tr = T.Trainer(cfg, policy, run)
        for _ in range(cfg.steps):
            tr.step += 1
            tr.train_step()
    return tr, theta0, run


# -- check functions: each returns the list of violations ------------------------------------------
def positive_only_violations(rec: T.StepRecord) -> list[str]:
    """A<0 rollouts must carry per-token loss weight 0; A>0 rollouts keep their GRPO advantage."""
    a, trained = rec.batch.advantage, rec.advantage
    out = [f"rollout {i}: A={a[i]:.3f} trained with {trained[i]:.3f}" for i in torch.nonzero(a < 0).flatten().tolist()
           if (trained[i] * rec.batch.response_mask[i]).abs().sum() != 0]
    out += [f"rollout {i}: A+ changed" for i in torch.nonzero(a > 0).flatten().tolist() if trained[i] != a[i]]
    return out


def sign_impure_minibatches(run) -> pd.DataFrame:
    mb = run.read_table("minibatches")
    return mb[(mb.n_pos > 0) & (mb.n_neg > 0)]


def split_groups(run) -> pd.DataFrame:
    mb = run.read_table("minibatches")
    return mb[mb.groups_split > 0]


def rb_violations(metrics: pd.DataFrame, tau: float) -> pd.DataFrame:
    """Released batches with min(N+, N-) < tau * |B| (Sec. 4)."""
    return metrics[np.minimum(metrics.n_pos_reward, metrics.n_neg_reward) < tau * metrics.rollouts]


def moved(before, after) -> set[str]:
    b = dict(before.model.named_parameters())
    return {n for n, p in after.model.named_parameters() if not torch.equal(p.detach(), b[n].detach())}


# -- positive-only ---------------------------------------------------------------------------------
def test_positive_only_update_equals_the_update_on_A_plus(store):
    tr, theta0, _ = train(store, positive_only=True)
    rec = tr.last
    assert (rec.batch.advantage < 0).any() and (rec.batch.advantage > 0).any(), "need both signs in the batch"
    assert positive_only_violations(rec) == []
    a_plus = rec.batch.advantage * (rec.batch.reward == 1).float()  # Alg. 2: A+ = A * 1[r = 1]
    cfg = OptimConfig("sgd", 0.1, params="full", grad_clip=None)
    ref = grpo_update(theta0, rec.batch, rec.minibatches, cfg, advantage=a_plus)
    joint = grpo_update(theta0, rec.batch, rec.minibatches, cfg)
    got = dict(tr.policy.model.named_parameters())
    for n, p in ref.model.named_parameters():
        torch.testing.assert_close(got[n].detach(), p.detach(), rtol=0, atol=1e-6)
    assert moved(joint, ref), "the joint GRPO update must differ from the positive-only one"


def test_mutation_positive_only_ignored_is_detected(store, monkeypatch):
    monkeypatch.setattr(T, "training_advantage", lambda batch, positive_only: batch.advantage)
    tr, _, _ = train(store, positive_only=True)
    assert positive_only_violations(tr.last), "ignoring --positive-only must be caught"


# -- mini-batch plans, read from the trainer's step log --------------------------------------------
def cli_train(tmp_path, monkeypatch, *flags):
    monkeypatch.setattr(T.Trainer, "validate", lambda self: [])  # validation is not under test here
    res = runner.invoke(app, ["--results", str(tmp_path), "--quiet", "--json", "--seed", "1", "train", "--steps", "1",
                              "--prompts", "4", "--n", "4", "--minibatch-prompts", "1", "--max-new-tokens", "64", *flags])
    assert res.exit_code == 0, res.output
    run = Store(tmp_path).get(json.loads(res.stdout.strip().splitlines()[-1])["id"])
    mb = run.read_table("minibatches")
    assert (mb.n_pos.sum() > 0) and (mb.n_neg.sum() > 0), "need both signs in the batch"
    return run


def test_sign_partitioned_minibatches_are_sign_pure(tmp_path, monkeypatch):
    run = cli_train(tmp_path, monkeypatch, "--sign-partition")
    assert run.config["plan"] == "sign-partitioned"
    assert sign_impure_minibatches(run).empty


def test_mutation_sign_partition_mapped_to_default_is_detected(tmp_path, monkeypatch):
    monkeypatch.setattr(T, "plan_for", lambda qb=False, sign_partition=False, mini_batching=None: "verl-default")
    run = cli_train(tmp_path, monkeypatch, "--sign-partition")
    assert not sign_impure_minibatches(run).empty, "--sign-partition as the default plan must be caught"


def test_query_preserved_never_splits_a_group_and_the_default_does(store):
    _, _, qb = train(store, plan="query-preserved", minibatch_prompts=1)
    assert len(qb.read_table("minibatches")) == 4 and split_groups(qb).empty
    _, _, base = train(store, plan="verl-default", minibatch_prompts=1)
    assert not split_groups(base).empty  # the check can fail: verl's layout scatters groups


# -- reward-balanced batching ----------------------------------------------------------------------
def test_rb_releases_only_batches_meeting_tau(store):
    tr, _, run = train(store, rb=True, tau=0.25, steps=2)
    met = run.read_table("metrics")
    assert len(met) == 2 and (met.rollouts == 16).all()
    assert rb_violations(met, 0.25).empty
    assert (met.n_pos_reward + met.n_neg_reward == met.rollouts).all()
    bad = met.assign(n_pos_reward=3, n_neg_reward=met.rollouts - 3)  # 3 < 0.25 * 16: RB must never release it
    assert len(rb_violations(bad, 0.25)) == 2


# -- Fig. 10 probe ---------------------------------------------------------------------------------
def test_probe_updates_differ_only_in_which_parameters_move(store, monkeypatch):
    calls = []
    real = T.grpo_update

    def spy(policy, batch, minibatches, cfg, clip, **kw):
        new = real(policy, batch, minibatches, cfg, clip, **kw)
        calls.append((policy, batch, minibatches, cfg, clip, kw, new))
        return new

    monkeypatch.setattr(T, "grpo_update", spy)
    train(store, probe_proxy_every=1, optimizer="adamw", lr=2e-4)
    assert len(calls) == 2
    (p_f, b_f, m_f, c_f, cl_f, kw_f, full), (p_h, b_h, m_h, c_h, cl_h, kw_h, head) = calls
    assert (c_f.params, c_h.params) == ("full", "head")
    assert dataclasses.replace(c_h, params="full") == c_f and cl_f == cl_h
    assert p_f is p_h and b_f is b_h and m_f == m_h
    assert all(torch.equal(kw_f[k], kw_h[k]) for k in ("advantage", "old_logprob"))
    assert moved(p_h, head) == {"lm_head.weight"}
    assert {"lm_head.weight", "model.embed_tokens.weight"} < moved(p_f, full)
