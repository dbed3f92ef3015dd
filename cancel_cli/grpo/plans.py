"""Mini-batch plans: pure functions of (uids, rewards/advantages, lengths, sizes) -> index lists.

One rollout batch is split into mini-batches, one optimizer step each (PPO semantics).  Plans:

- ``random``: a seeded shuffle cut into equal mini-batches.
- ``verl-default``: what verl 0.9's v1 trainer does: rollouts arrive in completion order (shorter
  responses finish first: order by response length, ties in random order), ``_balance_batch`` splits
  them over ``dp`` ranks with Karmarkar-Karp on ``calculate_workload(seq_len)`` (equal sizes, indices
  sorted within a rank), and global mini-batch k is the union of every rank's k-th chunk.  Groups end up
  scattered over mini-batches.
- ``query-preserved`` (QB): whole groups per mini-batch, token-balanced across mini-batches (groups
  placed largest-first on the lightest mini-batch with room).
- ``sign-partitioned`` (Fig. 7a): positive- and negative-advantage rollouts never share a mini-batch;
  zero-advantage rollouts fill the remaining room (they carry no gradient).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..errors import UserError
from .advantages import group_index

PLANS = ("random", "verl-default", "query-preserved", "sign-partitioned")


@dataclass
class Plan:
    name: str
    minibatches: list[list[int]]
    stats: pd.DataFrame  # one row per mini-batch


def check_sizes(batch_size: int, minibatch_size: int, group_size: int | None = None) -> None:
    if minibatch_size < 1:
        raise UserError(f"mini-batch size must be >= 1, got {minibatch_size}")
    if minibatch_size > batch_size:
        raise UserError(f"mini-batch size {minibatch_size} is larger than the batch ({batch_size} rollouts)")
    if group_size is not None and batch_size < group_size:
        raise UserError(f"batch of {batch_size} rollouts is smaller than one group ({group_size})")


def _chunks(order, size):
    return [list(map(int, order[s : s + size])) for s in range(0, len(order), size)]


def random_plan(n: int, minibatch_size: int, seed: int = 0) -> list[list[int]]:
    return _chunks(np.random.default_rng(seed).permutation(n), minibatch_size)


def workload(seq_len) -> np.ndarray:
    """verl.utils.seqlen_balancing.calculate_workload: the cost model verl balances ranks by."""
    s = np.asarray(seq_len, dtype=np.int64)
    return 24576 * s + s**2


def verl_partitions(workloads: list[int], k: int) -> list[list[int]]:
    """verl's ``get_seqlen_balanced_partitions(equal_size=True)``; k = 1 is a single sorted partition."""
    if k == 1:
        return [list(range(len(workloads)))]
    from verl.utils.seqlen_balancing import get_seqlen_balanced_partitions  # heavy import, dp > 1 only

    return get_seqlen_balanced_partitions(list(workloads), k_partitions=k, equal_size=True)


