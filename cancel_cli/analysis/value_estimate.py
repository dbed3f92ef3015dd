"""Monte-Carlo estimators of the counterfactual token value (Sec. 3.2, App. E.2)

    Delta(o_t | s_t) = Q(s_t, o_t) - Q_{-o_t}(s_t),   Q_{-o_t}(s) = E_{a ~ pi(.|s), a != o_t} Q(s, a)   (App. E.2)

Branch "a": M continuations from s_t + o_t, mean reward avg[0] (exact when o_t is EOS or the length budget
is spent: the reward of the response itself).  Second branch, by estimator:

- ``direct`` (default): M continuations from s_t + a, each with its own first token a drawn from
  pi(.|s_t) restricted to a != o_t and renormalised (under the run's temperature and top-p);
  Delta_hat = avg[0] - avg_cf.  Unbiased, no division by 1 - p, no skip rule, variance <= 0.5 / M.
- ``eq20`` (the paper): M continuations from s_t, mean avg[-1]; Delta_hat = (avg[0] - avg[-1]) / (1 - p)
  (Eq. 20); tokens with p > 1 - 1e-3 are skipped by the candidate selection (only for this estimator).

Standard errors: each branch's Bernoulli variance is estimated with the Jeffreys posterior mean
p~ = (k + 0.5) / (M + 1), var = p~ (1 - p~) / M, which is never 0 at k = 0 or k = M (the plug-in formula
is, and it under-covers at extreme rates); an exact branch contributes 0.  se(eq20) = sqrt(var_a + var_s)
/ (1 - p); se(direct) = sqrt(var_a + var_cf).

Continuations run on the continuation engine (one encode per rollout, continuous batching, one random
stream per (value key, branch, replicate)), so a token's value depends only on its cache key.  The engine
follows the run's sampling engine (``cfg.engine``, resolved by ``make_sampler``): torch's
``ContinuationEngine``, or on vLLM ``VLLMContinuationEngine`` on the policy's one vLLM engine (all jobs of a
chunk in one ``generate``, one seed per stream key, prefix caching; its hit rate lands in the table's
``attrs["prefix_cache_hit_rate"]``, None on torch).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from ..console import progress
from ..continuation import ContinuationEngine, Job, inverse_cdf, stream_key, uniforms
from ..sampling import filter_probs, make_sampler
from ..tasks.reward import score_batch
from .value_cache import ValueCache, value_key

ESTIMATORS = ("direct", "eq20")
SKIP_P = 1 - 1e-3  # eq20 only


def jeffreys_var(k, m):
    """Variance of a Bernoulli mean of k successes in m draws, Jeffreys p~ = (k + 1/2) / (m + 1); 0 if m == 0
    (an exact branch)."""
    k, m = np.asarray(k, dtype=float), np.asarray(m, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        pt = (k + 0.5) / (m + 1)
        return np.where(m > 0, pt * (1 - pt) / np.maximum(m, 1), 0.0)


def estimate(estimator: str, q_a, k_a, m_a, q_b, k_b, m_b, p):
    """Delta_hat and its standard error, vectorised over tokens (branch b = cf for direct, s for eq20)."""
    var = jeffreys_var(k_a, m_a) + jeffreys_var(k_b, m_b)
    q_a, q_b, p = np.asarray(q_a, float), np.asarray(q_b, float), np.asarray(p, float)
    if estimator == "direct":
        return q_a - q_b, np.sqrt(var)
    if estimator == "eq20":
        return (q_a - q_b) / (1 - p), np.sqrt(var) / (1 - p)  # Eq. 20
    raise ValueError(f"unknown estimator {estimator!r}")


@torch.no_grad()
def sampling_probs(policy, batch, temperature: float, top_p: float) -> torch.Tensor:
    """[B, L] probability of each response token under the sampling distribution (softmax(z / T), top-p)."""
    out = []
    for s in range(0, len(batch), 64):
        sl = slice(s, s + 64)
        h = policy.hidden_states(batch.prompt_ids[sl], batch.prompt_mask[sl], batch.response_ids[sl], batch.response_mask[sl])
        probs = filter_probs(policy.lm_head(h), temperature, top_p)
        out.append(probs.gather(-1, batch.response_ids[sl, :, None].to(probs.device)).squeeze(-1).double().cpu())
    return torch.cat(out)


def score_unique(texts: list[str], answers: list[str], reward_fn=None) -> list[float]:
    """Rewards, scoring each distinct (text, answer) once (MC continuations repeat a lot)."""
    reward_fn = reward_fn or score_batch
    uniq = list(dict.fromkeys(zip(texts, answers)))
    got = dict(zip(uniq, reward_fn([t for t, _ in uniq], [a for _, a in uniq]))) if uniq else {}
    return [got[(t, a)] for t, a in zip(texts, answers)]


def continuation_engine(policy, cfg):
    """The continuation engine of the run's sampling engine (``cfg.engine``: torch | vllm | auto, as
    ``make_sampler`` resolves it): vLLM's on the policy's vLLM engine, else torch's."""
    llm = getattr(make_sampler(policy, getattr(cfg, "engine", "torch")), "llm", None)
    if llm is None:
        return ContinuationEngine(policy, cfg.decode_width)
    from ..vllm_engine import VLLMContinuationEngine  # lazy: CUDA-only dependency

    return VLLMContinuationEngine(policy, llm)


