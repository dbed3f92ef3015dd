"""Sampler speed on the toy (batch 256), ratios against the naive way in the same run.

1. TorchSampler tokens/s vs ``model.generate(do_sample=True, top_k=0)`` (same prompts, same length cap).
2. Shared-prefix continuation: M=256 continuations of one 40-token prefix, encoding the prefix once and
   repeating its KV cache, vs re-encoding the prefix for every continuation.  Target >= 2x.
Usage: python benchmarks/sampling.py
"""

import time

import torch

from cancel_cli.config import load_policy
from cancel_cli.sampling import SamplingParams, TorchSampler
from cancel_cli.tasks.arithmetic import toy_problems


def main():
    torch.set_num_threads(2)
    pol = load_policy("toy")
    params = SamplingParams(1.0, 1.0, 64)
    prompts = [pol.encode(p.problem) for p in toy_problems(256, 0, split="bench")]


    def timed(fn, reps=3):
        best = float("inf")
        for _ in range(reps):
            t = time.perf_counter()
            out = fn()
            best = min(best, time.perf_counter() - t)
        return best, out


    def ours():
        outs = TorchSampler(pol).rollouts(prompts, 1, params, torch.Generator().manual_seed(0))
        return sum(len(o[0]) for o in outs)


    def hf():
        from cancel_cli.policy import left_pad

        ids, mask = left_pad(prompts, pol.pad_id)
        with torch.no_grad():
            out = pol.model.generate(input_ids=ids, attention_mask=mask, do_sample=True, top_k=0, top_p=1.0, temperature=1.0,
                                     max_new_tokens=64, pad_token_id=pol.pad_id, eos_token_id=pol.eos_id)
        gen = out[:, ids.shape[1]:]
        ended = (gen == pol.eos_id).cumsum(1)  # tokens up to and including the first EOS
        return int(((ended == 0) | ((ended == 1) & (gen == pol.eos_id))).sum())


    t_ours, n_ours = timed(ours)
    t_hf, n_hf = timed(hf)
    print(f"torch sampler : {n_ours / t_ours:10.0f} tokens/s ({n_ours} tokens in {t_ours:.2f} s)")
    print(f"HF generate   : {n_hf / t_hf:10.0f} tokens/s ({n_hf} tokens in {t_hf:.2f} s)")
    print(f"ratio (ours / generate, tokens/s): {(n_ours / t_ours) / (n_hf / t_hf):.2f}x")

    text = "Add 347+285.\nLet's add column by column. 7+5+0=12; 4+8+1=13; 3+2+1=6. " * 3
    s = TorchSampler(pol, max_rows=256)
    for L in (40, 160):  # the 40-token prefix, and a longer state (the saving grows with the prefix)
        prefix = pol.encode(text)[:L]
        p2 = SamplingParams(1.0, 1.0, 48)
        t_shared, _ = timed(lambda: s.continue_prefixes([prefix], 256, p2, torch.Generator().manual_seed(1)))
        t_naive, _ = timed(lambda: s.continue_prefixes([prefix] * 256, 1, p2, torch.Generator().manual_seed(1)))
        print(f"{L}-token prefix, M=256: shared (encode once) {t_shared:.3f} s; re-encode per continuation {t_naive:.3f} s; "
              f"speed-up {t_naive / t_shared:.2f}x (target >= 2x)")


if __name__ == "__main__":  # spawned reward workers import this file
    main()
