"""``cancel_sync``: verl's v1 sync trainer with the paper's mini-batch layouts and the per-token probe.

Registered with verl's trainer registry by the plugin.  verl compares the trainer-mode string with
"sync" in several places, so the subclass sets ``trainer.v1.trainer_mode = "sync"`` before the parent's
``__init__`` and keeps sync semantics everywhere.

- ``_balance_batch``: ``cancel.mini_batching`` = verl-default (verl's own code) | random |
  query-preserved | sign-partitioned: the plan is ``grpo.plans.make_plan`` (the torch trainer's
  function) and ``layout.verl_order`` only maps it onto verl's order (plan mini-batch k = global
  mini-batch k, padded with verl's no-op samples, ranks balanced inside it).  Either way the share of
  groups spread over > 1 global mini-batch is measured on the order verl will actually use.
- ``_update_actor``: after verl's update, one extra ``compute_log_prob`` on the same batch (same
  temperature and micro-batching) gives delta log p per token; the flip summary by advantage sign goes
  to verl's logger (``cancel/probe/*``) and, with the names the torch trainer uses (``reward``,
  ``groups_split_frac``, ``flip_rate``, ``pos_boosted``, ``rb_utilization``, ...), into the results
  store run in ``cancel.run_dir`` (``metrics`` parts; ``tokens`` with probe_tokens).
- ``_validate``: verl's validation, also written to the store's ``validation`` table.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
import transfer_queue as tq
from omegaconf import open_dict
from verl.trainer.ppo.padding_utils import upsample_batch_to_divisible_size
from verl.trainer.ppo.v1.trainer_base import register_trainer
from verl.trainer.ppo.v1.trainer_sync import PPOTrainerSync
from verl.workers.utils.padding import response_from_nested

from ..grpo.probe import flip_rate, flip_summary
from ..grpo.advantages import grpo_advantage
from ..grpo.plans import groups_split_fraction, make_plan
from .layout import global_minibatches, padded_size, verl_order

TRAINER_NAME = "cancel_sync"


def _uid(key: str) -> str:
    return key.split("_")[0]


@register_trainer(TRAINER_NAME)
class CancelSyncTrainer(PPOTrainerSync):
    def __init__(self, config):
        with open_dict(config):
            config.trainer.v1.trainer_mode = "sync"  # keep every `trainer_mode == "sync"` branch
        cancel = config.get("cancel", {}) or {}
        self.mini_batching = cancel.get("mini_batching", "verl-default")
        self.probe = bool(cancel.get("probe", True))
        self.probe_tokens = bool(cancel.get("probe_tokens", False))
        self.plan_seed = int(cancel.get("seed", 0) or 0)
        if self.mini_batching != "verl-default":
            actor = config.actor_rollout_ref.actor
            if actor.get("shuffle", False) or actor.get("ppo_epochs", 1) != 1:
                raise ValueError("cancel.mini_batching needs actor.shuffle=false and ppo_epochs=1 (verl would re-mix "
                                 "the planned mini-batches)")
        self.store_run = None
        if cancel.get("run_dir"):
            from ..store import Run

            self.store_run = Run(cancel.run_dir)
        self._layout: dict = {}
        super().__init__(config)

    def _dp_size(self) -> int:
        role, wg = "actor", self.actor_rollout_wg
        if role not in wg._dispatch_info:
            wg._dispatch_info[role] = wg._query_dispatch_info(role)
        return max(wg._dispatch_info[role]) + 1

    def _mini_batch_rollouts(self) -> int:
        return self.config.actor_rollout_ref.actor.ppo_mini_batch_size * self.config.actor_rollout_ref.rollout.n

    def _plan_layout(self, batch):
        """Pad and reorder ``batch`` so verl's global mini-batches are the grpo/ plan's mini-batches."""
        dp, mb = self._dp_size(), self._mini_batch_rollouts()
        uids = np.array([_uid(k) for k in batch.keys])
        data = tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id, select_fields=["rm_scores"])
        reward = torch.tensor([float(x.sum()) for x in data["rm_scores"]])
        lengths = [t.get("response_len", t["seq_len"]) for t in batch.tags]
        adv = grpo_advantage(reward, uids).numpy()  # sign of verl's GRPO advantage (Eq. 2), not yet computed
        plan = make_plan(self.mini_batching, uids, adv, lengths, mb, seed=self.plan_seed * 100003 + self.global_steps)
        n_real, size = len(batch), padded_size(plan.minibatches, mb)
        if size > n_real:
            batch = upsample_batch_to_divisible_size(batch, size, self.tokenizer.eos_token_id)
        order = verl_order(plan.minibatches, range(n_real, len(batch)), [t["seq_len"] for t in batch.tags], mb, dp)
        batch.reorder(order)
        return batch

    def _balance_batch(self, batch, metrics, logging_prefix="global_seqlen", keep_minibatch=False):
        if self.mini_batching == "verl-default":
            batch = super()._balance_batch(batch, metrics, logging_prefix, keep_minibatch)
        else:
            batch = self._plan_layout(batch)
        mbs = global_minibatches(list(range(len(batch))), self._mini_batch_rollouts(), self._dp_size())
        pad = [bool(t.get("is_padding", False)) for t in batch.tags]
        real = [[i for i in m if not pad[i]] for m in mbs]
        split, per_group = groups_split_fraction(real, [_uid(k) for k in batch.keys])
        self._layout = {"groups_split_frac": split, "minibatches_per_group": per_group, "minibatches": len(mbs)}
        metrics.update({f"cancel/{logging_prefix}/{k}": v for k, v in self._layout.items()})
        return batch

    def _validate(self):
        """verl's validation, also written to the store as the ``validation`` table (one row per data
        source, ``val-core/<source>/acc/mean@k``), so plots read a verl run like a torch run."""
        out = super()._validate()
        if self.store_run is not None and out:
            rows = []
            for key, val in out.items():
                parts = key.split("/")
                if parts[0] == "val-core" and len(parts) >= 4 and parts[3].startswith("mean@"):
                    rows.append({"step": self.global_steps, "benchmark": parts[1], "k": int(parts[3].split("@")[1]),
                                 "accuracy": float(val), "problems": 0, "mean_length": float("nan")})
            if rows:
                self.store_run.write_part("validation", self.global_steps, pd.DataFrame(rows))
        return out

    def _update_actor(self, batch, metrics):
        if not self.probe:
            return super()._update_actor(batch, metrics)
        fields = ["old_log_probs", "advantages", "response_mask", "entropy", "rm_scores"]
        before = tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id, select_fields=fields)
        batch = super()._update_actor(batch, metrics)
        batch.extra_info.update({"calculate_entropy": False, "compute_loss": False,
                                 "temperature": self.config.actor_rollout_ref.rollout.temperature})
        out = self.actor_rollout_wg.compute_log_prob(batch)
        after = tq.kv_batch_get(keys=out.keys, partition_id=out.partition_id, select_fields=["log_probs", "response_mask"])
        new = response_from_nested(after["log_probs"], after["response_mask"])
        pad = np.array([bool(t.get("is_padding", False)) for t in batch.tags])
        rows, rewards = [], []
        for i in np.flatnonzero(~pad):
            m = before["response_mask"][i].bool()
            d = (new[i][m].double() - before["old_log_probs"][i][m].double()).cpu().numpy()
            a = float(before["advantages"][i][m][0]) if m.any() else 0.0
            rewards.append(float(before["rm_scores"][i].sum()))
            rows.append(pd.DataFrame({"rollout": i, "uid": _uid(batch.keys[i]), "delta": d, "advantage": a,
                                      "entropy": before["entropy"][i][m].double().cpu().numpy(), "step": self.global_steps}))
        tokens = pd.concat(rows, ignore_index=True)
        summ = {**flip_summary(tokens.delta, tokens.advantage), "flip_rate": flip_rate(tokens.delta, tokens.advantage)}
        metrics.update({f"cancel/probe/{k}": v for k, v in summ.items()})
        if self.store_run is not None:
            self.store_run.write_part("metrics", self.global_steps, pd.DataFrame([self._metrics_row(summ, rewards, tokens, metrics)]))
            if self.probe_tokens:
                self.store_run.write_part("tokens", self.global_steps, tokens)
        return batch

    def _metrics_row(self, summ: dict, rewards: list[float], tokens: pd.DataFrame, metrics: dict) -> dict:
        """One metrics row under the torch trainer's names (``grpo.trainer.summarize`` reads both), plus
        every numeric verl metric under verl's own name."""
        verl = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float, np.floating, np.integer))}
        r = np.asarray(rewards)
        row = {"step": self.global_steps, "reward": float(r.mean()), "entropy": float(tokens.entropy.mean()),
               "rollouts": len(r), **self._layout, **summ, **verl}
        for k, v in verl.items():  # the RB sampler's metrics (training/rb/*) as the torch trainer names them
            if k.startswith("training/rb/"):
                row["rb_" + k.rsplit("/", 1)[1]] = v
        return row
