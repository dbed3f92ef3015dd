"""Reward-balanced batching (RB, Sec. 4): release an update batch B only when

    min(N+(B), N-(B)) >= tau * |B|

where N+ / N- count rollouts with reward 1 / 0.  Whole groups are buffered; when the buffer holds at
least ``batch_groups`` groups, B is *chosen* to satisfy the constraint whenever any choice of
``batch_groups`` groups can (exact subset search over positive counts with bitsets, preferring the
oldest groups, then the most balanced B), not taken first-come.  Groups left behind age by one step per
release attempt and are dropped beyond ``max_age``.  After ``max_wait`` consecutive failed attempts the
buffer raises ``RBStarved`` with the reason (a stream with no mixed groups never balances).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import UserError


class RBStarved(UserError):
    pass


@dataclass
class Group:
    uid: str
    rewards: list[float]
    payload: Any = None
    age: int = 0

    @property
    def n_pos(self) -> int:
        return int(sum(r > 0.5 for r in self.rewards))


def check_tau(tau: float) -> None:
    if not 0.0 <= tau <= 0.5:
        raise UserError(f"tau must be in [0, 0.5] (min(N+, N-) >= tau*|B| cannot hold above 0.5), got {tau}")


def select_balanced(pos_counts: list[int], size: int, k: int, tau: float) -> list[int] | None:
    """Indices of k groups (each of ``size`` rollouts, listed oldest first) whose positives P satisfy
    min(P, k*size - P) >= tau*k*size, or None if no choice exists.

    Exact: bitset DP over (groups used, positives).  Among all satisfying choices it returns the one that
    prefers the oldest groups (smallest index sum; ties to the most balanced P), so with tau = 0 it is
    exactly the oldest-first choice verl's sync replay buffer makes."""
    total = k * size
    lo = next((p for p in range(total + 1) if min(p, total - p) >= tau * total - 1e-9), None)
    if lo is None or len(pos_counts) < k:
        return None
    hi = total - lo
    # reach[i][c]: bitset of positive sums reachable with c groups among the first i groups
    reach = [[0] * (k + 1)]
    reach[0][0] = 1
    for p in pos_counts:
        prev = reach[-1]
        cur = prev[:]
        for c in range(1, k + 1):
            cur[c] |= prev[c - 1] << p
        reach.append(cur)
    final = reach[-1][k]
    best = None
    for target in range(lo, hi + 1):
        if not final >> target & 1:
            continue
        chosen, c, s = [], k, target
        for i in range(len(pos_counts), 0, -1):  # skip the newest groups whenever possible
            if reach[i - 1][c] >> s & 1:
                continue
            chosen.append(i - 1)
            s -= pos_counts[i - 1]
            c -= 1
        assert c == 0 and s == 0
        key = (sum(chosen), abs(2 * target - total))
        if best is None or key < best[0]:
            best = (key, sorted(chosen))
    return None if best is None else best[1]


@dataclass
class RewardBalancedBuffer:
    batch_groups: int
    tau: float
    max_age: int = 4
    max_wait: int = 8
    groups: list[Group] = field(default_factory=list)
    sampled: int = 0  # rollouts added
    used: int = 0  # rollouts released into updates
    dropped: int = 0  # rollouts discarded for age
    waits: int = 0  # consecutive failed release attempts
    total_waits: int = 0

    def __post_init__(self):
        check_tau(self.tau)
        if self.batch_groups < 1:
            raise UserError(f"RB batch size must be >= 1 group, got {self.batch_groups}")

    def add(self, groups: list[Group]) -> None:
        sizes = {len(g.rewards) for g in self.groups + groups}
        if len(sizes) > 1:
            raise UserError(f"reward-balanced batching needs equal group sizes, got {sorted(sizes)}")
        self.groups.extend(groups)
        self.sampled += sum(len(g.rewards) for g in groups)

    def release(self) -> list[Group] | None:
        """An update batch satisfying the constraint, or None (wait for more groups)."""
        chosen = None
        if len(self.groups) >= self.batch_groups:
            order = sorted(range(len(self.groups)), key=lambda i: -self.groups[i].age)  # oldest first
            size = len(self.groups[0].rewards)
            sel = select_balanced([self.groups[i].n_pos for i in order], size, self.batch_groups, self.tau)
            chosen = None if sel is None else sorted(order[i] for i in sel)
        if chosen is None:
            self.waits += 1
            self.total_waits += 1
            self._age()
            if self.waits > self.max_wait:
                pos = sum(g.n_pos for g in self.groups)
                tot = sum(len(g.rewards) for g in self.groups)
                mixed = sum(0 < g.n_pos < len(g.rewards) for g in self.groups)
                raise RBStarved(
                    f"reward-balanced batching found no batch with min(N+,N-) >= {self.tau}*|B| after {self.waits} "
                    f"waits (buffer: {len(self.groups)} groups, {mixed} mixed, positive share {pos / max(tot, 1):.2f}); "
                    "lower --tau or use a task the policy solves sometimes")
            return None
        batch = [self.groups[i] for i in chosen]
        keep = set(range(len(self.groups))) - set(chosen)
        self.groups = [self.groups[i] for i in sorted(keep)]
        self.used += sum(len(g.rewards) for g in batch)
        self.waits = 0
        self._age()
        return batch

    def _age(self) -> None:
        for g in self.groups:
            g.age += 1
        old = [g for g in self.groups if g.age > self.max_age]
        self.dropped += sum(len(g.rewards) for g in old)
        self.groups = [g for g in self.groups if g.age <= self.max_age]

    @property
    def utilization(self) -> float:
        return self.used / self.sampled if self.sampled else 0.0

    def stats(self) -> dict:
        return {"rb_sampled": self.sampled, "rb_used": self.used, "rb_dropped": self.dropped,
                "rb_buffered": sum(len(g.rewards) for g in self.groups), "rb_utilization": self.utilization,
                "rb_total_waits": self.total_waits}
