"""RolloutBatch: prompts x G responses with rewards and GRPO advantages, saved so every analysis of a
run uses the same batch (the paper's controlled design)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from .policy import Policy, left_pad, right_pad


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
