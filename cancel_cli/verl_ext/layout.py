"""Mini-batch layouts for verl's data-parallel actor update (pure functions, no verl import).

verl hands rank r the r-th contiguous shard of the (reordered) batch and iterates it in local
mini-batches of ``mini_batch_size / dp``; global mini-batch k is the union of every rank's k-th local
chunk.  ``grouped_layout`` returns the order that makes global mini-batch k equal to the k-th
mini-batch of a grpo/ plan, with the ranks inside each mini-batch balanced by verl's workload
(Karmarkar-Karp, equal sizes) and padding samples (verl's ``is_padding``) at the end.
"""

from __future__ import annotations

import numpy as np

from ..errors import UserError
from ..grpo.plans import query_preserved_plan, random_plan, verl_partitions, workload


def _balanced_ranks(items: list[int], work: np.ndarray, dp: int) -> list[list[int]]:
    if dp == 1:
        return [sorted(items)]
    return [[items[j] for j in p] for p in verl_partitions(work[items].tolist(), dp)]


def grouped_layout(uids, seq_lens, mini_batch_size: int, dp: int, plan: str = "query-preserved",
                   advantage_sign=None, is_padding=None, seed: int = 0) -> list[int]:
    """Batch order for verl so that global mini-batches follow ``plan``."""
    uids = np.asarray(uids).astype(str)
    n = len(uids)
    pad = np.zeros(n, bool) if is_padding is None else np.asarray(is_padding, bool)
    if n % mini_batch_size or mini_batch_size % dp:
        raise UserError(f"batch {n} must be a multiple of the mini-batch {mini_batch_size}, itself a multiple of dp={dp}")
    real = np.flatnonzero(~pad)
    pads = list(np.flatnonzero(pad))
    work = workload(seq_lens)
    n_mb = n // mini_batch_size
    if plan == "query-preserved":
        mbs = query_preserved_plan(uids[real], np.asarray(seq_lens)[real], mini_batch_size)
    elif plan == "random":
        mbs = random_plan(len(real), mini_batch_size, seed)
    elif plan == "sign-partitioned":  # equal-size mini-batches: positives, zeros, negatives in that order
        sign = np.sign(np.asarray(advantage_sign, dtype=float)[real])
        order = np.concatenate([np.flatnonzero(sign > 0), np.flatnonzero(sign == 0), np.flatnonzero(sign < 0)])
        mbs = [list(order[s : s + mini_batch_size]) for s in range(0, len(order), mini_batch_size)]
    else:
        raise UserError(f"unknown verl mini-batching {plan!r} (verl-default | random | query-preserved | sign-partitioned)")
    mbs = [[int(real[i]) for i in m] for m in mbs]
    mbs += [[] for _ in range(n_mb - len(mbs))]
    for m in mbs:  # padding fills mini-batches up to size, last ones first
        while len(m) < mini_batch_size and pads:
            m.append(int(pads.pop()))
    if len(mbs) != n_mb or any(len(m) != mini_batch_size for m in mbs):
        raise UserError("the plan does not fit verl's equal-size mini-batches (unequal group sizes?)")
    per_rank = [_balanced_ranks(m, work, dp) for m in mbs]  # [k][r]
    return [i for r in range(dp) for k in range(n_mb) for i in per_rank[k][r]]


def global_minibatches(order: list[int], mini_batch_size: int, dp: int) -> list[list[int]]:
    """Inverse view: which original indices verl puts in each global mini-batch for a given order."""
    n = len(order)
    shard, local = n // dp, mini_batch_size // dp
    return [[order[r * shard + k * local + j] for r in range(dp) for j in range(local)] for k in range(shard // local)]
