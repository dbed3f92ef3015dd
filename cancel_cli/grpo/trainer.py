"""The CPU / one-GPU GRPO trainer behind ``cancel train --engine torch`` (and ``cancel flip``).

Per step: sample prompts x n rollouts (or, with RB, refill a reward-balanced buffer until it releases a
batch), reward with math-verify, GRPO advantages, a mini-batch plan, one update (one optimizer step per
mini-batch), then the per-token probe: one extra forward on the same batch gives delta logp, classified
as boosted / suppressed / stable by advantage sign.  Every ``val_every`` steps: validation on held-out
sets (temperature 0.6, top-p 0.95).  Metrics, validation rows and (optionally) the per-token table are
written as numbered parts; the resume state (model, optimizer, RNGs, RB buffer) is saved atomically every
``checkpoint_every`` steps, so ``--resume`` continues without lost or duplicated rows.
"""

from __future__ import annotations

import math
import pickle
import shutil
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from .probe import flip_rate, flip_summary, token_table
from ..console import info, progress
from ..errors import UserError
from ..evaluation import benchmark_k, benchmark_problems, sample_and_score, score_frame
from ..rollout import (ProblemSource, RolloutBatch, RolloutConfig, build_batch, experiment_run, mixed_group_share,
                       sample_batch, setup)
from ..sampling import make_sampler
from ..summary import Summary
from ..tasks.prompts import default_template
from .advantages import grpo_advantage
from .loss import ClipConfig
from .plans import PLANS, groups_split_fraction, make_plan
from .reward_balanced import Group, RewardBalancedBuffer, check_tau
from .update import OptimConfig, Updater, grpo_update


@dataclass
class TrainConfig(RolloutConfig):
    steps: int = 30
    minibatch_prompts: int = 8  # verl's ppo_mini_batch_size (prompts); mini-batch = minibatch_prompts * n rollouts
    plan: str = "verl-default"  # verl-default | random | query-preserved | sign-partitioned
    dp: int = 1  # data-parallel ranks emulated by the verl-default layout
    rb: bool = False
    tau: float = 0.25
    rb_max_age: int = 4
    rb_max_wait: int = 8
    positive_only: bool = False  # A+ = A * 1[r = 1]
    optimizer: str = "adamw"
    lr: float = 2e-4
    momentum: float = 0.0
    weight_decay: float = 0.0
    params: str = "full"
    grad_clip: float | None = 1.0
    clip_low: float = 0.2
    clip_high: float = 0.28
    val_every: int = 5
    val_sets: list = field(default_factory=lambda: ["toy-2digit", "toy-3digit", "toy-4digit"])
    val_prompts: int = 128
    val_k: int = 1
    val_temperature: float = 0.6
    val_top_p: float = 0.95
    checkpoint_every: int = 10
    save_tokens: bool = False  # per-token table each step (cancel flip)
    probe_proxy_every: int = 0  # Fig. 10: every k steps compare LM-head-only vs full SGD deltas (0 = off)
    proxy_lr: float = 0.1

    def validate(self) -> None:
        super().validate()
        if self.plan not in PLANS:
            raise UserError(f"unknown mini-batch plan {self.plan!r} ({' | '.join(PLANS)})")
        if self.rb:
            check_tau(self.tau)
        if self.n == 1:
            raise UserError("n=1: with one rollout per prompt every GRPO advantage is zero (a group of one has no "
                            "baseline), so nothing would be learned; use n >= 2")
        if self.steps < 1:
            raise UserError(f"steps must be >= 1, got {self.steps}")
        if self.minibatch_prompts < 1 or self.minibatch_prompts > self.prompts:
            raise UserError(f"mini-batch of {self.minibatch_prompts} prompts does not fit a batch of {self.prompts} prompts")


def plan_for(qb: bool = False, sign_partition: bool = False, mini_batching: str | None = None) -> str:
    """The mini-batch plan named by ``cancel train``'s flags (``--mini-batching`` wins)."""
    if qb and sign_partition:
        raise UserError("--qb and --sign-partition are different mini-batch plans; pick one")
    return mini_batching or ("query-preserved" if qb else "sign-partitioned" if sign_partition else "verl-default")


def training_advantage(batch: RolloutBatch, positive_only: bool) -> torch.Tensor:
    """The advantage the update trains on: GRPO's A, or A+ = A * 1[r = 1] under positive-only (Alg. 2)."""
    return batch.advantage * (batch.reward == 1).float() if positive_only else batch.advantage


@dataclass
class StepRecord:
    """What one training step actually did (kept in memory for the last step only): the batch, the plan
    whose mini-batches the optimizer stepped on, and the advantage it trained on."""

    step: int
    batch: RolloutBatch
    minibatches: list
    advantage: torch.Tensor


