"""``cancel coupling`` (Fig. 2): the output-layer proxy of the coupling kernel on one batch, and how
well it tracks the exact full-parameter kernel.

Pairs: all ordered pairs j != k among the batch's response tokens, or, when there are more than
``max_tokens`` tokens, among a uniform random subset of ``max_tokens`` tokens (pair sampling for large N;
every statistic is then an unbiased estimate over pairs).  Aggregates over all those pairs are exact
sums computed blockwise; ``pairs`` random pairs are also stored for histograms.

Exact kernel: per-token gradients of log pi(o_t | s_t) w.r.t. all parameters for ``exact_tokens``
tokens (autograd, one backward per token), or, above ``sketch_above`` parameters, a Johnson-
Lindenstrauss sketch <P g_j, P g_k> / k with a seeded Gaussian P of ``sketch_dim`` rows generated
block by block (never materialised).  The proxy's quality is reported as the Pearson / Spearman
correlation of proxy vs exact over off-diagonal pairs, and the share of the exact kernel that the LM
head carries.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from ..config import check_positive
from ..console import print_table
from ..summary import Summary
from ..rollout import RolloutConfig, experiment_run, setup
from .common import batch_for, flat_tokens
from .kernel import contribution, kernel_blocks, proxy_kernel


@dataclass
class CouplingSummary(Summary):
    SCHEMA = 1
    tokens: int
    tokens_used: int
    same_mean_hh: float
    diff_mean_hh: float
    same_mean_phi: float
    diff_mean_phi: float
    same_abs_contribution: float  # mean |A_k <h_j,h_k> phi_jk| over same-token pairs (Eq. 9)
    diff_abs_contribution: float
    contribution_high_high: float  # ... over pairs in the highest entropy bin (both tokens)
    contribution_low_low: float
    pearson_proxy_exact: float
    spearman_proxy_exact: float
    exact_kernel: str  # exact | sketch
    exact_tokens: int
    max_abs_head_minus_proxy: float  # NaN with a sketched kernel
    head_share_of_kernel_norm: float


@dataclass
class CouplingConfig(RolloutConfig):
    prompts: int = 8
    pairs: int = 200_000  # stored random pairs (histograms)
    max_tokens: int = 4096  # pair sampling above this many tokens
    entropy_bins: int = 5
    exact_tokens: int = 64
    sketch_above: int = 50_000_000
    sketch_dim: int = 4096
    from_batch: str = ""


def per_token_gradients(policy, batch, ft, idx: torch.Tensor, sketch_dim: int | None = None, seed: int = 0):
    """[len(idx), D] gradients of log pi(o_j | s_j) (D = #params, or sketch_dim with a JL sketch)."""
    params = [p for p in policy.model.parameters()]
    for p in params:
        p.requires_grad_(True)
    rows = []
    for r in ft.rollout[idx].unique().tolist():
        sel = idx[ft.rollout[idx] == r]
        st = policy.token_stats(batch.prompt_ids[r : r + 1], batch.prompt_mask[r : r + 1], batch.response_ids[r : r + 1],
                                batch.response_mask[r : r + 1], with_entropy=False, grad=True)
        for j in sel.tolist():
            g = torch.autograd.grad(st.logprob[0, ft.position[j]], params, retain_graph=True)
            rows.append((j, _flatten_or_sketch(g, sketch_dim, seed)))
    for p in params:
        p.requires_grad_(False)
    order = {j: i for i, j in enumerate(idx.tolist())}
    out = torch.stack([v for _, v in sorted(rows, key=lambda x: order[x[0]])])
    return out


def _flatten_or_sketch(grads, sketch_dim, seed):
    if sketch_dim is None:
        return torch.cat([g.reshape(-1) for g in grads]).double()
    gen = torch.Generator().manual_seed(seed)
    acc = torch.zeros(sketch_dim, dtype=torch.float64)
    for g in grads:  # P = [P_1 ... P_L] generated per tensor and block, same seed for every token
        flat = g.reshape(-1).double().cpu()
        for s in range(0, len(flat), 1 << 16):
            blk = flat[s : s + (1 << 16)]
            acc += torch.randn(sketch_dim, len(blk), generator=gen, dtype=torch.float64) @ blk
    return acc / sketch_dim**0.5


def head_share(policy, grads_full: torch.Tensor) -> slice:
    """Slice of the flattened parameter vector that belongs to the LM head weight."""
    start = 0
    for p in policy.model.parameters():
        if p is policy.lm_head.weight:
            return slice(start, start + p.numel())
        start += p.numel()
    raise RuntimeError("LM head not found among parameters")


def run(cfg: CouplingConfig, store):
    check_positive(pairs=cfg.pairs, max_tokens=cfg.max_tokens, exact_tokens=cfg.exact_tokens, entropy_bins=cfg.entropy_bins)
    policy = setup(cfg)
    gen = torch.Generator().manual_seed(cfg.seed)
    with experiment_run(store, "coupling", cfg, policy) as run:
        batch = batch_for(cfg, policy, store, gen)
        run.write_table("batch", batch.to_frame())
        ft = flat_tokens(policy, batch, cfg.temperature)
        W = policy.lm_head.weight.detach().float()
        N = len(ft)
        sub = torch.randperm(N, generator=gen)[: cfg.max_tokens].sort().values if N > cfg.max_tokens else torch.arange(N)
        h, o, A, ent = ft.hidden[sub], ft.token[sub], ft.advantage[sub].float(), ft.entropy[sub]
        edges = torch.quantile(ent, torch.linspace(0, 1, cfg.entropy_bins + 1)[1:-1])
        ebin = torch.bucketize(ent, edges)
        B = cfg.entropy_bins
        agg = {k: torch.zeros(2, dtype=torch.float64) for k in ("n", "hh", "hh2", "phi", "phi2", "phi_nz", "contrib_abs")}
        heat = {k: torch.zeros(B, B, dtype=torch.float64) for k in ("n", "abs", "signed")}
        n = len(o)
        pair_j = torch.randint(0, n, (cfg.pairs,), generator=gen)
        pair_k = torch.randint(0, n - 1, (cfg.pairs,), generator=gen)
        pair_k = pair_k + (pair_k >= pair_j)  # j != k
        sampled = {"hh": torch.empty(cfg.pairs), "phi": torch.empty(cfg.pairs)}
        for J, K, hh, phi in kernel_blocks(W, h, o, 1024, cfg.temperature):
            same = o[J][:, None] == o[K][None, :]
            offdiag = torch.ones_like(same)
            if J == K:
                offdiag.fill_diagonal_(False)
            contrib = contribution(hh, phi, A[K][None, :], cfg.temperature)  # A_k <h_j,h_k> phi_jk (Eq. 9)
            for s, mask in ((1, same & offdiag), (0, ~same & offdiag)):
                agg["n"][s] += mask.sum()
                agg["hh"][s] += hh[mask].double().sum()
                agg["hh2"][s] += (hh[mask].double() ** 2).sum()
                agg["phi"][s] += phi[mask].double().sum()
                agg["phi2"][s] += (phi[mask].double() ** 2).sum()
                agg["phi_nz"][s] += (phi[mask].abs() > 1e-3).sum()
                agg["contrib_abs"][s] += contrib[mask].abs().double().sum()
            bj, bk = ebin[J][:, None].expand_as(hh), ebin[K][None, :].expand_as(hh)
            flat = (bj * B + bk)[offdiag]
            heat["n"] += torch.bincount(flat, minlength=B * B).reshape(B, B).double()
            heat["abs"] += torch.bincount(flat, weights=contrib[offdiag].abs().double(), minlength=B * B).reshape(B, B)
            heat["signed"] += torch.bincount(flat, weights=contrib[offdiag].double(), minlength=B * B).reshape(B, B)
            inb = (pair_j >= J.start) & (pair_j < J.stop) & (pair_k >= K.start) & (pair_k < K.stop)
            sampled["hh"][inb] = hh[pair_j[inb] - J.start, pair_k[inb] - K.start]
            sampled["phi"][inb] = phi[pair_j[inb] - J.start, pair_k[inb] - K.start]
        pairs = pd.DataFrame({"j": sub[pair_j].numpy(), "k": sub[pair_k].numpy(), "same_token": (o[pair_j] == o[pair_k]).numpy(),
                              "hh": sampled["hh"].numpy(), "phi": sampled["phi"].numpy(), "A_k": A[pair_k].numpy(),
                              "entropy_j": ent[pair_j].numpy(), "entropy_k": ent[pair_k].numpy()})
        pairs["contribution"] = contribution(pairs.hh, pairs.phi, pairs.A_k, cfg.temperature)
        run.write_table("pairs", pairs)
        stats = []
        for s, name in ((1, "same"), (0, "different")):
            c = max(agg["n"][s].item(), 1)
            stats.append({"pairs": name, "count": int(agg["n"][s]), "mean_hh": agg["hh"][s].item() / c,
                          "sd_hh": (agg["hh2"][s].item() / c - (agg["hh"][s].item() / c) ** 2) ** 0.5,
                          "mean_phi": agg["phi"][s].item() / c,
                          "sd_phi": max(agg["phi2"][s].item() / c - (agg["phi"][s].item() / c) ** 2, 0) ** 0.5,
                          "share_phi_gt_1e-3": agg["phi_nz"][s].item() / c, "mean_abs_contribution": agg["contrib_abs"][s].item() / c})
        run.write_table("pair_stats", pd.DataFrame(stats))
        centers = [float(ent[ebin == b].mean()) for b in range(B)]
        heat_rows = [{"bin_j": a, "bin_k": b, "entropy_j": centers[a], "entropy_k": centers[b], "pairs": int(heat["n"][a, b]),
                      "mean_abs_contribution": float(heat["abs"][a, b] / heat["n"][a, b].clamp(min=1)),
                      "mean_contribution": float(heat["signed"][a, b] / heat["n"][a, b].clamp(min=1))}
                     for a in range(B) for b in range(B)]
        run.write_table("entropy_bins", pd.DataFrame(heat_rows))
        exact = exact_vs_proxy(policy, batch, ft, cfg, gen)
        run.write_table("exact_pairs", exact["pairs"])
        same, diff = stats
        hm = pd.DataFrame(heat_rows)
        summary = CouplingSummary(
            tokens=N, tokens_used=n, same_mean_hh=same["mean_hh"], diff_mean_hh=diff["mean_hh"],
            same_mean_phi=same["mean_phi"], diff_mean_phi=diff["mean_phi"], same_abs_contribution=same["mean_abs_contribution"],
            diff_abs_contribution=diff["mean_abs_contribution"],
            contribution_high_high=float(hm[(hm.bin_j == B - 1) & (hm.bin_k == B - 1)].mean_abs_contribution.iloc[0]),
            contribution_low_low=float(hm[(hm.bin_j == 0) & (hm.bin_k == 0)].mean_abs_contribution.iloc[0]), **exact["summary"])
        print_table("coupling: same vs different token pairs", stats)
        run.finish(summary)
    return run, summary


def exact_vs_proxy(policy, batch, ft, cfg: CouplingConfig, gen) -> dict:
    """Exact full-parameter kernel <g_j, g_k> on a token sample vs the output-layer proxy."""
    N = len(ft)
    idx = torch.randperm(N, generator=gen)[: min(cfg.exact_tokens, N)].sort().values
    n_params = sum(p.numel() for p in policy.model.parameters())
    sketch = cfg.sketch_dim if n_params > cfg.sketch_above else None
    G = per_token_gradients(policy, batch, ft, idx, sketch, cfg.seed)
    exact = G @ G.T
    W = policy.lm_head.weight.detach().float()
    proxy = proxy_kernel(W, ft.hidden[idx], ft.token[idx], cfg.temperature).double()
    iu = torch.triu_indices(len(idx), len(idx), 1)
    e, p = exact[iu[0], iu[1]].numpy(), proxy[iu[0], iu[1]].numpy()
    same = (ft.token[idx][iu[0]] == ft.token[idx][iu[1]]).numpy()
    out = {"pearson_proxy_exact": float(np.corrcoef(e, p)[0, 1]),
           "spearman_proxy_exact": float(pd.Series(e).rank().corr(pd.Series(p).rank())),  # Pearson of ranks
           "exact_kernel": "sketch" if sketch else "exact", "exact_tokens": len(idx),
           "max_abs_head_minus_proxy": float("nan"), "head_share_of_kernel_norm": float("nan")}
    if sketch is None:
        hs = head_share(policy, G)
        head = G[:, hs] @ G[:, hs].T
        out["max_abs_head_minus_proxy"] = float((head - proxy).abs().max())
        out["head_share_of_kernel_norm"] = float(head[iu[0], iu[1]].norm() / exact[iu[0], iu[1]].norm())
    pairs = pd.DataFrame({"j": idx[iu[0]].numpy(), "k": idx[iu[1]].numpy(), "same_token": same, "exact": e, "proxy": p})
    return {"pairs": pairs, "summary": out}
