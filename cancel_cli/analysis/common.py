"""What the analyses share beyond the rollout batch: the analysis batch (stored or fresh) and every
response token flattened with its hidden state."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import UserError
from ..policy import Policy
from ..rollout import ProblemSource, RolloutBatch, sample_batch


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