def token_values(policy, batch, tokens: pd.DataFrame, cfg, store, run=None, table: str = "values",
                 desc: str = "mc-value", reward_fn=None, engine=None) -> pd.DataFrame:
    """Values of the (rollout, position) rows of ``tokens`` through the store-wide cache; with ``run``, written as
    resumable parts of ``table`` (``cfg.chunk`` tokens per part)."""
    cache = ValueCache(store)
    made = {"engine": engine}

    def get_engine():  # built at the first token to compute (a fully cached run starts no vLLM engine)
        if made["engine"] is None:
            made["engine"] = continuation_engine(policy, cfg)
        return made["engine"]

    chunks = [tokens.iloc[s : s + cfg.chunk] for s in range(0, len(tokens), cfg.chunk)]
    done = run.done_parts(table) if run is not None else set()
    out = [run.read_table_part(table, i) for i in sorted(done)] if run is not None else []
    with progress(desc, len(chunks)) as advance:
        advance(len(done))
        for ci, ch in enumerate(chunks):
            if ci in done:
                continue
            out.append(_value_chunk(policy, batch, ch, cfg, cache, get_engine, reward_fn))
            if run is not None:
                run.write_part(table, ci, out[-1])
            advance()
    cols = ["q_a", "k_a", "m_a", "q_b", "k_b", "m_b", "p_sampling", "value", "se", "cached"]
    df = pd.concat(out, ignore_index=True) if out else tokens.iloc[:0].assign(**{c: [] for c in cols})
    df.attrs["cache_hit_rate"] = cache.hit_rate
    df.attrs["prefix_cache_hit_rate"] = getattr(made["engine"], "prefix_cache_hit_rate", None)  # vLLM only
    return df


def _tokens_of(batch, r: int) -> tuple[list[int], list[int]]:
    return (batch.prompt_ids[r][batch.prompt_mask[r].bool()].tolist(),
            batch.response_ids[r][batch.response_mask[r].bool()].tolist())


def _value_chunk(policy, batch, ch, cfg, cache, get_engine, reward_fn) -> pd.DataFrame:
    params, M = cfg.sampling, cfg.M
    items = []  # per token: rollout, t, prompt, resp, key, cached entry
    for r, t in zip(ch.rollout.astype(int), ch.position.astype(int)):
        prompt, resp = _tokens_of(batch, r)
        key = value_key(policy.weights_hash, prompt + resp[:t], resp[t], M, params.temperature, params.top_p,
                        params.max_new_tokens, cfg.seed, cfg.estimator)
        items.append({"r": r, "t": t, "prompt": prompt, "resp": resp, "key": key, "hit": cache.get(key)})
    todo = [it for it in items if it["hit"] is None]
    if todo:
        _compute(policy, batch, todo, cfg, get_engine(), reward_fn)
        cache.put([it["hit"] for it in todo])
    out = ch.copy()
    for c in ("q_a", "k_a", "m_a", "q_b", "k_b", "m_b", "p_sampling"):
        out[c] = [it["hit"][c] for it in items]
    v, se = estimate(cfg.estimator, out.q_a, out.k_a, out.m_a, out.q_b, out.k_b, out.m_b, out.p_sampling)
    out["value"], out["se"] = v, se
    out["cached"] = [all(it is not x for x in todo) for it in items]
    out["estimator"] = cfg.estimator
    return out


