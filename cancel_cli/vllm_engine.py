"""vLLM rollout engine (optional extra ``cancel[gpu]``; CUDA only, imported lazily).

Same interface as ``TorchSampler``: ``continue_prefixes(prefixes, m, params, generator, budgets=...)`` and
``rollouts``.  Prefixes are passed as token ids (``TokensPrompt``), ``n = m`` samples per prefix with
``top_k = -1`` (no hidden top-k), and automatic prefix caching, so M continuations of one prefix and the
s / s+a pairs of mc-value share their KV cache.  The engine loads the policy's weights from its folder;
after a policy update the caller must build a new sampler (vLLM holds its own copy of the weights).
"""

from __future__ import annotations

import torch

from .errors import UserError


class VLLMSampler:
    def __init__(self, policy, gpu_memory_utilization: float = 0.5):
        if not torch.cuda.is_available():
            raise UserError("--engine vllm needs a CUDA GPU")
        try:
            from vllm import LLM
        except ImportError:
            raise UserError("--engine vllm needs vLLM: pip install 'cancel[gpu]'") from None
        path = getattr(policy.model, "name_or_path", None) or policy.model.config._name_or_path
        self.policy = policy
        self.llm = LLM(model=path, tokenizer=path, enable_prefix_caching=True, dtype="bfloat16",
                       gpu_memory_utilization=gpu_memory_utilization, seed=0)

    def continue_prefixes(self, prefixes, m, params, generator=None, budgets=None):
        """``params``: a ``sampling.SamplingParams`` (temperature, top_p, max_new_tokens)."""
        from vllm import SamplingParams as VSP
        from vllm.inputs import TokensPrompt

        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator)) if generator is not None else None
        budgets = budgets or [params.max_new_tokens] * len(prefixes)
        sps = [VSP(n=m, temperature=params.temperature, top_p=params.top_p, top_k=-1, max_tokens=b,
                   seed=None if seed is None else seed + i,
                   stop_token_ids=[self.policy.eos_id], skip_special_tokens=False)
               for i, b in enumerate(budgets)]
        outs = self.llm.generate([TokensPrompt(prompt_token_ids=list(p)) for p in prefixes], sps, use_tqdm=False)
        return [[list(c.token_ids) for c in o.outputs] for o in outs]

    def rollouts(self, prompts, n, params, generator=None):
        return self.continue_prefixes(prompts, n, params, generator)
