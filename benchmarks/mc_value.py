"""Monte-Carlo token values on the toy: speed of the continuation engine and power of the estimators.

Every line is a ratio against the naive way, measured in the same run (run it on an otherwise idle
machine; the numbers of the last run are in benchmarks/README.md).

Speed (issue: MC continuations at the speed of the hardware), on real mc-value states (positions of
sampled toy rollouts), M continuations per state, temperature 1, top-p 1, no top-k:
  1. continuation tokens/s of ``ContinuationEngine`` (one encode per rollout, continuous batching) vs
     per-state ``model.generate(top_k=0, num_return_sequences=M)`` (goal >= 3x) and vs the previous
     shared-prefix path ``TorchSampler.continue_prefixes``;
  2. decode roofline: engine tokens/s / tokens/s of a bare batched decode step of the same model at the
     same width and a cache of the same length, no bookkeeping (goal >= 0.7);
  3. M = 256 continuations of one 40-token prefix: engine (prefix encoded once) vs re-encoding the prefix
     for every continuation (a batched ``generate`` of 256 copies; goal >= 2x).
Power (issue: token values with low variance and honest errors):
  4. per-token variance of Delta_hat over independent repeats, eq20 / direct, on states with p > 0.9 at
     equal continuation budget (M per branch each; goal: median >= 50x);
  5. value-gap CI half-width scaled to one CPU-minute (half-width x sqrt(CPU minutes); the half-width
     shrinks as 1/sqrt(budget)), mc-value with the direct estimator vs with eq20, same config otherwise
     (goal: eq20 / direct >= 10x).
Usage: [THREADS=1] python benchmarks/mc_value.py [--quick]
"""

import os
import sys
import tempfile
import time

import numpy as np
import pandas as pd
import torch

from cancel_cli.analysis import value
from cancel_cli.analysis.value_estimate import token_values
from cancel_cli.config import load_policy
from cancel_cli.console import SETTINGS
from cancel_cli.continuation import ContinuationEngine, Job, stream_key
from cancel_cli.policy import left_pad
from cancel_cli.rollout import ProblemSource, RolloutConfig, sample_batch
from cancel_cli.sampling import SamplingParams, TorchSampler
from cancel_cli.store import Store