def verl_default_plan(lengths, prompt_lengths, minibatch_size: int, dp: int = 1, seed: int = 0) -> list[list[int]]:
    lengths = np.asarray(lengths)
    n = len(lengths)
    if n % dp or minibatch_size % dp:
        raise UserError(f"batch ({n}) and mini-batch ({minibatch_size}) must be divisible by dp={dp}")
    tie = np.random.default_rng(seed).random(n)
    arrival = np.lexsort((tie, lengths))  # completion order: short responses first
    seq_len = lengths[arrival] + np.asarray(prompt_lengths)[arrival]
    parts = verl_partitions(workload(seq_len).tolist(), dp)
    layout = [arrival[j] for p in parts for j in p]  # batch.reorder(...)
    local = minibatch_size // dp
    shard = n // dp
    ranks = [layout[r * shard : (r + 1) * shard] for r in range(dp)]
    return [[int(i) for r in ranks for i in r[k * local : (k + 1) * local]] for k in range(shard // local + (shard % local > 0))]


def query_preserved_plan(uid, lengths, minibatch_size: int) -> list[list[int]]:
    g = group_index(uid)
    lengths = np.asarray(lengths)
    groups = [np.flatnonzero(g == k) for k in range(g.max() + 1)]
    if max(len(x) for x in groups) > minibatch_size:
        raise UserError(f"mini-batch size {minibatch_size} is smaller than a group ({max(len(x) for x in groups)}): "
                        "query-preserved batching cannot keep groups whole")
    n_mb = max(1, int(round(len(lengths) / minibatch_size)))
    cap = [minibatch_size] * n_mb
    load = [0] * n_mb
    mbs: list[list[int]] = [[] for _ in range(n_mb)]
    for grp in sorted(groups, key=lambda x: -lengths[x].sum()):
        open_ = [k for k in range(n_mb) if cap[k] >= len(grp)] or [int(np.argmax(cap))]
        k = min(open_, key=lambda k: load[k])
        mbs[k].extend(map(int, grp))
        cap[k] -= len(grp)
        load[k] += int(lengths[grp].sum())
    return [sorted(m) for m in mbs if m]


def sign_partitioned_plan(advantage, minibatch_size: int, seed: int = 0) -> list[list[int]]:
    adv = np.asarray(advantage, dtype=float)
    rng = np.random.default_rng(seed)
    pos, neg, zero = (list(rng.permutation(np.flatnonzero(c))) for c in (adv > 0, adv < 0, adv == 0))
    mbs = _chunks(pos, minibatch_size) + _chunks(neg, minibatch_size)
    for m in mbs:  # zero-advantage rollouts fill the room left in partial mini-batches
        while len(m) < minibatch_size and zero:
            m.append(int(zero.pop()))
    mbs += _chunks(zero, minibatch_size)
    return [sorted(m) for m in mbs]


def make_plan(name: str, uid, advantage, lengths, minibatch_size: int, *, prompt_lengths=None, dp: int = 1,
              seed: int = 0) -> Plan:
    n = len(lengths)
    check_sizes(n, minibatch_size)
    if name == "random":
        mbs = random_plan(n, minibatch_size, seed)
    elif name == "verl-default":
        mbs = verl_default_plan(lengths, prompt_lengths if prompt_lengths is not None else np.zeros(n, int),
                                minibatch_size, dp, seed)
    elif name == "query-preserved":
        mbs = query_preserved_plan(uid, lengths, minibatch_size)
    elif name == "sign-partitioned":
        mbs = sign_partitioned_plan(advantage, minibatch_size, seed)
    else:
        raise UserError(f"unknown mini-batch plan {name!r} ({' | '.join(PLANS)})")
    return Plan(name, mbs, plan_stats(mbs, uid, advantage, lengths))


def plan_stats(mbs, uid, advantage, lengths) -> pd.DataFrame:
    """Per mini-batch: rollouts, tokens, groups present, groups split (members elsewhere), N+, N-, the
    advantage sum and sum over groups of |S_B| (Eq. 14's local advantage sum; 0 for whole groups)."""
    g = group_index(uid)
    adv = np.asarray(advantage, dtype=float)
    lengths = np.asarray(lengths)
    size = np.bincount(g)
    rows = []
    for k, m in enumerate(mbs):
        m = np.asarray(m, dtype=int)
        present = np.bincount(g[m], minlength=len(size))
        in_mb = np.flatnonzero(present)
        s_b = np.bincount(g[m], weights=adv[m], minlength=len(size))[in_mb]
        rows.append({"minibatch": k, "rollouts": len(m), "tokens": int(lengths[m].sum()), "groups": len(in_mb),
                     "groups_split": int((present[in_mb] < size[in_mb]).sum()), "n_pos": int((adv[m] > 0).sum()),
                     "n_neg": int((adv[m] < 0).sum()), "adv_sum": float(adv[m].sum()),
                     "abs_group_adv_sum": float(np.abs(s_b).sum())})
    return pd.DataFrame(rows)


def groups_split_fraction(mbs, uid) -> tuple[float, float]:
    """(fraction of groups whose rollouts land in more than one mini-batch, mean mini-batches per group)."""
    g = group_index(uid)
    where = {}
    for k, m in enumerate(mbs):
        for i in m:
            where.setdefault(int(g[i]), set()).add(k)
    spans = np.array([len(v) for v in where.values()])
    return float((spans > 1).mean()), float(spans.mean())
