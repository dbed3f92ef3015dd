"""What every experiment shares: the rollout configuration, prompts, and sampling a rewarded batch."""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, fields

import numpy as np
import torch

from ..config import check_positive, load_policy
from ..errors import UserError
from ..grpo.advantages import grpo_advantage
from ..policy import Policy
from ..rollout import RolloutBatch, build_batch
from ..sampling import SamplingParams, make_sampler
from ..tasks import Problem
from ..tasks.prompts import default_template, render
from ..tasks.reward import score_batch


@dataclass
class RolloutConfig:
    model: str = "toy"
    prompts: int = 32  # prompts per rollout batch
    n: int = 8  # rollouts per prompt (group size G)
    temperature: float = 1.0  # Table 3: rollout temperature 1.0
    top_p: float = 1.0
    max_new_tokens: int = 96
    data: str = "toy"  # toy | dapo17k | a JSONL/parquet path
    template: str = ""  # "" = the model's default (toy | qwen-boxed)
    seed: int = 0
    device: str = "cpu"
    dtype: str = "float32"
    engine: str = "auto"  # torch | vllm | auto (vLLM when CUDA and vLLM are present; sampling at a fixed policy)

    def validate(self) -> None:
        check_positive(prompts=self.prompts, n=self.n, max_new_tokens=self.max_new_tokens)
        SamplingParams(self.temperature, self.top_p, self.max_new_tokens)

    @property
    def sampling(self) -> SamplingParams:
        return SamplingParams(self.temperature, self.top_p, self.max_new_tokens)


def from_dict(cls, d: dict):
    names = {f.name for f in fields(cls)}
    unknown = set(d) - names
    if unknown:
        raise UserError(f"unknown {cls.__name__} option(s): {', '.join(sorted(unknown))}")
    return cls(**d)


def to_dict(cfg) -> dict:
    return asdict(cfg)


class ProblemSource:
    """Seeded prompt stream for training/analysis: the toy generator or a loaded data set."""

    def __init__(self, data: str, seed: int, split: str = "train"):
        self.data, self.rng = data, random.Random(f"{split}-{seed}")
        if data == "toy":
            from ..tasks.arithmetic import toy_problems

            self.pool = toy_problems(20000, seed, split=split)
        else:
            from ..tasks.data import load_dapo

            self.pool = load_dapo(path=None if data == "dapo17k" else data)
        if not self.pool:
            raise UserError(f"no problems in {data}")

    def take(self, k: int) -> list[Problem]:
        return [self.pool[self.rng.randrange(len(self.pool))] for _ in range(k)]


def experiment_run(store, command: str, cfg, policy: Policy, resume: str | None = None):
    """``store.running`` for an experiment: full config, model id and weights hash, seed, device."""
    return store.running(command, to_dict(cfg), resume=resume, model=policy.name, model_hash=policy.weights_hash,
                         seed=cfg.seed, device=cfg.device)


def setup(cfg: RolloutConfig) -> Policy:
    cfg.validate()
    torch.manual_seed(cfg.seed)
    return load_policy(cfg.model, cfg.device, cfg.dtype)


def sample_batch(policy: Policy, problems: list[Problem], cfg: RolloutConfig, generator: torch.Generator,
                 sampler=None, uid_prefix: str = "") -> RolloutBatch:
    """n rollouts per problem, rewarded by math-verify, with GRPO advantages."""
    template = cfg.template or default_template(cfg.model)
    prompts = [policy.encode(render(p.problem, template)) for p in problems]
    sampler = sampler or make_sampler(policy, cfg.engine)
    outs = sampler.rollouts(prompts, cfg.n, cfg.sampling, generator)
    rows_p, rows_r, uids, answers = [], [], [], []
    for i, (p, grp) in enumerate(zip(prompts, outs)):
        for resp in grp:
            rows_p.append(p)
            rows_r.append(resp)
            uids.append(f"{uid_prefix}{i}")
            answers.append(problems[i].answer)
    batch = build_batch(policy, rows_p, rows_r, uids, answers)
    texts = [policy.decode(r) for r in rows_r]
    batch.reward = torch.tensor(score_batch(texts, answers), dtype=torch.float32)
    batch.advantage = grpo_advantage(batch.reward, batch.uid)
    return batch


def mixed_group_share(batch: RolloutBatch) -> float:
    g = {}
    for u, r in zip(batch.uid, batch.reward.tolist()):
        g.setdefault(u, []).append(r)
    return float(np.mean([0 < sum(v) < len(v) for v in g.values()]))


def batch_for(cfg, policy: Policy, store, generator: torch.Generator) -> RolloutBatch:
    """The analysis batch: the stored batch of run ``cfg.from_batch`` if given, else a fresh sample."""
    if getattr(cfg, "from_batch", ""):
        src = store.get_done(cfg.from_batch)
        if not src.has_table("batch"):
            raise UserError(f"run {cfg.from_batch} stored no rollout batch")
        return RolloutBatch.from_frame(src.read_table("batch"), policy.pad_id)
    return sample_batch(policy, ProblemSource(cfg.data, cfg.seed).take(cfg.prompts), cfg, generator)


@dataclass
class FlatTokens:
    """Every response token of a batch, flattened in row-major order (the per-token table's order)."""

    rollout: torch.Tensor  # [N]
    position: torch.Tensor
    token: torch.Tensor
    advantage: torch.Tensor
    logprob: torch.Tensor
    entropy: torch.Tensor
    hidden: torch.Tensor  # [N, H] LM-head inputs

    def __len__(self) -> int:
        return len(self.token)


def flat_tokens(policy: Policy, batch: RolloutBatch, temperature: float = 1.0) -> FlatTokens:
    st = policy.token_stats(batch.prompt_ids, batch.prompt_mask, batch.response_ids, batch.response_mask,
                            temperature=temperature, with_hidden=True)
    m = batch.response_mask.bool()
    rows, pos = m.nonzero(as_tuple=True)
    return FlatTokens(rows, pos, batch.response_ids[m], batch.advantage[rows], st.logprob[m], st.entropy[m],
                      st.hidden[m].float())