def _compute(policy, batch, todo, cfg, engine, reward_fn) -> None:
    """Fill ``it["hit"]`` (the cache entry) for every token of ``todo``."""
    params, M, eos = cfg.sampling, cfg.M, policy.eos_id
    by_rollout: dict[int, list[dict]] = {}
    for it in todo:
        by_rollout.setdefault(it["r"], []).append(it)
    owners, texts, answers = [], [], []  # one per job, in job order
    jobs = []
    for r, its in by_rollout.items():
        prompt, resp = its[0]["prompt"], its[0]["resp"]
        P = len(prompt)
        logits = engine.encode(r, prompt + resp, [P + it["t"] for it in its])  # one encode per rollout
        for it in its:
            t, o = it["t"], resp[it["t"]]
            probs = filter_probs(logits[P + t][None], params.temperature or 1.0, params.top_p)[0]
            it["p_sampling"] = float(probs[o])
            rest = params.max_new_tokens - t - 1  # tokens allowed after the first continuation token
            it["exact_a"] = o == eos or rest <= 0
            if not it["exact_a"]:
                jobs += [Job(r, P + t, o, rest, stream_key(it["key"], "a", j)) for j in range(M)]
                owners += [(id(it), "a")] * M
            alt = probs.clone()
            if cfg.estimator == "direct":
                alt[o] = 0.0  # pi(.|s, a != o_t), renormalised by the inverse CDF
            it["alt_mass"] = float(alt.sum())
            if it["alt_mass"] <= 0:  # o_t has all the mass: Q_{-o_t} is undefined
                continue
            ks = [stream_key(it["key"], "b", j) for j in range(M)]
            first = inverse_cdf(alt[None].expand(M, -1), uniforms(ks, np.zeros(M))).tolist()
            jobs += [Job(r, P + t, a, rest, k) for a, k in zip(first, ks)]
            owners += [(id(it), "b")] * M
    done: dict[int, list[int]] = {}
    engine.run(jobs, params, lambda j, toks: done.__setitem__(j, toks))
    for r in by_rollout:
        engine.release(r)
    its = {id(it): it for it in todo}
    for j, (iid, _) in enumerate(owners):
        it = its[iid]
        texts.append(policy.decode(it["resp"][: it["t"]] + done[j]))
        answers.append(batch.answers[it["r"]])
    exact = [it for it in todo if it["exact_a"]]  # Q(s, o_t) is the reward of the response itself
    texts += [policy.decode(it["resp"][: it["t"] + 1]) for it in exact]
    answers += [batch.answers[it["r"]] for it in exact]
    rewards = score_unique(texts, answers, reward_fn)
    acc: dict = {}
    for (iid, br), rw in zip(owners, rewards):
        acc.setdefault((iid, br), []).append(rw)
    for it, rw in zip(exact, rewards[len(owners):]):
        acc[(id(it), "a")] = [rw]
    for it in todo:
        a, b = acc[(id(it), "a")], acc.get((id(it), "b"), [])
        it["hit"] = {"key": it["key"], "q_a": float(np.mean(a)), "k_a": float(np.sum(a)), "m_a": 0 if it["exact_a"] else M,
                     "q_b": float(np.mean(b)) if b else float("nan"), "k_b": float(np.sum(b)), "m_b": len(b),
                     "p_sampling": it["p_sampling"], "estimator": cfg.estimator, "M": M}