def main():
    QUICK = "--quick" in sys.argv
    torch.set_num_threads(int(os.environ.get("THREADS", "1")))  # 1: faster than 2 for toy decode on 2 cores
    SETTINGS.quiet = True
    pol = load_policy("toy")
    eos = pol.eos_id
    params = SamplingParams(1.0, 1.0, 96)
    WIDTH = 256
    M = 32 if QUICK else 64
    K = 8 if QUICK else 16  # states

    batch = sample_batch(pol, ProblemSource("toy", 3).take(K), RolloutConfig(prompts=K, n=1), torch.Generator().manual_seed(3))
    rng = np.random.default_rng(4)
    states = []  # (rollout, prefix length n, first token, budget)
    for i in range(K):
        prompt = batch.prompt_ids[i][batch.prompt_mask[i].bool()].tolist()
        resp = batch.response_ids[i][batch.response_mask[i].bool()].tolist()
        t = int(rng.integers(1, len(resp) - 1))
        states.append((i, prompt + resp, len(prompt) + t, resp[t], params.max_new_tokens - t - 1))
    print(f"{K} states, mean prefix {np.mean([n for _, _, n, _, _ in states]):.0f} tokens, M={M}, width {WIDTH}")


    def best_of(fn, reps=2):
        best, out = float("inf"), None
        for _ in range(reps):
            t = time.perf_counter()
            out = fn()
            best = min(best, time.perf_counter() - t)
        return best, out


    def engine_run(width=WIDTH):
        eng = ContinuationEngine(pol, width)
        for i, ids, n, _, _ in states:
            eng.encode(i, ids)
        jobs = [Job(i, n, o, b, stream_key("bench", i, j)) for i, _, n, o, b in states for j in range(M)]
        toks = []
        eng.run(jobs, params, lambda j, out: toks.append(len(out) - 1))
        return sum(toks), eng


    def sampler_run():
        prefixes = [ids[:n] + [o] for _, ids, n, o, _ in states]
        outs = TorchSampler(pol, max_rows=1024).continue_prefixes(prefixes, M, params, torch.Generator().manual_seed(0),
                                                                 budgets=[b for *_, b in states])
        return sum(len(c) for o in outs for c in o)


    def generate_run():
        n_tok = 0
        with torch.no_grad():
            for _, ids, n, o, b in states:
                x, mask = left_pad([ids[:n] + [o]], pol.pad_id)
                out = pol.model.generate(input_ids=x, attention_mask=mask, do_sample=True, top_k=0, top_p=1.0,
                                         temperature=1.0, max_new_tokens=b, num_return_sequences=M,
                                         pad_token_id=pol.pad_id, eos_token_id=eos)
                gen = out[:, x.shape[1]:]
                ended = (gen == eos).cumsum(1)
                n_tok += int(((ended == 0) | ((ended == 1) & (gen == eos))).sum())
        return n_tok


    t_eng, (tok_eng, eng) = best_of(engine_run)
    t_smp, tok_smp = best_of(sampler_run)
    t_gen, tok_gen = best_of(generate_run, 1)
    r_eng, r_smp, r_gen = tok_eng / t_eng, tok_smp / t_smp, tok_gen / t_gen
    print(f"1. continuation tokens/s: engine {r_eng:.0f}, shared-prefix sampler {r_smp:.0f}, generate(top_k=0) {r_gen:.0f}; "
          f"engine / generate {r_eng / r_gen:.2f}x (goal >= 3x), engine / sampler {r_eng / r_smp:.2f}x")


    @torch.no_grad()
    def bare_decode(width, cache_len, steps):
        """A batched decode step with a full static batch: no refills, no masks to rebuild, no sampling."""
        from transformers import DynamicCache

        ids = torch.randint(3, 20, (width, cache_len))
        cache = DynamicCache()
        pol.model(input_ids=ids, past_key_values=cache, use_cache=True)
        tok = torch.randint(3, 20, (width, 1))
        t = time.perf_counter()
        for s in range(steps):
            logits = pol.model(input_ids=tok, past_key_values=cache, use_cache=True).logits[:, -1]
            tok = logits.argmax(-1, keepdim=True)
        return width * steps / (time.perf_counter() - t)


    mean_len = int(np.mean([n for _, _, n, _, _ in states]) + 0.5 * np.mean([b for *_, b in states]) * 0.5)
    r_bare = bare_decode(WIDTH, mean_len, 24)
    print(f"2. decode roofline: bare decode at width {WIDTH}, cache ~{mean_len}: {r_bare:.0f} tokens/s; "
          f"engine / bare {r_eng / r_bare:.2f} (goal >= 0.7)")

    prefix = states[0][1][:40]
    M3 = 256


    def shared():
        e = ContinuationEngine(pol, WIDTH)
        e.encode(0, prefix)
        toks = []
        e.run([Job(0, 39, prefix[39], 56, stream_key("p40", j)) for j in range(M3)], params, lambda j, o: toks.append(len(o)))
        return sum(toks)


    def reencode():
        x, mask = left_pad([prefix] * M3, pol.pad_id)
        with torch.no_grad():
            out = pol.model.generate(input_ids=x, attention_mask=mask, do_sample=True, top_k=0, top_p=1.0, temperature=1.0,
                                     max_new_tokens=56, pad_token_id=pol.pad_id, eos_token_id=eos)
        gen = out[:, x.shape[1]:]
        ended = (gen == eos).cumsum(1)
        return int(((ended == 0) | ((ended == 1) & (gen == eos))).sum())


    t_sh, n_sh = best_of(shared)
    t_re, n_re = best_of(reencode)
    print(f"3. 40-token prefix, {M3} continuations: shared {n_sh / t_sh:.0f} tokens/s, re-encode {n_re / t_re:.0f} tokens/s; "
          f"{(n_sh / t_sh) / (n_re / t_re):.2f}x (goal >= 2x)")

    # -- 4. variance of the estimators on confident states ----------------------------------------------
    R = 6 if QUICK else 10
    big = sample_batch(pol, ProblemSource("toy", 5).take(16), RolloutConfig(prompts=16, n=8), torch.Generator().manual_seed(5))
    st = pol.token_stats(big.prompt_ids, big.prompt_mask, big.response_ids, big.response_mask, temperature=1.0)
    m = big.response_mask.bool()
    rows, pos = m.nonzero(as_tuple=True)
    p = st.logprob[m].exp().double().numpy()
    conf = np.flatnonzero((p > 0.9) & (p < 0.999))  # eq20 skips p > 0.999 by design; compare where both run
    pick = np.random.default_rng(6).choice(conf, size=min(16 if QUICK else 24, len(conf)), replace=False)
    toks = pd.DataFrame({"rollout": rows[pick].numpy(), "position": pos[pick].numpy()})
    est = {}
    for name in ("direct", "eq20"):
        reps = []
        for r in range(R):
            cfg = value.ValueConfig(prompts=16, n=8, M=M, seed=100 + r, estimator=name)
            reps.append(token_values(pol, big, toks, cfg, Store(tempfile.mkdtemp())).value.to_numpy())
        est[name] = np.vstack(reps)
    var = {k: v.var(0, ddof=1) for k, v in est.items()}
    ok = (var["eq20"] > 0) | (var["direct"] > 0)  # a state whose every continuation scores the same has no variance
    ratio = var["eq20"][ok] / np.maximum(var["direct"][ok], 1e-12)
    print(f"4. {len(toks)} states with 0.9 < p < 0.999 (median p {np.median(p[pick]):.4f}), {R} repeats at M={M} per "
          f"branch: variance eq20 / direct median {np.median(ratio):.0f}x, quartiles {np.percentile(ratio, 25):.0f}x-"
          f"{np.percentile(ratio, 75):.0f}x over {int(ok.sum())} states ({int((~ok).sum())} with no variance under either "
          f"estimator left out); mean per-token SD direct {np.sqrt(var['direct'][ok]).mean():.3f}, eq20 "
          f"{np.sqrt(var['eq20'][ok]).mean():.2f} (goal median >= 50x)")

    # -- 5. gap CI per CPU-minute ------------------------------------------------------------------------
    hw = {}
    for name in ("direct", "eq20"):
        cfg = value.ValueConfig(prompts=16, n=8, M=M, per_cell=8 if QUICK else 16, seed=0, estimator=name, device="cpu")
        c = time.process_time()
        _, sm = value.run(cfg, Store(tempfile.mkdtemp()))
        minutes = (time.process_time() - c) / 60
        half = 1.96 * sm.gap["all"]["se"]
        hw[name] = (half, minutes, half * np.sqrt(minutes), sm.per_cell)
        print(f"   mc-value --estimator {name}: {sm.per_cell} tokens/cell, gap CI half-width {half:.3f} in {minutes:.2f} CPU-min "
              f"-> {hw[name][2]:.3f} at one CPU-minute")
    print(f"5. gap CI half-width at equal CPU time, eq20 / direct: {hw['eq20'][2] / hw['direct'][2]:.1f}x (goal >= 10x)")


if __name__ == "__main__":  # the reward pool spawns processes that import this file
    main()
