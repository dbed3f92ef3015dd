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

``VLLMContinuationEngine``: ``continuation.ContinuationEngine``'s interface (``encode`` / ``run`` /
``release``) for Monte-Carlo token values on the sampler's engine: every job of a ``run`` is one request
(n = 1) in a single ``generate`` call, seeded from the job's stream key (``job_seed``), so prefix caching
shares s_t between the M continuations of both branches and a job's stream depends on its key only.  The
engine is built with ``disable_log_stats=False`` so that ``prefix_cache_counts`` can read vLLM's
prefix-cache counters.
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
                       gpu_memory_utilization=gpu_memory_utilization, seed=seed,
                       disable_log_stats=False)  # LLM.get_metrics() (prefix-cache hit rate) needs stats

    def continue_prefixes(self, prefixes, m, params, generator=None, budgets=None):
        """``params``: a ``sampling.SamplingParams`` (temperature, top_p, max_new_tokens)."""
        budgets = budgets or [params.max_new_tokens] * len(prefixes)
        seeds = request_seeds(len(prefixes), m, generator) if self.seeded else [None] * len(prefixes)
        outs = _generate(self.llm, prefixes, [request_params(params, self.policy.eos_id, m, b, seeds[i])
                                              for i, b in enumerate(budgets)])
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


def request_params(params, eos: int, n: int, max_tokens: int, seed: int | None):
    """vLLM ``SamplingParams`` of one request: the run's temperature and top-p, ``top_k = -1`` (no hidden
    top-k), stop at the policy's EOS (kept in ``token_ids``)."""
    from vllm import SamplingParams as VSP

    return VSP(n=n, temperature=params.temperature, top_p=params.top_p, top_k=-1, max_tokens=max_tokens, seed=seed,
               stop_token_ids=[eos], skip_special_tokens=False)


def _generate(llm, prefixes, sps):
    """One ``LLM.generate`` call: token-id prompts, one ``SamplingParams`` each; outputs in prompt order."""
    from vllm.inputs import TokensPrompt

    return llm.generate([TokensPrompt(prompt_token_ids=list(p)) for p in prefixes], sps, use_tqdm=False)


def job_seed(key: int) -> int:
    """vLLM seed of a continuation job: its 64-bit stream key (``continuation.stream_key`` of value key, branch,
    replicate) folded into int64's non-negative range, where vLLM keeps request seeds.  With n = 1 vLLM uses
    the seed itself (no ``seed + j`` copies), so distinct keys give distinct streams (up to a 2**-63 collision)."""
    return int(key) & (2**63 - 1)


PREFIX_CACHE_HITS = "vllm:prefix_cache_hits"  # Counters of vllm/v1/metrics/loggers.py (PrometheusStatLogger),
PREFIX_CACHE_QUERIES = "vllm:prefix_cache_queries"  # in tokens; read back by vllm/v1/metrics/reader.py


def prefix_cache_counts(llm) -> tuple[int, int] | None:
    """(hits, queries) of vLLM's prefix cache since the process started, in tokens, summed over engines;
    None when the engine keeps no stats (built with ``disable_log_stats=True``) or exposes no such counter."""
    get = getattr(llm, "get_metrics", None)
    if get is None:
        return None
    try:
        metrics = get()
    except AssertionError:  # vLLM: "Stat logging disabled"
        return None
    tot: dict[str, int] = {}
    for m in metrics:
        if m.name in (PREFIX_CACHE_HITS, PREFIX_CACHE_QUERIES):
            tot[m.name] = tot.get(m.name, 0) + int(m.value)
    if len(tot) < 2:
        return None
    return tot[PREFIX_CACHE_HITS], tot[PREFIX_CACHE_QUERIES]


class VLLMContinuationEngine:
    """Monte-Carlo continuations on vLLM, with ``continuation.ContinuationEngine``'s interface and job meaning:
    job ``(source, length, first, budget, key)`` continues ``ids[:length] + [first]`` of the encoded rollout
    ``source`` with up to ``budget`` sampled tokens, and ``on_done(job_index, [first] + sampled)`` gets them
    (ending with EOS when one was sampled); a job whose ``first`` is EOS or whose budget is 0 is done without
    a request.  ``encode`` takes the first-token distribution from the policy's HF forward (one per rollout);
    the continuations run on ``llm`` (the sampler's engine, prefix caching on).  ``prefix_cache_hit_rate``:
    hits / queries of vLLM's prefix cache since this engine was built (None without stats or queries)."""

    def __init__(self, policy, llm):
        self.policy, self.llm = policy, llm
        self.ids: dict[int, list[int]] = {}
        self._base = prefix_cache_counts(llm)

    @torch.no_grad()
    def encode(self, source: int, ids: list[int], positions=()) -> dict[int, torch.Tensor]:
        """Keep ``ids`` under ``source``; return the next-token logits (fp64) at each requested prefix length n."""
        self.ids[source] = list(ids)
        positions = list(positions)
        if not positions:
            return {}
        dev = self.policy.device
        keep = torch.tensor([n - 1 for n in positions], device=dev)  # logits of those rows only
        logits = self.policy.model(input_ids=torch.tensor([ids], device=dev), use_cache=False,
                                   logits_to_keep=keep).logits[0]
        return {n: logits[i].double() for i, n in enumerate(positions)}

    def release(self, source: int) -> None:
        self.ids.pop(source, None)

    def run(self, jobs, params, on_done) -> None:
        """All jobs in one ``generate`` call, one request each, seeded by ``job_seed(job.key)``."""
        eos = self.policy.eos_id
        todo = []
        for j, job in enumerate(jobs):
            if job.first == eos or job.budget <= 0:
                on_done(j, [job.first])  # finished before any decode step
            else:
                todo.append((j, job))
        if not todo:
            return
        prompts = [self.ids[job.source][: job.length] + [job.first] for _, job in todo]
        outs = _generate(self.llm, prompts, [request_params(params, eos, 1, job.budget, job_seed(job.key))
                                             for _, job in todo])
        for (j, job), out in zip(todo, outs, strict=True):
            on_done(j, [job.first] + list(out.outputs[0].token_ids))

    @property
    def prefix_cache_hit_rate(self) -> float | None:
        now = prefix_cache_counts(self.llm)
        if now is None or self._base is None:
            return None
        hits, queries = now[0] - self._base[0], now[1] - self._base[1]
        return hits / queries if queries > 0 and hits >= 0 else None  # counters reset: no rate
