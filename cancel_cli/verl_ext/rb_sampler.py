"""Reward-balanced batching as a verl v1 replay-buffer sampler (``trainer.v1.sampler.custom_sampler``).

Keeps sync semantics (replicas sleep after sampling; refills go through ``refill_fn``) but replaces the
oldest-first selection.  It never returns while a group is pending or running: verl's sync trainer puts
the rollout replicas to sleep right after sampling, which would strand (or crash) requests in flight, so
a choice is made only once everything submitted has finished.  Among the finished groups it chooses
``batch_size`` groups satisfying min(N+, N-) >= tau * |B| with grpo/'s exact selection (oldest groups preferred), keeps the rest for later
steps, drops groups older than ``max_age`` steps, and after ``max_refills`` refills without a
balanced choice raises with the reason.  Rewards must exist at sampling time (rule-based reward:
``rm_scores``).  ``sampler_kwargs``: ``tau`` (0.5), ``max_age`` (4), ``max_refills`` (8).
"""

from __future__ import annotations

import time

import transfer_queue as tq
from verl.trainer.ppo.v1.replay_buffer import ReplayBuffer

from ..grpo.reward_balanced import RBStarved, check_tau, select_balanced


class RewardBalancedReplayBuffer(ReplayBuffer):
    def __init__(self, *args, **kwargs):
        kwargs.pop("filter_groups_metric", None)
        super().__init__(*args, **kwargs)
        kw = dict(self.sampler_kwargs or {})
        self.tau = float(kw.get("tau", 0.5))
        check_tau(self.tau)
        self.max_age = int(kw.get("max_age", 4))
        self.max_refills = int(kw.get("max_refills", 8))
        self._positives: dict[str, tuple[int, int]] = {}
        self.stats = {"groups_seen": 0, "groups_used": 0, "groups_dropped": 0}

    def _group_counts(self, partition_id: str, uids: set[str]) -> dict[str, tuple[int, int]]:
        """(positives, size) per finished group, from the rule-based rm_scores (cached; groups are immutable)."""
        new = uids - self._positives.keys()
        keys = [k for k in self.partitions[partition_id] if k.split("_")[0] in new]
        if keys:
            data = tq.kv_batch_get(keys=keys, partition_id=partition_id, select_fields=["rm_scores"])
            counts: dict[str, list[int]] = {}
            for k, v in zip(keys, data["rm_scores"]):
                counts.setdefault(k.split("_")[0], []).append(int(float(v.sum()) > 0.5))
            for uid, c in counts.items():
                self._positives[uid] = (sum(c), len(c))
            self.stats["groups_seen"] += len(counts)
        return {u: self._positives[u] for u in uids if u in self._positives}

    def sample(self, global_steps: int, partition_id: str, batch_size: int):
        if partition_id == "val":
            return super().sample(global_steps, partition_id, batch_size)
        refills, last_debug = 0, time.time()
        while True:
            self._sync_metadata_from_transfer_queue()
            steps = self.prompt_global_steps[partition_id]
            finished = set(self.finished_keys[partition_id])
            old = {u for u in finished if global_steps - steps.get(u, global_steps) > self.max_age}
            failed = set(self.failure_keys[partition_id])
            if old | failed:
                self.stats["groups_dropped"] += len(old)
                self._clear_groups(partition_id, old | failed)
                finished -= old
            inflight = len(self.pending_keys[partition_id]) + len(self.running_keys[partition_id])
            if inflight == 0 and len(finished) >= batch_size:  # nothing in flight (replicas sleep next)
                counts = self._group_counts(partition_id, finished)
                order = sorted(counts, key=lambda u: (steps.get(u, 0), u))  # oldest first
                sizes = {counts[u][1] for u in order}
                size = max(sizes)
                order = [u for u in order if counts[u][1] == size]  # equal group sizes (failed rollouts excluded)
                sel = select_balanced([counts[u][0] for u in order], size, batch_size, self.tau)
                if sel is not None:
                    chosen = [order[i] for i in sel]
                    self.stats["groups_used"] += len(chosen)
                    pos = sum(counts[u][0] for u in chosen)
                    metrics = {"training/rb/positive_share": pos / (size * len(chosen)), "training/rb/refills": refills,
                               "training/rb/buffered_groups": len(finished) - len(chosen),
                               "training/rb/utilization": self.stats["groups_used"] / max(self.stats["groups_seen"], 1),
                               "training/rb/dropped_groups": self.stats["groups_dropped"]}
                    return self._materialize_batch(partition_id, chosen, dict(self.partitions[partition_id])), metrics
            if inflight == 0:
                if refills >= self.max_refills:
                    raise RBStarved(f"reward-balanced sampler: no batch of {batch_size} groups with min(N+,N-) >= "
                                    f"{self.tau}*|B| after {refills} refills ({len(finished)} finished groups buffered)")
                self.refill_fn(batch_size)
                refills += 1
                continue
            last_debug = self._wait_for_next_poll(partition_id, last_debug)
