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


GQA_DECODE = "cancel_gqa_decode"


def gqa_decode_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """Attention of one query token per row against a per-row-masked KV cache with grouped KV heads, without
    repeating the cache per query head: transformers' sdpa path copies the whole cache (``repeat_kv``) whenever a
    mask is given, which was the largest cost of a continuation decode step on CPU.  Query head i uses KV head
    i // g (transformers' ``repeat_kv`` order).  Anything else (prefill, no mask) takes the sdpa path."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    W, h, q, d = query.shape
    if q != 1 or attention_mask is None or attention_mask.dtype != torch.bool:
        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout,
                                      **kwargs)
    kvh = key.shape[1]
    scale = scaling if scaling is not None else d**-0.5
    scores = torch.matmul(query.reshape(W, kvh, h // kvh, d), key.transpose(-1, -2)) * scale  # [W, kvh, g, S]
    scores = scores.masked_fill(~attention_mask, float("-inf"))  # mask [W, 1, 1, S] broadcasts over heads
    out = torch.matmul(torch.softmax(scores.float(), -1).to(value.dtype), value)  # [W, kvh, g, d]
    return out.reshape(W, h, 1, d).transpose(1, 2).contiguous(), None


def _register_attention() -> None:
    from transformers import AttentionInterface

    AttentionInterface.register(GQA_DECODE, gqa_decode_attention)


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
        model, eos, dev = self.policy.model, self.policy.eos_id, self.policy.device
        jobs = list(jobs)
        it = iter(enumerate(jobs))
        W = max(1, min(self.width, len(jobs)))  # never wider than the work
        buf: SlotBuffer | None = None  # KV slots of every row, allocated at the first job
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
            nonlocal buf
            got = next_job()
            if got is None:
                row_job[r] = None
                if buf is not None:
                    buf.valid[r] = False
                return
            j, job = got
            src = self.caches[job.source]
            if buf is None:
                buf = SlotBuffer(W, src, dev)
            buf.put(r, src, job.length)
            pos[r], tok[r], left[r], count[r], keys[r] = job.length, job.first, job.budget, 1, job.key
            row_job[r], row_out[r] = j, [job.first]

        for r in range(W):
            fill(r)
        _register_attention()
        before = model.config._attn_implementation
        model.set_attn_implementation(GQA_DECODE)  # restored below, whatever happens
        try:
            while any(j is not None for j in row_job):
                active = torch.tensor([j is not None for j in row_job], device=dev)
                mask = buf.open_slot()  # [W, 1, 1, S+1]; 4D: transformers passes it to attention as is
                logits = model(input_ids=tok[:, None], attention_mask=mask, position_ids=pos[:, None],
                               past_key_values=buf.cache(), use_cache=True).logits[:, -1]
                buf.close_slot(active)
                self.peak_kv_slots = max(self.peak_kv_slots, buf.rows * buf.S)
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
                buf.compact()
                if exhausted:  # no job left to refill with: drop idle rows so stragglers decode in a narrow batch
                    keep = [r for r in range(W) if row_job[r] is not None]
                    if keep and len(keep) <= 3 * W // 4:
                        idx = torch.tensor(keep, device=dev)
                        buf.select(idx)
                        pos, tok = pos.index_select(0, idx), tok.index_select(0, idx)
                        left, count, keys = left[keep], count[keep], keys[keep]
                        row_job, row_out = [row_job[r] for r in keep], [row_out[r] for r in keep]
                        W = len(keep)
        finally:
            model.set_attn_implementation(before)


HEADROOM = 64  # free slots allocated past the used ones (one reallocation per 64 decode steps)


class SlotBuffer:
    """The decode batch's KV cache: per layer a preallocated [rows, kv heads, capacity, d] buffer of which the
    first ``S`` slots are in use, plus ``valid`` [rows, capacity] marking each row's own slots.  A row's prefix
    is copied into slots [:n]; every decode step writes one slot (column S) for all rows in place, so no step
    concatenates the cache; holes (slots of finished rows' successors) are dropped by ``compact``."""

    def __init__(self, rows: int, like: list[tuple[torch.Tensor, torch.Tensor]], device):
        self.rows, self.S, self.device = rows, 0, device
        self.kv = [[torch.zeros((rows, k.shape[0], HEADROOM, k.shape[2]), dtype=k.dtype, device=device) for _ in "kv"]
                   for k, _ in like]
        self.valid = torch.zeros((rows, HEADROOM), dtype=torch.bool, device=device)

    @property
    def capacity(self) -> int:
        return self.valid.shape[1]

    def _realloc(self, cap: int, rows_idx=None, slot_idx=None) -> None:
        """New buffers of capacity ``cap`` holding the used slots (optionally of selected rows / slots)."""
        def take(b):
            b = b[:, :, : self.S] if b.dim() == 4 else b[:, : self.S]
            if rows_idx is not None:
                b = b.index_select(0, rows_idx)
            if slot_idx is not None:
                if b.dim() == 4:
                    return b.gather(2, slot_idx[:, None, :, None].expand(b.shape[0], b.shape[1], slot_idx.shape[1], b.shape[3]))
                return b.gather(1, slot_idx)
            return b

        def grow(b):
            out = b.new_zeros(b.shape[:2] + (cap,) + b.shape[3:]) if b.dim() == 4 else b.new_zeros((b.shape[0], cap))
            if b.dim() == 4:
                out[:, :, : b.shape[2]] = b
            else:
                out[:, : b.shape[1]] = b
            return out

        self.kv = [[grow(take(b)) for b in layer] for layer in self.kv]
        self.valid = grow(take(self.valid))
        self.rows = self.valid.shape[0]

    def _ensure(self, size: int) -> None:
        if size > self.capacity:
            self._realloc(size + HEADROOM)

    def put(self, r: int, src, n: int) -> None:
        """Row ``r`` continues a rollout's first ``n`` tokens: their cached KV goes to slots [:n]."""
        if n > self.S:  # new slots are masked for every other row
            self._ensure(n)
            self.valid[:, self.S : n] = False
            self.S = n
        for layer, (k, v) in zip(self.kv, src):
            layer[0][r, :, :n] = k[:, :n]
            layer[1][r, :, :n] = v[:, :n]
        self.valid[r] = False
        self.valid[r, :n] = True

    def open_slot(self) -> torch.Tensor:
        """Make room for this step's token (slot S, visible to every row) and return the 4D attention mask."""
        self._ensure(self.S + 1)
        self.valid[:, self.S] = True
        return self.valid[:, : self.S + 1][:, None, None, :]

    def cache(self):
        from transformers import DynamicCache

        cache = DynamicCache()
        cache.layers = [_SlotLayer(self, i) for i in range(len(self.kv))]
        return cache

    def close_slot(self, active: torch.Tensor) -> None:
        self.valid[:, self.S] = active  # idle rows' junk token is never attended to
        self.S += 1

    def compact(self) -> None:
        """Drop holes once they make up more than half of the used slots (rows keep their slot order)."""
        need = int(self.valid[:, : self.S].sum(1).max()) if self.S else 0
        if self.S < 64 or self.S <= 2 * need:
            return
        order = torch.sort((~self.valid[:, : self.S]).to(torch.int8), dim=1, stable=True).indices[:, :need]
        self._realloc(need + HEADROOM, slot_idx=order)
        self.S = need

    def select(self, rows_idx: torch.Tensor) -> None:
        self._realloc(self.capacity, rows_idx=rows_idx)


class _SlotLayer:
    """One layer of ``SlotBuffer`` seen as a transformers cache layer: ``update`` writes the step's keys and
    values into slot S in place and returns the used slots [:S+1] (views, no copy)."""

    is_sliding = False
    is_compileable = False

    def __init__(self, buf: SlotBuffer, i: int):
        self.buf, self.i, self.is_initialized = buf, i, True

    @property
    def keys(self):
        return self.buf.kv[self.i][0][:, :, : self.buf.S]

    @property
    def values(self):
        return self.buf.kv[self.i][1][:, :, : self.buf.S]

    def update(self, key_states, value_states, *args, **kwargs):
        S, n = self.buf.S, key_states.shape[-2]
        k, v = self.buf.kv[self.i]
        k[:, :, S : S + n] = key_states
        v[:, :, S : S + n] = value_states
        return k[:, :, : S + n], v[:, :, : S + n]

    def get_seq_length(self, *args) -> int:
        return self.buf.S

    def get_mask_sizes(self, query_length: int, *args) -> tuple[int, int]:
        return self.buf.S + query_length, 0

    def get_max_cache_shape(self) -> int:
        return -1
