"""Group-normalised GRPO advantages, as verl's ``compute_grpo_outcome_advantage`` computes them."""

from __future__ import annotations

import numpy as np
import torch


def group_index(uid) -> np.ndarray:
    """Dense group index (0..G-1) per rollout, in order of first appearance."""
    _, first, inv = np.unique(np.asarray(uid).astype(str), return_index=True, return_inverse=True)
    order = np.argsort(np.argsort(first))
    return order[inv]


def grpo_advantage(reward: torch.Tensor, uid, eps: float = 1e-6) -> torch.Tensor:
    """A_i = (r_i - mean_g) / (std_g + eps), std with Bessel's correction (torch.std), as in verl.

    A group of one rollout has no baseline: its advantage is 0 here (verl would return r_i itself,
    i.e. an unnormalised REINFORCE term); callers warn about n = 1 instead of training on it."""
    r = reward.double()
    g = torch.as_tensor(group_index(uid))
    G = int(g.max()) + 1 if len(g) else 0
    count = torch.zeros(G, dtype=torch.double).index_add_(0, g, torch.ones_like(r))
    mean = torch.zeros(G, dtype=torch.double).index_add_(0, g, r) / count
    sq = torch.zeros(G, dtype=torch.double).index_add_(0, g, (r - mean[g]) ** 2)
    std = (sq / (count - 1).clamp(min=1)).sqrt()
    adv = (r - mean[g]) / (std[g] + eps)
    adv = torch.where(count[g] > 1, adv, torch.zeros_like(adv))
    return adv.to(reward.dtype if reward.is_floating_point() else torch.float32)
