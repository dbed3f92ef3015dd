"""The clipped token-level policy loss of Eq. 15 (verl's ``vanilla`` policy loss with ``token-mean``).

    rho_t = exp(logp_t - logp_old_t)
    loss  = (1 / N) * sum_t max(-A rho_t, -A clip(rho_t, 1 - eps_low, 1 + eps_high))   (Eq. 15)

N is the number of response tokens of the whole mini-batch (token-mean), no KL, no entropy term.
verl also applies its dual-clip bound (``clip_ratio_c`` = 3, A < 0 only) and clamps the log-ratio to
[-20, 20]; both are kept so the loss equals verl's exactly (inactive in normal ranges).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class ClipConfig:
    clip_low: float = 0.2
    clip_high: float = 0.28
    clip_c: float = 3.0


def policy_loss_sum(logprob: torch.Tensor, old_logprob: torch.Tensor, advantage: torch.Tensor, mask: torch.Tensor,
                    clip: ClipConfig = ClipConfig()) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum over unmasked tokens of the per-token clipped loss, and the clip fraction numerator."""
    if advantage.dim() == 1:
        advantage = advantage[:, None].expand_as(logprob)
    log_ratio = torch.clamp(logprob - old_logprob, -20.0, 20.0)
    ratio = torch.exp(log_ratio)
    l1 = -advantage * ratio
    l2 = -advantage * torch.clamp(ratio, 1 - clip.clip_low, 1 + clip.clip_high)
    clipped = torch.maximum(l1, l2)
    dual = torch.minimum(-advantage * clip.clip_c, clipped)
    per_token = torch.where(advantage < 0, dual, clipped)
    m = mask.to(per_token.dtype)
    return (per_token * m).sum(), ((l2 > l1).to(m.dtype) * m).sum()


def policy_loss(logprob, old_logprob, advantage, mask, clip: ClipConfig = ClipConfig(),
                num_tokens: float | None = None) -> torch.Tensor:
    """Token-mean loss of Eq. 15; ``num_tokens`` is the mini-batch's token count (for micro-batching)."""
    total, _ = policy_loss_sum(logprob, old_logprob, advantage, mask, clip)
    return total / (num_tokens if num_tokens is not None else mask.sum())
