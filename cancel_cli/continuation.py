"""Monte-Carlo continuations from positions of encoded rollouts (the engine behind token values).

- **One encode per rollout**: one forward pass of prompt + response gives the KV cache of every prefix
  of that rollout; a continuation from state s_t = rollout[:n] uses the slice ``[:n]`` of that cache, so
  no prefix is ever re-encoded (both branches, s+o_t and s+a, start from the same slice).
- **Continuous batching**: a decode batch of fixed width whose rows are continuation *jobs* from any
  (rollout, position, branch); a row that samples EOS or exhausts its budget is refilled at once with the
  next job.  Rows have their own positions and cache lengths: the KV buffer is shared, each row marks its
  valid slots in the attention mask, and the buffer is compacted when holes dominate.
- **Counter-based random streams**: the uniform that draws token k of job j is a hash of (job key, k),
  so a job's continuation depends on its key only, never on the batch width, the scheduling or which
  other jobs ran before (a resumed run, a run with more candidates, a run sharing a cache all agree).
  Sampling is by inverse CDF of the sampling distribution (temperature, top-p): exact, no hidden top-k.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Callable, Iterable

import numpy as np
import torch

from .sampling import SamplingParams, filter_probs

_M64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def stream_key(*parts) -> int:
    """A 64-bit stream id from any printable key parts (e.g. value key, branch, replicate)."""
    return int.from_bytes(hashlib.sha1(repr(parts).encode()).digest()[:8], "little")


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser (uint64 arithmetic wraps modulo 2**64 in numpy)."""
    with np.errstate(over="ignore"):
        x = (x + np.uint64(0x9E3779B97F4A7C15)) & _M64
        x = ((x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & _M64
        x = ((x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & _M64
        return x ^ (x >> np.uint64(31))


def uniforms(keys, counters) -> np.ndarray:
    """U[0, 1) for each (stream key, counter) pair: a pure function of its arguments."""
    k = np.asarray(keys, dtype=np.uint64)
    c = np.asarray(counters, dtype=np.uint64)
    return (_mix(k ^ _mix(c)) >> np.uint64(11)).astype(np.float64) * 2.0**-53


def inverse_cdf(probs: torch.Tensor, u: np.ndarray) -> torch.Tensor:
    """Token index i with cum[i-1] <= u * total < cum[i] (rows of ``probs`` need not be normalised;
    zero-probability tokens are never returned)."""
    cum = probs.double().cumsum(-1)
    x = torch.as_tensor(u, dtype=torch.float64, device=probs.device)[:, None] * cum[:, -1:]
    idx = torch.searchsorted(cum, x, right=True).squeeze(-1)
    last = (probs > 0).long().cumsum(-1).argmax(-1)  # last token with mass (guards x == total)
    return torch.minimum(idx, last)


@dataclass(frozen=True)
class Job:
    """M such jobs per branch: continue ``source``'s first ``length`` tokens with ``first``, then sample up
    to ``budget`` more tokens from the stream ``key`` (counters 1, 2, ...)."""

    source: int
    length: int
    first: int
    budget: int
    key: int


class ContinuationEngine:
    def __init__(self, policy, width: int = 256):
        if width < 1:
            raise ValueError(f"decode width must be >= 1, got {width}")
        self.policy, self.width = policy, width
        self.caches: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {}
        self.peak_kv_slots = 0  # max rows x buffer length seen (the memory test's measure)

    # -- one encode per rollout -------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, source: int, ids: list[int], positions: Iterable[int] = ()) -> dict[int, torch.Tensor]:
        """Encode ``ids`` once, keep its KV cache under ``source``; return the next-token logits (fp64)
        at each requested prefix length n (the distribution of token n given ids[:n])."""
        from transformers import DynamicCache

        cache = DynamicCache()
        out = self.policy.model(input_ids=torch.tensor([ids], device=self.policy.device), past_key_values=cache,
                                use_cache=True)
        self.caches[source] = [(layer.keys[0], layer.values[0]) for layer in cache.layers]
        return {n: out.logits[0, n - 1].double() for n in positions}

    def release(self, source: int) -> None:
        self.caches.pop(source, None)

    # -- continuous batching ----------------------------------------------------------------------
    @torch.no_grad()
    def run(self, jobs: Iterable[Job], params: SamplingParams, on_done: Callable[[int, list[int]], None]) -> None:
        """Run every job; ``on_done(job_index, tokens)`` receives ``[first] + sampled`` (ending with EOS when
        one was sampled) as each job finishes.  Memory is O(width x longest row), whatever the job count."""
        from transformers import DynamicCache

        model, eos, dev = self.policy.model, self.policy.eos_id, self.policy.device
        it = iter(enumerate(jobs))
        W = self.width
        kv: list[list[torch.Tensor]] | None = None  # per layer [keys, values], each [W, kvh, S, d]
        valid = torch.zeros((W, 0), dtype=torch.bool, device=dev)
        pos = torch.zeros(W, dtype=torch.long, device=dev)
        tok = torch.zeros(W, dtype=torch.long, device=dev)
        left = np.zeros(W, dtype=np.int64)  # tokens still allowed per row
        count = np.zeros(W, dtype=np.uint64)  # next stream counter per row
        keys = np.zeros(W, dtype=np.uint64)
        row_job: list[int | None] = [None] * W
        row_out: list[list[int]] = [[] for _ in range(W)]
        exhausted = False

        def next_job():
            nonlocal exhausted
            while not exhausted:
                try:
                    j, job = next(it)
                except StopIteration:
                    exhausted = True
                    return None
                if job.first == eos or job.budget <= 0:
                    on_done(j, [job.first])  # finished before any decode step
                    continue
                return j, job
            return None

        def fill(r: int) -> None:
            nonlocal kv, valid
            got = next_job()
            if got is None:
                row_job[r] = None
                valid[r] = False
                return
            j, job = got
            src = self.caches[job.source]
            n = job.length
            if kv is None:
                kv = [[torch.zeros((W,) + k.shape[:1] + (0,) + k.shape[2:], dtype=k.dtype, device=dev) for k in (k0, v0)]
                      for k0, v0 in src]
            if n > valid.shape[1]:  # grow the buffer (new slots masked for every other row)
                extra = n - valid.shape[1]
                kv = [[torch.cat([b, b.new_zeros(b.shape[:2] + (extra,) + b.shape[3:])], 2) for b in layer] for layer in kv]
                valid = torch.cat([valid, valid.new_zeros((W, extra))], 1)
            for layer, (k, v) in zip(kv, src):
                layer[0][r, :, :n] = k[:, :n]
                layer[1][r, :, :n] = v[:, :n]
            valid[r] = False
            valid[r, :n] = True
            pos[r], tok[r], left[r], count[r], keys[r] = n, job.first, job.budget, 1, job.key
            row_job[r], row_out[r] = j, [job.first]

        for r in range(W):
            fill(r)
        while any(j is not None for j in row_job):
            active = torch.tensor([j is not None for j in row_job], device=dev)
            cache = DynamicCache()
            for i, (k, v) in enumerate(kv):
                cache.update(k, v, i)
            mask = torch.cat([valid, torch.ones((W, 1), dtype=torch.bool, device=dev)], 1).long()
            logits = model(input_ids=tok[:, None], attention_mask=mask, position_ids=pos[:, None],
                           past_key_values=cache, use_cache=True).logits[:, -1]
            kv = [[layer.keys, layer.values] for layer in cache.layers]
            valid = torch.cat([valid, active[:, None]], 1)
            self.peak_kv_slots = max(self.peak_kv_slots, W * valid.shape[1])
            nxt = inverse_cdf(filter_probs(logits, params.temperature or 1.0, params.top_p), uniforms(keys, count))
            if params.temperature == 0:
                nxt = logits.argmax(-1)
            nxt_l = nxt.tolist()
            count += np.uint64(1)
            left -= 1
            pos += 1
            tok = nxt.clone()
            for r in range(W):
                if row_job[r] is None:
                    continue
                row_out[r].append(nxt_l[r])
                if nxt_l[r] == eos or left[r] <= 0:
                    on_done(row_job[r], row_out[r])
                    fill(r)
            kv, valid = self._compact(kv, valid)

    def _compact(self, kv, valid):
        """Drop holes once they make up more than half of the buffer (rows keep their slot order)."""
        S = valid.shape[1]
        need = int(valid.sum(1).max()) if S else 0
        if S < 64 or S <= 2 * need:
            return kv, valid
        order = torch.sort((~valid).to(torch.int8), dim=1, stable=True).indices[:, :need]  # valid slots first
        idx = order[:, None, :, None]
        kv = [[b.gather(2, idx.expand(b.shape[0], b.shape[1], need, b.shape[3])) for b in layer] for layer in kv]
        return kv, valid.gather(1, order)
