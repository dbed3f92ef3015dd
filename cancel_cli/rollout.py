"""The rollout batch: its config (RolloutConfig), the prompt stream, sampling a rewarded batch with GRPO
advantages, and RolloutBatch (prompts x G responses), saved so every analysis of a run uses the same
batch (the paper's controlled design).  Layer: after sampling, before the GRPO update."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from .config import check_positive, load_policy, to_dict
from .errors import UserError
from .grpo.advantages import grpo_advantage
from .policy import Policy, left_pad, right_pad
from .sampling import SamplingParams, make_sampler
from .tasks import Problem
from .tasks.prompts import default_template, render
from .tasks.reward import score_batch


@dataclass
class RolloutBatch:
    prompt_ids: torch.Tensor  # [B, P] left-padded
    prompt_mask: torch.Tensor
    response_ids: torch.Tensor  # [B, L] right-padded, EOS included when sampled
    response_mask: torch.Tensor
    uid: np.ndarray  # [B] group id (one per prompt)
    reward: torch.Tensor = None  # [B] binary reward
    advantage: torch.Tensor = None  # [B] GRPO advantage
    answers: list = field(default_factory=list)  # gold answer per row

    def __len__(self) -> int:
        return self.prompt_ids.shape[0]

    @property
    def lengths(self) -> np.ndarray:
        return self.response_mask.sum(1).numpy()

    def select(self, idx) -> "RolloutBatch":
        idx = torch.as_tensor(idx, dtype=torch.long)
        return RolloutBatch(self.prompt_ids[idx], self.prompt_mask[idx], self.response_ids[idx], self.response_mask[idx],
                            self.uid[idx.numpy()], None if self.reward is None else self.reward[idx],
                            None if self.advantage is None else self.advantage[idx],
                            [self.answers[i] for i in idx.tolist()] if self.answers else [])

    def with_advantage(self, advantage: torch.Tensor) -> "RolloutBatch":
        return RolloutBatch(self.prompt_ids, self.prompt_mask, self.response_ids, self.response_mask, self.uid,
                            self.reward, advantage, self.answers)

    # -- store round trip -----------------------------------------------------------------------
    def to_frame(self) -> pd.DataFrame:
        pm, rm = self.prompt_mask.bool(), self.response_mask.bool()
        return pd.DataFrame({
            "rollout": np.arange(len(self)),
            "uid": self.uid.astype(str),
            "prompt_ids": [self.prompt_ids[i][pm[i]].tolist() for i in range(len(self))],
            "response_ids": [self.response_ids[i][rm[i]].tolist() for i in range(len(self))],
            "reward": self.reward.numpy() if self.reward is not None else np.nan,
            "advantage": self.advantage.numpy() if self.advantage is not None else np.nan,
            "answer": self.answers or [""] * len(self),
        })

    @classmethod
    def from_frame(cls, df: pd.DataFrame, pad_id: int) -> "RolloutBatch":
        pi, pm = left_pad([list(x) for x in df["prompt_ids"]], pad_id)
        ri, rm = right_pad([list(x) for x in df["response_ids"]], pad_id)
        return cls(pi, pm, ri, rm, df["uid"].to_numpy(), torch.tensor(df["reward"].to_numpy(), dtype=torch.float32),
                   torch.tensor(df["advantage"].to_numpy(), dtype=torch.float32), list(df["answer"]))


def build_batch(policy: Policy, prompts: list[list[int]], responses: list[list[int]], uids=None,
                answers=None) -> RolloutBatch:
    pi, pm = left_pad(prompts, policy.pad_id)
    ri, rm = right_pad(responses, policy.pad_id)
    uid = np.asarray(uids if uids is not None else np.arange(len(prompts))).astype(str)
    return RolloutBatch(pi, pm, ri, rm, uid, answers=list(answers) if answers is not None else [])


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
    device: str = "auto"  # auto: cuda when available (resolved, then saved in run.json)
    dtype: str = "auto"  # auto: float32 on cpu, bfloat16 on cuda
    engine: str = "auto"  # torch | vllm | auto (vLLM when CUDA and vLLM are present; sampling at a fixed policy)

    def validate(self) -> None:
        check_positive(prompts=self.prompts, n=self.n, max_new_tokens=self.max_new_tokens)
        SamplingParams(self.temperature, self.top_p, self.max_new_tokens)

    @property
    def sampling(self) -> SamplingParams:
        return SamplingParams(self.temperature, self.top_p, self.max_new_tokens)


class ProblemSource:
    """Seeded prompt stream for training/analysis: the toy generator or a loaded data set."""

    def __init__(self, data: str, seed: int, split: str = "train"):
        self.data, self.rng = data, random.Random(f"{split}-{seed}")
        if data == "toy":
            from .tasks.arithmetic import toy_problems

            self.pool = toy_problems(20000, seed, split=split)
        else:
            from .tasks.data import load_dapo

            self.pool = load_dapo(path=None if data == "dapo17k" else data)
        if not self.pool:
            raise UserError(f"no problems in {data}")

    def take(self, k: int) -> list[Problem]:
        return [self.pool[self.rng.randrange(len(self.pool))] for _ in range(k)]


def experiment_run(store, command: str, cfg, policy: Policy, resume: str | None = None):
    """``store.running`` for an experiment: the full resolved config, model id and weights hash, seed, device."""
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
