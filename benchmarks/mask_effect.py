"""Masking effect, LM-head path: the closed form for all candidates at once vs brute force (copy the
policy, SGD step on the masked loss, forward), 256 candidates, with the max abs difference.
Target >= 300x, max diff <= 1e-5.  Also the cost of the signed Boost Rate (sum_M A per candidate and the
Table 1 statistics) as a share of the closed-form path, the cheapest part of a run (target < 5%).
Usage: python benchmarks/mask_effect.py [candidates]
"""

import sys
import time

import torch

from cancel_cli.analysis.common import flat_tokens
from cancel_cli.analysis.masked_update import boost_stats, head_closed_form
from cancel_cli.rollout import ProblemSource, RolloutConfig, sample_batch
from cancel_cli.config import load_policy
from cancel_cli.grpo.update import OptimConfig, grpo_update


def main():
    torch.set_num_threads(2)
    C = int(sys.argv[1]) if len(sys.argv) > 1 else 256
    eta, m = 0.1, 8
    pol = load_policy("toy")
    batch = sample_batch(pol, ProblemSource("toy", 0).take(8), RolloutConfig(prompts=8), torch.Generator().manual_seed(0))
    ft = flat_tokens(pol, batch)
    N = int(batch.response_mask.sum())
    g = torch.Generator().manual_seed(0)
    cand = torch.randperm(len(ft), generator=g)[:C]
    masks = torch.stack([torch.randperm(len(ft), generator=g)[:m] for _ in range(C)])
    masks = torch.where(masks == cand[:, None], (masks + 1) % len(ft), masks)
    W = pol.lm_head.weight.detach().float()

    t = time.perf_counter()
    new = grpo_update(pol, batch, None, OptimConfig("sgd", eta, params="head"))
    closed = head_closed_form(new.lm_head.weight.detach().float(), ft.hidden, ft.token, ft.advantage,
                              lambda idx: torch.softmax(ft.hidden[idx] @ W.T, -1), cand, masks, eta, N)
    t_closed = time.perf_counter() - t

    t = time.perf_counter()
    brute = []
    for i, c in enumerate(cand.tolist()):
        lm = torch.ones_like(batch.response_mask)
        lm[ft.rollout[masks[i]], ft.position[masks[i]]] = 0
        masked = grpo_update(pol, batch, None, OptimConfig("sgd", eta, params="head"), loss_mask=lm)
        r = ft.rollout[c].item()
        sl = slice(r, r + 1)
        lp_m = masked.token_stats(batch.prompt_ids[sl], batch.prompt_mask[sl], batch.response_ids[sl], batch.response_mask[sl],
                                  with_entropy=False).logprob[0, ft.position[c]]
        lp = new.token_stats(batch.prompt_ids[sl], batch.prompt_mask[sl], batch.response_ids[sl], batch.response_mask[sl],
                             with_entropy=False).logprob[0, ft.position[c]]
        brute.append(float(lp - lp_m))
    t_brute = time.perf_counter() - t
    diff = (closed - torch.tensor(brute, dtype=torch.float64)).abs().max().item()
    print(f"{C} candidates: closed form {t_closed:.3f} s, brute force {t_brute:.1f} s, speed-up {t_brute / t_closed:.0f}x "
          f"(target >= 300x); max |closed - brute| = {diff:.2e} (target <= 1e-5)")

    t = time.perf_counter()
    for _ in range(10):
        stats = boost_stats(closed.numpy(), ft.advantage[masks].double().sum(1).numpy())
    t_signed = (time.perf_counter() - t) / 10
    print(f"signed Boost Rate + P(sum A>0) + Boost Rate/Mean Boost: {t_signed * 1e3:.2f} ms = "
          f"{100 * t_signed / t_closed:.2f}% of the closed-form path (target < 5%); signed BR {stats['signed_boost_rate']:.1f}%")


if __name__ == "__main__":  # spawned reward workers import this file
    main()
