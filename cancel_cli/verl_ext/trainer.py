"""``cancel_sync``: verl's v1 sync trainer with the paper's mini-batch layouts and the per-token probe.

Registered with verl's trainer registry by the plugin.  verl compares the trainer-mode string with
"sync" in several places, so the subclass sets ``trainer.v1.trainer_mode = "sync"`` before the parent's
``__init__`` and keeps sync semantics everywhere.

- ``_balance_batch``: ``cancel.mini_batching`` = verl-default (verl's own code) | random |
  query-preserved | sign-partitioned (``layout.grouped_layout``: global mini-batch k is the plan's k-th
  mini-batch, ranks balanced inside it, padding last).
- ``_update_actor``: after verl's update, one extra ``compute_log_prob`` on the same batch (same
  temperature and micro-batching) gives delta log p per token; the flip summary by advantage sign and
  the entropy go to verl's logger (``cancel/probe/*``) and, as parquet, into the results store run
  ``cancel.results_dir / train / cancel.run_id`` (``metrics.parts``, ``probe_tokens.parts``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import transfer_queue as tq
from omegaconf import open_dict
from verl.trainer.ppo.padding_utils import upsample_batch_to_divisible_size
from verl.trainer.ppo.v1.trainer_base import register_trainer
from verl.trainer.ppo.v1.trainer_sync import PPOTrainerSync
from verl.workers.utils.padding import response_from_nested

from ..grpo.probe import flip_summary
from ..grpo.plans import groups_split_fraction
from .layout import global_minibatches, grouped_layout

TRAINER_NAME = "cancel_sync"


@register_trainer(TRAINER_NAME)
class CancelSyncTrainer(PPOTrainerSync):
    def __init__(self, config):
        with open_dict(config):
            config.trainer.v1.trainer_mode = "sync"  # keep every `trainer_mode == "sync"` branch
        cancel = config.get("cancel", {}) or {}
        self.mini_batching = cancel.get("mini_batching", "verl-default")
        self.probe = bool(cancel.get("probe", True))
        self.probe_tokens = bool(cancel.get("probe_tokens", False))
        self.store_run = None
        if cancel.get("results_dir") and cancel.get("run_id"):
            from ..store import Store

            self.store_run = Store(cancel.results_dir).get(cancel.run_id)
        super().__init__(config)

    def _dp_size(self) -> int:
        role, wg = "actor", self.actor_rollout_wg
        if role not in wg._dispatch_info:
            wg._dispatch_info[role] = wg._query_dispatch_info(role)
        return max(wg._dispatch_info[role]) + 1

    def _balance_batch(self, batch, metrics, logging_prefix="global_seqlen", keep_minibatch=False):
        if self.mini_batching == "verl-default":
            return super()._balance_batch(batch, metrics, logging_prefix, keep_minibatch)
        dp = self._dp_size()
        batch = upsample_batch_to_divisible_size(batch, self._get_required_batch_multiple(dp), self.tokenizer.eos_token_id)
        mb = self.config.actor_rollout_ref.actor.ppo_mini_batch_size * self.config.actor_rollout_ref.rollout.n
        uids = [k.split("_")[0] for k in batch.keys]
        seq = [t["seq_len"] for t in batch.tags]
        pad = [bool(t.get("is_padding", False)) for t in batch.tags]
        sign = None
        if self.mini_batching == "sign-partitioned":
            data = tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id, select_fields=["rm_scores"])
            r = pd.Series([float(x.sum()) for x in data["rm_scores"]])
            sign = (r - r.groupby(uids).transform("mean")).to_numpy()
        order = grouped_layout(uids, seq, mb, dp, self.mini_batching, sign, pad, seed=self.global_steps)
        batch.reorder(order)
        real = [[i for i in m if not pad[i]] for m in global_minibatches(order, mb, dp)]
        metrics[f"cancel/{logging_prefix}/groups_split_frac"] = groups_split_fraction(real, uids)[0]
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
        fields = ["old_log_probs", "advantages", "response_mask", "entropy"]
        before = tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id, select_fields=fields)
        batch = super()._update_actor(batch, metrics)
        batch.extra_info.update({"calculate_entropy": False, "compute_loss": False,
                                 "temperature": self.config.actor_rollout_ref.rollout.temperature})
        out = self.actor_rollout_wg.compute_log_prob(batch)
        after = tq.kv_batch_get(keys=out.keys, partition_id=out.partition_id, select_fields=["log_probs", "response_mask"])
        new = response_from_nested(after["log_probs"], after["response_mask"])
        pad = np.array([bool(t.get("is_padding", False)) for t in batch.tags])
        rows = []
        for i in np.flatnonzero(~pad):
            m = before["response_mask"][i].bool()
            old = before["old_log_probs"][i][m].double()
            d = (new[i][m].double() - old).cpu().numpy()
            a = float(before["advantages"][i][m][0]) if m.any() else 0.0
            rows.append(pd.DataFrame({"rollout": i, "uid": batch.keys[i].split("_")[0], "delta": d, "advantage": a,
                                      "entropy": before["entropy"][i][m].double().cpu().numpy(), "step": self.global_steps}))
        tokens = pd.concat(rows, ignore_index=True)
        summ = flip_summary(tokens.delta, tokens.advantage)
        metrics.update({f"cancel/probe/{k}": v for k, v in summ.items()})
        if self.store_run is not None:
            row = {"step": self.global_steps, **summ, **{k: float(v) for k, v in metrics.items()
                                                          if isinstance(v, (int, float, np.floating))}}
            self.store_run.write_part("metrics", self.global_steps, pd.DataFrame([row]))
            if self.probe_tokens:
                self.store_run.write_part("tokens", self.global_steps, tokens)
        return batch
