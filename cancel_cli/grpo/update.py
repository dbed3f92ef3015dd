"""One GRPO update: (policy, RolloutBatch, plan, optimizer, params) -> updated policy.

PPO semantics: the old logprobs are fixed by a training-path forward before the first mini-batch; each
mini-batch takes one optimizer step, so later mini-batches see the moved policy.  ``params="head"``
trains only the LM head W (the paper's output-layer proxy): the hidden states h are then constant and
are computed once.  ``grpo_update`` leaves its input policy untouched (analyses compare several updates
from one theta_0); the trainer keeps one ``Updater`` whose optimizer state persists across steps.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import UserError
from ..policy import Policy, logprob_entropy
from ..rollout import RolloutBatch
from .loss import ClipConfig, policy_loss_sum


@dataclass
class OptimConfig:
    optimizer: str = "sgd"  # sgd | adamw
    lr: float = 0.1
    momentum: float = 0.0
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    params: str = "full"  # full | head
    grad_clip: float | None = None
    micro_rows: int = 64  # rows per forward/backward (gradient accumulation inside a mini-batch)
    temperature: float = 1.0


def make_optimizer(policy: Policy, cfg: OptimConfig) -> torch.optim.Optimizer:
    if cfg.params not in ("full", "head"):
        raise UserError(f"params must be full or head, got {cfg.params!r}")
    head = policy.lm_head.weight
    for p in policy.model.parameters():
        p.requires_grad_(cfg.params == "full" or p is head)
    params = [p for p in policy.model.parameters() if p.requires_grad]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    raise UserError(f"unknown optimizer {cfg.optimizer!r} (sgd | adamw)")


def old_logprobs(policy: Policy, batch: RolloutBatch, temperature: float = 1.0) -> torch.Tensor:
    return policy.token_stats(batch.prompt_ids, batch.prompt_mask, batch.response_ids, batch.response_mask,
                              temperature=temperature, with_entropy=False).logprob


class Updater:
    """A policy with its optimizer; ``step`` applies one GRPO update (all mini-batches of a plan)."""

    def __init__(self, policy: Policy, cfg: OptimConfig, clip: ClipConfig = ClipConfig()):
        self.policy, self.cfg, self.clip = policy, cfg, clip
        self.optimizer = make_optimizer(policy, cfg)

    def step(self, batch: RolloutBatch, minibatches: list[list[int]], advantage: torch.Tensor | None = None,
             old_logprob: torch.Tensor | None = None, loss_mask: torch.Tensor | None = None) -> dict:
        """``advantage`` overrides the batch's (e.g. positive-only A+); ``loss_mask`` drops tokens from the
        loss while keeping them in the token-mean normaliser (the masked updates of Sec. 2)."""
        adv = batch.advantage if advantage is None else advantage
        if adv is None:
            raise ValueError("batch has no advantages")
        model = self.policy.model
        was_training = model.training
        model.eval()  # no dropout: the update must be a deterministic function of the batch
        if old_logprob is None:
            old_logprob = old_logprobs(self.policy, batch, self.cfg.temperature)
        resp_mask = batch.response_mask
        lmask = resp_mask if loss_mask is None else resp_mask * loss_mask.to(resp_mask.dtype)
        hidden = None
        if self.cfg.params == "head":  # h does not move: compute it once
            with torch.no_grad():
                hidden = self.policy.token_stats(batch.prompt_ids, batch.prompt_mask, batch.response_ids, resp_mask,
                                                 with_entropy=False, with_hidden=True).hidden
        losses, clipfrac = [], []
        for mb in minibatches:
            mb = torch.as_tensor(mb, dtype=torch.long)
            n_tokens = resp_mask[mb].sum().clamp(min=1).item()  # token-mean over the whole mini-batch
            self.optimizer.zero_grad(set_to_none=True)
            tot_loss, tot_clip = 0.0, 0.0
            for s in range(0, len(mb), self.cfg.micro_rows):
                rows = mb[s : s + self.cfg.micro_rows]
                if hidden is not None:
                    lp, _ = logprob_entropy(self.policy.lm_head(hidden[rows]), batch.response_ids[rows],
                                            self.cfg.temperature, with_entropy=False)
                else:
                    h = self.policy.hidden_states(batch.prompt_ids[rows], batch.prompt_mask[rows],
                                                  batch.response_ids[rows], resp_mask[rows])
                    lp, _ = logprob_entropy(self.policy.lm_head(h), batch.response_ids[rows].to(h.device),
                                            self.cfg.temperature, with_entropy=False)
                dev = lp.device
                loss_sum, clip_sum = policy_loss_sum(lp, old_logprob[rows].to(dev), adv[rows].to(dev),
                                                     lmask[rows].to(dev), self.clip)
                (loss_sum / n_tokens).backward()
                tot_loss += loss_sum.item() / n_tokens
                tot_clip += clip_sum.item() / n_tokens
            if self.cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], self.cfg.grad_clip)
            self.optimizer.step()
            losses.append(tot_loss)
            clipfrac.append(tot_clip)
        model.train(was_training)
        return {"loss": sum(losses) / max(len(losses), 1), "clipfrac": sum(clipfrac) / max(len(clipfrac), 1),
                "optimizer_steps": len(minibatches), "minibatch_losses": losses}


def grpo_update(policy: Policy, batch: RolloutBatch, minibatches: list[list[int]] | None = None,
                cfg: OptimConfig = OptimConfig(), clip: ClipConfig = ClipConfig(), **step_kwargs) -> Policy:
    """A fresh copy of ``policy`` after one GRPO update (default: the whole batch as one mini-batch)."""
    new = policy.clone()
    Updater(new, cfg, clip).step(batch, minibatches or [list(range(len(batch)))], **step_kwargs)
    for p in new.model.parameters():
        p.requires_grad_(False)
    return new
