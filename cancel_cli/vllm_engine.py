"""vLLM rollout engine (optional extra ``cancel[gpu]``; CUDA only, imported lazily).

Same interface as ``TorchSampler``: ``continue_prefixes(prefixes, m, params, generator, budgets=...)`` and
``rollouts``.  Prefixes are passed as token ids (``TokensPrompt``), ``n = m`` samples per prefix with
``top_k = -1`` (no hidden top-k), and automatic prefix caching, so M continuations of one prefix and the
s / s+a pairs of mc-value share their KV cache.  The engine loads the policy's weights from its folder;
after a policy update the caller must build a new sampler (vLLM holds its own copy of the weights);
``close()`` shuts the engine down and frees its GPU memory.

Randomness: by default requests carry no seed, so vLLM samples the whole batch with its fast batched
sampler from the engine's RNG (seeded once, ``seed``); every request and every copy draws from that one
stream, so no two rows share random numbers.  ``seeded=True`` gives each call exact per-request seeds
instead (vLLM's per-row sampler, slower): vLLM seeds copy j of a request with seed + j, so prompt i gets
seed ``base + i * m`` and its m copies ``base + i * m + j`` -- one distinct stream per (prompt, copy).
"""

from __future__ import annotations

import torch

from .errors import UserError


class VLLMSampler:
    def __init__(self, policy, gpu_memory_utilization: float = 0.5, seed: int = 0, seeded: bool = False):
        if not torch.cuda.is_available():
            raise UserError("--engine vllm needs a CUDA GPU")
        try:
            from vllm import LLM
        except ImportError:
            raise UserError("--engine vllm needs vLLM: pip install 'cancel[gpu]'") from None
        path = getattr(policy.model, "name_or_path", None) or policy.model.config._name_or_path
        self.policy, self.seeded = policy, seeded
        self.llm = LLM(model=path, tokenizer=path, enable_prefix_caching=True, dtype="bfloat16",
                       gpu_memory_utilization=gpu_memory_utilization, seed=seed)

    def continue_prefixes(self, prefixes, m, params, generator=None, budgets=None):
        """``params``: a ``sampling.SamplingParams`` (temperature, top_p, max_new_tokens)."""
        from vllm import SamplingParams as VSP
        from vllm.inputs import TokensPrompt

        budgets = budgets or [params.max_new_tokens] * len(prefixes)
        seeds = request_seeds(len(prefixes), m, generator) if self.seeded else [None] * len(prefixes)
        sps = [VSP(n=m, temperature=params.temperature, top_p=params.top_p, top_k=-1, max_tokens=b,
                   seed=seeds[i],
                   stop_token_ids=[self.policy.eos_id], skip_special_tokens=False)
               for i, b in enumerate(budgets)]
        outs = self.llm.generate([TokensPrompt(prompt_token_ids=list(p)) for p in prefixes], sps, use_tqdm=False)
        return [[list(c.token_ids) for c in o.outputs] for o in outs]

    def rollouts(self, prompts, n, params, generator=None):
        return self.continue_prefixes(prompts, n, params, generator)

    def close(self) -> None:
        """Shut the engine down (its worker processes and GPU memory); the sampler is unusable afterwards."""
        import gc

        llm, self.llm = getattr(self, "llm", None), None
        if llm is None:
            return
        engine = getattr(llm, "llm_engine", None)
        for obj in (getattr(engine, "engine_core", None), engine, llm):
            if obj is not None and callable(getattr(obj, "shutdown", None)):
                obj.shutdown()
                break
        del llm, engine
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def request_seeds(prompts: int, m: int, generator=None) -> list[int]:
    """Per-request seeds whose vLLM copy streams (seed + j, j < m) never overlap within a call."""
    base = int(torch.randint(0, 2**31 - 1 - prompts * m, (1,), generator=generator))
    return [base + i * m for i in range(prompts)]
