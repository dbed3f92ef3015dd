"""Rollout engines behind one interface.

``TorchSampler`` samples from the true distribution (temperature, top-p; never a hidden top-k) with a
KV cache.  Everything is *shared-prefix* sampling: K prefixes are encoded once, their KV cache is
repeated M times, and the K*M continuations are decoded together.  GRPO rollouts are the case
"prefix = prompt, M = n"; Monte-Carlo token values are "prefix = s_t (+ a_t), M = 256".
``VLLMSampler`` (GPU, optional extra) offers the same interface with prefix caching.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .policy import Policy, left_pad, positions


@dataclass
class SamplingParams:
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 96

    def __post_init__(self):
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")


def filter_probs(logits: torch.Tensor, temperature: float, top_p: float) -> torch.Tensor:
    """The sampling distribution: softmax(logits / T), restricted to the top-p nucleus and renormalised."""
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p < 1.0:
        sorted_p, idx = probs.sort(dim=-1, descending=True)
        cum = sorted_p.cumsum(-1)
        drop = cum - sorted_p >= top_p  # keep the smallest prefix whose mass reaches top_p
        sorted_p = sorted_p.masked_fill(drop, 0.0)
        probs = torch.zeros_like(probs).scatter_(-1, idx, sorted_p)
        probs = probs / probs.sum(-1, keepdim=True)
    return probs


def draw(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator | None) -> torch.Tensor:
    if params.temperature == 0:
        return logits.argmax(-1)
    probs = filter_probs(logits, params.temperature, params.top_p)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


class TorchSampler:
    """Batched KV-cache sampling with a HF model (CPU or one GPU)."""

    def __init__(self, policy: Policy, max_rows: int = 1024):
        self.policy = policy
        self.max_rows = max_rows

    @torch.no_grad()
    def continue_prefixes(self, prefixes: list[list[int]], m: int, params: SamplingParams,
                          generator: torch.Generator | None = None,
                          budgets: list[int] | None = None) -> list[list[list[int]]]:
        """For each prefix, ``m`` continuations (token ids, ending with EOS when one was sampled).

        Each prefix is encoded once and its KV cache repeated ``m`` times (shared-prefix sampling).
        ``budgets`` caps the continuation length per prefix (default ``params.max_new_tokens`` for all)."""
        if m < 1:
            raise ValueError(f"number of continuations must be >= 1, got {m}")
        per_chunk = max(1, self.max_rows // m)
        # prefixes of equal length decode together without padding (no attention mask needed);
        # results go back in the caller's order
        by_len: dict[int, list[int]] = {}
        for i, p in enumerate(prefixes):
            by_len.setdefault(len(p), []).append(i)
        out: list = [None] * len(prefixes)
        for idx in by_len.values():
            for s in range(0, len(idx), per_chunk):
                part = idx[s : s + per_chunk]
                bud = [budgets[i] for i in part] if budgets is not None else None
                got = self._continue_chunk([prefixes[i] for i in part], m, params, generator, bud)
                for j, i in enumerate(part):
                    out[i] = got[j]
        return out

    def _continue_chunk(self, prefixes, m, params, generator, budgets=None):
        from transformers import DynamicCache

        model, eos, pad = self.policy.model, self.policy.eos_id, self.policy.pad_id
        dev = self.policy.device
        ids, mask = left_pad(prefixes, pad)
        ids, mask = ids.to(dev), mask.to(dev)
        cache = DynamicCache()
        # Encode all but the last prefix token once; the last token is fed with the repeated cache so
        # the first sampled token comes from exactly the same code path as every later one.
        head_ids, head_mask = ids[:, :-1], mask[:, :-1]
        if head_ids.shape[1] > 0:
            model(input_ids=head_ids, attention_mask=head_mask, position_ids=positions(head_mask),
                  past_key_values=cache, use_cache=True, logits_to_keep=1)
            cache.batch_repeat_interleave(m)
        mask = mask.repeat_interleave(m, 0)
        pos = positions(mask)[:, -1:]
        tok = ids[:, -1:].repeat_interleave(m, 0)
        n = tok.shape[0]
        rows = torch.arange(n, device=dev)  # original row of each live row
        cap = torch.tensor([b for b in (budgets or [params.max_new_tokens] * len(prefixes)) for _ in range(m)], device=dev)
        if (cap < 1).any():
            raise ValueError("every continuation budget must be >= 1")
        steps = int(cap.max())
        no_pad = bool(mask.all())
        out = torch.full((n, steps), -1, dtype=torch.long, device=dev)  # sampled tokens, -1 = none
        live = torch.ones(n, dtype=torch.bool, device=dev)
        for step in range(steps):
            # without padding the mask is all ones: omit it so attention takes the plain causal path
            logits = model(input_ids=tok, attention_mask=None if no_pad else mask, position_ids=pos,
                           past_key_values=cache, use_cache=True).logits[:, -1]
            nxt = draw(logits, params, generator)
            out[rows[live], step] = nxt[live]
            live = live & (nxt != eos) & (cap[rows] > step + 1)
            if not live.any():
                break
            if (~live).sum() * 4 > len(live):  # compact the cache once a quarter of its rows are finished
                keep = live.nonzero().squeeze(-1)
                cache.batch_select_indices(keep)
                rows, nxt, mask, pos, live = rows[keep], nxt[keep], mask[keep], pos[keep], live[keep]
            tok = nxt[:, None]  # finished rows still in the cache decode junk that is never recorded
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
            pos = pos + 1
        lengths = (out >= 0).sum(1).tolist()
        out_l = out.tolist()
        result = [row[:k] for row, k in zip(out_l, lengths)]
        return [result[i * m : (i + 1) * m] for i in range(len(prefixes))]

    def rollouts(self, prompts: list[list[int]], n: int, params: SamplingParams,
                 generator: torch.Generator | None = None) -> list[list[list[int]]]:
        """GRPO rollouts: n responses per prompt."""
        return self.continue_prefixes(prompts, n, params, generator)


def make_sampler(policy: Policy, engine: str = "auto"):
    """``torch`` | ``vllm`` | ``auto`` (vLLM when CUDA and vLLM are present, else torch)."""
    if engine == "auto":
        engine = "vllm" if _vllm_available() else "torch"
    if engine == "torch":
        return TorchSampler(policy)
    if engine == "vllm":
        from .vllm_engine import VLLMSampler  # lazy: CUDA-only dependency

        if getattr(policy, "_vllm_sampler", None) is None:  # one engine per (fixed) policy
            policy._vllm_sampler = VLLMSampler(policy)
        return policy._vllm_sampler
    raise ValueError(f"unknown sampling engine {engine!r} (torch | vllm | auto)")


def _vllm_available() -> bool:
    import importlib.util

    return torch.cuda.is_available() and importlib.util.find_spec("vllm") is not None