def concat_groups(policy, groups: list[Group]) -> RolloutBatch:
    rows = [r for g in groups for r in g.payload]
    batch = build_batch(policy, [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows], [r[3] for r in rows])
    batch.reward = torch.tensor([r[4] for r in rows], dtype=torch.float32)
    batch.advantage = grpo_advantage(batch.reward, batch.uid)
    return batch


def to_groups(batch: RolloutBatch, step: int) -> list[Group]:
    pm, rm = batch.prompt_mask.bool(), batch.response_mask.bool()
    out: dict[str, Group] = {}
    for i in range(len(batch)):
        uid = f"s{step}-{batch.uid[i]}"
        row = (batch.prompt_ids[i][pm[i]].tolist(), batch.response_ids[i][rm[i]].tolist(), uid, batch.answers[i],
               float(batch.reward[i]))
        g = out.setdefault(uid, Group(uid, [], []))
        g.rewards.append(row[4])
        g.payload.append(row)
    return list(out.values())


class Trainer:
    def __init__(self, cfg: TrainConfig, policy, run, tags: dict | None = None, part_offset: int = 0):
        """``tags`` are extra columns on every row; ``part_offset`` separates several trainings in one run."""
        self.cfg, self.policy, self.run = cfg, policy, run
        self.tags, self.part_offset = tags or {}, part_offset
        self.updater = Updater(policy, OptimConfig(cfg.optimizer, cfg.lr, cfg.momentum, cfg.weight_decay,
                                                   params=cfg.params, grad_clip=cfg.grad_clip,
                                                   temperature=cfg.temperature),
                               ClipConfig(cfg.clip_low, cfg.clip_high))
        self.source = ProblemSource(cfg.data, cfg.seed)
        self.gen = torch.Generator().manual_seed(cfg.seed)
        # the policy changes every step: sample with the torch engine, which reads the live weights (a vLLM
        # engine holds its own copy); vLLM rollouts during training are what `--engine verl` is for
        self.sampler = make_sampler(policy, "torch")
        self.rb = RewardBalancedBuffer(cfg.prompts, cfg.tau, cfg.rb_max_age, cfg.rb_max_wait) if cfg.rb else None
        self.step = 0
        self.last: StepRecord | None = None

    # -- resume state ---------------------------------------------------------------------------
    def save_state(self) -> None:
        tmp = self.run.path / "resume.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        torch.save({"model": self.policy.model.state_dict(), "optimizer": self.updater.optimizer.state_dict(),
                    "gen": self.gen.get_state(), "torch_rng": torch.get_rng_state(), "step": self.step}, tmp / "state.pt")
        (tmp / "extra.pkl").write_bytes(pickle.dumps({"source_rng": self.source.rng.getstate(), "rb": self.rb}))
        final = self.run.path / "resume"
        old = self.run.path / "resume.old"
        if final.exists():
            final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old, ignore_errors=True)

    def load_state(self) -> None:
        d = self.run.path / "resume"
        if not d.exists():
            d = self.run.path / "resume.old"  # crashed between the two renames
        if not d.exists():
            return
        st = torch.load(d / "state.pt", weights_only=False)
        self.policy.model.load_state_dict(st["model"])
        self.updater.optimizer.load_state_dict(st["optimizer"])
        self.gen.set_state(st["gen"])
        torch.set_rng_state(st["torch_rng"])
        self.step = st["step"]
        extra = pickle.loads((d / "extra.pkl").read_bytes())
        self.source.rng.setstate(extra["source_rng"])
        self.rb = extra["rb"]
        for table in ("metrics", "validation", "tokens", "proxy", "minibatches"):  # drop rows written after the checkpoint
            for p in self.run.parts(table):
                if int(p.stem.split("-")[1]) > self.step:
                    p.unlink()

    def save_checkpoint(self) -> None:
        out = self.run.path / "checkpoints" / f"step-{self.step:05d}"
        tmp = out.with_name(out.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        self.policy.model.save_pretrained(tmp)
        self.policy.tokenizer.save_pretrained(tmp)
        shutil.rmtree(out, ignore_errors=True)
        tmp.rename(out)

    # -- one step -------------------------------------------------------------------------------
    def next_batch(self) -> tuple[RolloutBatch, dict]:
        cfg = self.cfg
        if self.rb is None:
            return sample_batch(self.policy, self.source.take(cfg.prompts), cfg, self.gen, self.sampler), {}
        sampled = 0
        while True:
            batch = sample_batch(self.policy, self.source.take(cfg.prompts), cfg, self.gen, self.sampler)
            sampled += len(batch)
            self.rb.add(to_groups(batch, self.step * 1000 + sampled))
            groups = self.rb.release()
            if groups is not None:
                return concat_groups(self.policy, groups), {"rb_rollouts_sampled_this_step": sampled, **self.rb.stats()}

    def train_step(self) -> dict:
        cfg, t0 = self.cfg, time.time()
        batch, rb_stats = self.next_batch()
        adv = training_advantage(batch, cfg.positive_only)
        stats = self.policy.token_stats(batch.prompt_ids, batch.prompt_mask, batch.response_ids, batch.response_mask,
                                        temperature=cfg.temperature)
        plan = make_plan(cfg.plan, batch.uid, adv.numpy(), batch.lengths, cfg.minibatch_prompts * cfg.n,
                         prompt_lengths=batch.prompt_mask.sum(1).numpy(), dp=cfg.dp, seed=cfg.seed * 100003 + self.step)
        theta0 = self.policy.clone() if cfg.probe_proxy_every and self.step % cfg.probe_proxy_every == 0 else None
        upd = self.updater.step(batch, plan.minibatches, advantage=adv, old_logprob=stats.logprob)
        self.last = StepRecord(self.step, batch, plan.minibatches, adv)
        new_lp = self.policy.token_stats(batch.prompt_ids, batch.prompt_mask, batch.response_ids, batch.response_mask,
                                         temperature=cfg.temperature, with_entropy=False).logprob
        m = batch.response_mask.bool()
        delta = (new_lp - stats.logprob)[m].double().numpy()
        # classes by the sign of the rollout's GRPO advantage (also under positive-only training, Fig. 1d)
        tok_adv = batch.advantage[:, None].expand_as(new_lp)[m].numpy()
        split_frac, mb_per_group = groups_split_fraction(plan.minibatches, batch.uid)
        row = {"step": self.step, "reward": float(batch.reward.mean()), "mixed_groups": mixed_group_share(batch),
               "entropy": float(stats.entropy[m].mean()), "response_length": float(batch.lengths.mean()),
               "rollouts": len(batch), "n_pos_reward": int((batch.reward == 1).sum()),
               "n_neg_reward": int((batch.reward != 1).sum()), "minibatches": len(plan.minibatches),
               "groups_split_frac": split_frac,
               "minibatches_per_group": mb_per_group, "mean_abs_S_B": float(plan.stats.abs_group_adv_sum.mean()),
               **upd, **flip_summary(delta, tok_adv), "flip_rate": flip_rate(delta, tok_adv), **rb_stats,
               "seconds": time.time() - t0, **self.tags}
        self.run.write_part("metrics", self.part_offset + self.step, pd.DataFrame([row]))
        # the step log of mini-batches (rollouts, groups split, N+ / N- by the trained advantage's sign)
        self.run.write_part("minibatches", self.part_offset + self.step, plan.stats.assign(step=self.step, **self.tags))
        if cfg.save_tokens:
            tt = token_table(batch, stats.logprob, new_lp, stats.entropy, self.policy.tokenizer, step=self.step,
                             **self.tags)
            self.run.write_part("tokens", self.part_offset + self.step, tt)
        if theta0 is not None:
            self.run.write_part("proxy", self.part_offset + self.step, pd.DataFrame([proxy_agreement(theta0, batch, plan.minibatches, adv,
                                                                                  stats.logprob, cfg, self.step)]))
        return row

    def validate(self) -> list[dict]:
        cfg, rows = self.cfg, []
        if not cfg.val_sets:
            return rows
        template = cfg.template or default_template(cfg.model)
        was = self.policy.model.training
        self.policy.model.eval()
        for name in cfg.val_sets:
            probs = benchmark_problems(name, cfg.val_prompts or None, seed=cfg.seed)
            k = cfg.val_k if cfg.model == "toy" else benchmark_k(name)
            df = sample_and_score(self.policy, probs, k, cfg.val_temperature, cfg.val_top_p, cfg.max_new_tokens,
                                  template, torch.Generator().manual_seed(cfg.seed + 7 * self.step), self.sampler)
            rows.append({"step": self.step, "benchmark": name, "k": k, "accuracy": score_frame(df, k),
                         "mean_length": float(df.length.mean()), "problems": len(probs), **self.tags})
        self.policy.model.train(was)
        self.run.write_part("validation", self.part_offset + self.step, pd.DataFrame(rows))
        return rows

    def fit(self) -> dict:
        cfg = self.cfg
        if self.step == 0 and self.part_offset not in self.run.done_parts("validation"):
            self.validate()
        with progress(f"train {cfg.plan}{' +RB' if cfg.rb else ''}", cfg.steps) as advance:
            advance(self.step)
            while self.step < cfg.steps:
                self.step += 1
                row = self.train_step()
                if self.step % cfg.val_every == 0 or self.step == cfg.steps:
                    val = self.validate()
                    if val:
                        info(f"step {self.step}: reward {row['reward']:.3f}  val " +
                             "  ".join(f"{v['benchmark']} {v['accuracy']:.3f}" for v in val))
                if cfg.checkpoint_every and (self.step % cfg.checkpoint_every == 0 or self.step == cfg.steps):
                    self.save_checkpoint()
                    self.save_state()
                advance()
        return summarize(self.run)


def proxy_agreement(theta0, batch, minibatches, adv, old_lp, cfg: TrainConfig, step: int = 0) -> dict:
    """Fig. 10: sign agreement of delta logp between an LM-head-only and a full-parameter SGD update
    (lr ``proxy_lr``, no momentum) from the same theta on the same batch and plan."""
    m = batch.response_mask.bool()
    deltas = {}
    for params in ("full", "head"):
        new = grpo_update(theta0, batch, minibatches, OptimConfig("sgd", cfg.proxy_lr, params=params,
                                                                  temperature=cfg.temperature),
                          ClipConfig(cfg.clip_low, cfg.clip_high), advantage=adv, old_logprob=old_lp)
        lp = new.token_stats(batch.prompt_ids, batch.prompt_mask, batch.response_ids, batch.response_mask,
                             temperature=cfg.temperature, with_entropy=False).logprob
        deltas[params] = (lp - old_lp)[m].double().numpy()
    f, h = deltas["full"], deltas["head"]
    moved = (np.abs(f) > 1e-6) & (np.abs(h) > 1e-6)
    return {"step": step, "sign_agreement": float((np.sign(f[moved]) == np.sign(h[moved])).mean()),
            "tokens": int(moved.sum()), "corr": float(np.corrcoef(f, h)[0, 1])}


@dataclass
class TrainSummary(Summary):
    """Headline numbers of a train run (the verl launcher's ``summarize`` produces the same dataclass)."""

    SCHEMA = 1
    plan: str
    rb: bool
    positive_only: bool
    steps: int
    val_accuracy_first: float  # mean over validation sets at the first / last evaluation
    val_accuracy_last: float
    val_accuracy_gain: float
    val_problems: int  # problems x samples behind val_accuracy_last (0 when unknown)
    reward_last: float
    groups_split_frac: float  # mean over steps
    pos_boosted: float
    neg_boosted: float
    rb_utilization: float  # nan without RB
    proxy_sign_agreement: float  # mean over probe steps (Fig. 10); nan without the probe


def summarize(run) -> TrainSummary:
    nan = float("nan")
    met = run.read_table("metrics") if run.has_table("metrics") else pd.DataFrame()
    val = run.read_table("validation") if run.has_table("validation") else pd.DataFrame()
    prx = run.read_table("proxy") if run.has_table("proxy") else pd.DataFrame()
    cfg = run.config
    first = last = nan
    n_last = 0
    if len(val):
        mean = val.groupby("step").accuracy.mean()
        first, last = float(mean.iloc[0]), float(mean.iloc[-1])
        fin = val[val.step == val.step.max()]
        n_last = int((fin.problems * fin.k).sum()) if {"problems", "k"} <= set(fin.columns) else 0

    def col(name, how="mean"):
        if not len(met) or name not in met:
            return nan
        return float(met[name].iloc[-1] if how == "last" else met[name].mean())

    return TrainSummary(plan=str(cfg.get("plan", "")), rb=bool(cfg.get("rb", False)),
                        positive_only=bool(cfg.get("positive_only", False)), steps=int(met.step.max()) if len(met) else 0,
                        val_accuracy_first=first, val_accuracy_last=last,
                        val_accuracy_gain=last - first if not math.isnan(first) else nan, val_problems=n_last,
                        reward_last=col("reward", "last"), groups_split_frac=col("groups_split_frac"),
                        pos_boosted=col("pos_boosted"), neg_boosted=col("neg_boosted"),
                        rb_utilization=col("rb_utilization", "last"),
                        proxy_sign_agreement=float(prx.sign_agreement.mean()) if len(prx) else nan)


def run(cfg: TrainConfig, store, resume: str | None = None, command: str = "train") -> tuple:
    policy = setup(cfg)
    with experiment_run(store, command, cfg, policy, resume=resume) as r:
        tr = Trainer(cfg, policy, r)
        if resume:
            tr.load_state()
        summary = tr.fit()
        r.finish(summary)
    return r, summary
