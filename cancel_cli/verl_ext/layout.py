"""Map a grpo/ mini-batch plan onto verl's data-parallel order (pure functions, no verl import at load).

The plan itself comes from ``grpo.plans.make_plan`` -- the same function the torch trainer uses -- so
both engines form identical mini-batches; this module only translates.  verl hands rank r the r-th
contiguous shard of the (reordered) batch and iterates it in local mini-batches of
``mini_batch_size / dp``; global mini-batch k is the union of every rank's k-th local chunk.  A plan's
mini-batch that is smaller than verl's fixed size (sign-partitioned: 10 positives with a mini-batch of 8
give 8 + 2) is filled with verl's ``is_padding`` samples (no response tokens, no loss), so plan
mini-batch k is exactly global mini-batch k and no two plan mini-batches share an optimizer step.
"""

from __future__ import annotations

import numpy as np

from ..errors import UserError
from ..grpo.plans import verl_partitions, workload  # noqa: F401 (workload: re-exported for the verl tests)


def padded_size(minibatches: list[list[int]], mini_batch_size: int) -> int:
    """Batch size verl needs for the plan: one full verl mini-batch per plan mini-batch."""
    if any(len(m) > mini_batch_size for m in minibatches):
        raise UserError(f"a plan mini-batch is larger than verl's mini-batch of {mini_batch_size} rollouts")
    return len(minibatches) * mini_batch_size


def _balanced_ranks(items: list[int], work: np.ndarray, dp: int) -> list[list[int]]:
    if dp == 1:
        return [sorted(items)]
    return [[items[j] for j in p] for p in verl_partitions(work[items].tolist(), dp)]


def verl_order(minibatches: list[list[int]], pad_indices, seq_lens, mini_batch_size: int, dp: int) -> list[int]:
    """Batch order for verl so that global mini-batch k = ``minibatches[k]`` plus padding samples.

    ``minibatches`` index the real rollouts, ``pad_indices`` the padding samples (exactly the room the
    plan leaves: ``padded_size - real``); ranks are balanced by verl's workload inside each mini-batch."""
    if mini_batch_size % dp:
        raise UserError(f"verl's mini-batch of {mini_batch_size} rollouts is not divisible by dp={dp}")
    pads = [int(i) for i in pad_indices]
    mbs = [[int(i) for i in m] for m in minibatches]
    if len(pads) != padded_size(mbs, mini_batch_size) - sum(map(len, mbs)):
        raise UserError("padding does not match the room the plan leaves in verl's mini-batches")
    for m in mbs:
        while len(m) < mini_batch_size:
            m.append(pads.pop())
    work = workload(seq_lens)
    per_rank = [_balanced_ranks(m, work, dp) for m in mbs]  # [k][r]
    return [i for r in range(dp) for k in range(len(mbs)) for i in per_rank[k][r]]


def global_minibatches(order: list[int], mini_batch_size: int, dp: int) -> list[list[int]]:
    """Inverse view: which original indices verl puts in each global mini-batch for a given order."""
    n = len(order)
    shard, local = n // dp, mini_batch_size // dp
    return [[order[r * shard + k * local + j] for r in range(dp) for j in range(local)] for k in range(shard // local)]
