"""``cancel mask-effect`` (Table 1, Fig. 3): masked updates (Sec. 2, App. D.2-D.3).

One SGD step (lr 0.1, no momentum) on the GRPO loss at theta_0 (ratio 1, one mini-batch, token-mean
over N response tokens).  For a candidate token c and a masked set M(c), theta'^{-M} is the same step
with M(c)'s tokens dropped from the loss and the normaliser N kept:

    theta'^{-M} = theta' - (eta / N) * sum_{k in M(c)} A_k g_k,        g_k = grad log pi(o_k | s_k)
    masking effect  delta_M(c) = log pi_theta'(c) - log pi_theta'^{-M}(c)
    Boost Rate = mean 1[delta > 0],  Mean Boost = mean delta

Four conditions with |M(c)| = ``mask_size``: random tokens; the same token id as c; low confidence
(p below the ``low_conf_quantile`` of p over the batch); same token and low confidence.  Candidates are
drawn uniformly from tokens that have at least ``mask_size`` same-token low-confidence partners (so all
four sets exist for every candidate).

LM-head path (only W moves, h is fixed): exact closed form for all candidates at once,
    z^{-M}_c = W' h_c - (eta / (N T)) sum_{k in M(c)} A_k <h_k, h_c> (e_{o_k} - pi_k).
Full path: exact theta'^{-M} per candidate (backprop only the masked tokens, one forward of c's rollout).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from ..config import check_positive
from ..console import print_table, progress
from ..errors import UserError
from ..grpo.update import OptimConfig, grpo_update
from ..rollout import RolloutConfig, experiment_run, setup
from .common import batch_for, flat_tokens
from .kernel import phi_block

CONDITIONS = ("random", "same", "lowconf", "same_lowconf")
PAPER_TABLE1 = {  # condition -> (head BR %, head MB, full BR %, full MB)
    "random": (50.60, -0.0039, 50.21, 0.0048), "same": (66.20, 0.0224, 66.41, 0.0241),
    "lowconf": (44.20, -0.0004, 43.04, -0.0012), "same_lowconf": (74.12, 0.0301, 75.00, 0.0306),
}
TOPK = (1, 2, 4, 8, 16, 32, 64)


@dataclass
class MaskConfig(RolloutConfig):
    prompts: int = 8
    candidates: int = 256
    mask_size: int = 8
    low_conf_quantile: float = 0.5
    lr: float = 0.1
    full_candidates: int = 64
    full_dtype: str = "float64"  # the full path in fp64: masking effects are ~1e-4..1e-7, below fp32 noise
    from_batch: str = ""


def head_closed_form(W_new, h, tok, A, probs_rows, cand, masks, eta, n_tokens, temperature=1.0, chunk=64):
    """Masking effects of the LM-head update for all (candidate, mask set) pairs at once.

    W_new: updated head [V, H]; h/tok/A: per-token inputs, ids, advantages; probs_rows(idx) -> pi_k rows
    at theta_0; cand [C]; masks [C, m] token indices.  Returns delta [C]."""
    out = torch.empty(len(cand), dtype=torch.float64)
    for s in range(0, len(cand), chunk):
        c, M = cand[s : s + chunk], masks[s : s + chunk]
        hc = h[c].double()
        z = hc @ W_new.double().T  # [c, V]
        a = A[M].double() * torch.einsum("cmh,ch->cm", h[M].double(), hc)  # A_k <h_k, h_c>
        pk = probs_rows(M.reshape(-1)).double().reshape(*M.shape, -1)  # [c, m, V]
        r = -pk
        r.scatter_add_(-1, tok[M][..., None], torch.ones_like(r[..., :1]))  # e_{o_k} - pi_k
        z_masked = z - eta / (n_tokens * temperature) * torch.einsum("cm,cmv->cv", a, r)
        lp = torch.log_softmax(z / temperature, -1).gather(-1, tok[c][:, None]).squeeze(-1)
        lpm = torch.log_softmax(z_masked / temperature, -1).gather(-1, tok[c][:, None]).squeeze(-1)
        out[s : s + chunk] = lp - lpm
    return out


def proxy_cosine(W, h, tok, A, c: int, M: torch.Tensor, temperature=1.0) -> float:
    """Coupling strength: cos(g_c^W, sum_{k in M} A_k g_k^W) in the output-layer proxy (Eq. 7)."""
    idx = torch.cat([torch.tensor([c]), M])
    K = (h[idx] @ h[idx].T) * phi_block(W, h[idx], tok[idx], h[idx], tok[idx], temperature)
    a = A[M].double()
    cross = (K[0, 1:].double() * a).sum()
    norm_m = (a[:, None] * K[1:, 1:].double() * a[None, :]).sum().clamp(min=0).sqrt()
    norm_c = K[0, 0].double().clamp(min=0).sqrt()
    if norm_c < 1e-12 or norm_m < 1e-12:  # a (near-)certain token has no LM-head gradient: cosine undefined
        return float("nan")
    return float((cross / (norm_c * norm_m)).clamp(-1, 1))


def draw_masks(ft, p, cfg: MaskConfig, gen) -> tuple[torch.Tensor, dict]:
    thr = torch.quantile(p, cfg.low_conf_quantile)
    low = p < thr
    N, m = len(ft), cfg.mask_size
    ids = ft.token
    eligible = [j for j in range(N) if ((ids == ids[j]) & low).sum() - int(low[j]) >= m]
    if not eligible:
        raise UserError(f"no token has {m} same-token low-confidence partners in this batch; use a larger batch "
                        "(--prompts) or a smaller --mask-size")
    eligible = torch.tensor(eligible)
    cand = eligible[torch.randperm(len(eligible), generator=gen)[: cfg.candidates]].sort().values
    masks = {k: [] for k in CONDITIONS}
    for c in cand.tolist():
        others = torch.arange(N) != c
        pools = {"random": others, "same": others & (ids == ids[c]), "lowconf": others & low,
                 "same_lowconf": others & (ids == ids[c]) & low}
        for k, pool in pools.items():
            idx = pool.nonzero().squeeze(-1)
            masks[k].append(idx[torch.randperm(len(idx), generator=gen)[:m]])
    return cand, {k: torch.stack(v) for k, v in masks.items()}, float(thr)


class FullPath:
    """Exact full-parameter masked updates: theta'^{-M} = theta' - (eta/N) sum_{k in M} A_k g_k."""

    def __init__(self, policy, new_policy, batch, ft, eta, n_tokens, temperature):
        self.policy, self.new, self.batch, self.ft = policy, new_policy, batch, ft
        self.coef = eta / n_tokens
        self.temperature = temperature
        self.scratch = new_policy.clone()
        self.theta_new = [p.detach().clone() for p in new_policy.model.parameters()]

    def _rows(self, rows):
        b = self.batch
        return b.prompt_ids[rows], b.prompt_mask[rows], b.response_ids[rows], b.response_mask[rows]

    def grad_masked(self, M: torch.Tensor) -> list[torch.Tensor]:
        params = list(self.policy.model.parameters())
        for q in params:
            q.requires_grad_(True)
        rows = self.ft.rollout[M].unique()
        st = self.policy.token_stats(*self._rows(rows), temperature=self.temperature, with_entropy=False, grad=True)
        where = {r: i for i, r in enumerate(rows.tolist())}
        ri = torch.tensor([where[r] for r in self.ft.rollout[M].tolist()])
        obj = (self.ft.advantage[M].double() * st.logprob[ri, self.ft.position[M]].double()).sum()
        g = torch.autograd.grad(obj, params, allow_unused=True)
        for q in params:
            q.requires_grad_(False)
        return [torch.zeros_like(q) if gi is None else gi for q, gi in zip(params, g)]

    def logprob(self, policy, c: int) -> float:
        r = self.ft.rollout[c : c + 1]
        st = policy.token_stats(*self._rows(r), temperature=self.temperature, with_entropy=False)
        return float(st.logprob[0, self.ft.position[c]])

    def effect(self, c: int, M: torch.Tensor, lp_new: float) -> float:
        g = self.grad_masked(M)
        with torch.no_grad():
            for q, t, gi in zip(self.scratch.model.parameters(), self.theta_new, g):
                q.copy_(t - self.coef * gi)
        return lp_new - self.logprob(self.scratch, c)


def summarize_effects(df: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for cond in CONDITIONS:
        d = df[df.condition == cond]
        row = {"condition": cond, "same_token": cond in ("same", "same_lowconf"), "low_conf": "lowconf" in cond}
        for path in ("head", "full"):
            x = d[f"delta_{path}"].dropna()
            row[f"{path}_boost_rate"] = float((x > 0).mean() * 100) if len(x) else float("nan")
            row[f"{path}_mean_boost"] = float(x.mean()) if len(x) else float("nan")
            row[f"{path}_n"] = int(len(x))
        p = PAPER_TABLE1[cond]
        row.update(paper_head_boost_rate=p[0], paper_head_mean_boost=p[1], paper_full_boost_rate=p[2],
                   paper_full_mean_boost=p[3])
        rows.append(row)
    return pd.DataFrame(rows)


def run(cfg: MaskConfig, store):
    check_positive(candidates=cfg.candidates, mask_size=cfg.mask_size)
    if not 0 < cfg.low_conf_quantile < 1:
        raise UserError(f"--low-conf-quantile must be in (0, 1), got {cfg.low_conf_quantile}")
    if cfg.full_candidates < 0:
        raise UserError(f"--full-candidates must be >= 0, got {cfg.full_candidates}")
    policy = setup(cfg)
    gen = torch.Generator().manual_seed(cfg.seed)
    with experiment_run(store, "mask-effect", cfg, policy) as run:
        batch = batch_for(cfg, policy, store, gen)
        run.write_table("batch", batch.to_frame())
        ft = flat_tokens(policy, batch, cfg.temperature)
        p = ft.logprob.exp()
        N = int(batch.response_mask.sum())
        cand, masks, thr = draw_masks(ft, p, cfg, gen)
        W = policy.lm_head.weight.detach().float()

        def probs_rows(idx):
            return torch.softmax((ft.hidden[idx] @ W.T) / cfg.temperature, -1)

        head = grpo_update(policy, batch, None, OptimConfig("sgd", cfg.lr, params="head", temperature=cfg.temperature),
                           old_logprob=None)
        W_new = head.lm_head.weight.detach().float()
        rows = []
        for cond in CONDITIONS:
            d = head_closed_form(W_new, ft.hidden, ft.token, ft.advantage, probs_rows, cand, masks[cond], cfg.lr, N,
                                 cfg.temperature)
            for i, c in enumerate(cand.tolist()):  # the LM-head path is exact in fp64 (closed form)
                rows.append({"candidate": c, "token_id": int(ft.token[c]), "p": float(p[c]), "condition": cond,
                             "delta_head": float(d[i]), "delta_full": np.nan,
                             "cosine": proxy_cosine(W, ft.hidden, ft.token, ft.advantage, c, masks[cond][i], cfg.temperature)})
        df = pd.DataFrame(rows)
        n_full = min(cfg.full_candidates, len(cand))
        if n_full:
            base = policy
            if cfg.full_dtype == "float64":
                base = policy.clone()
                base.model.double()
            full = grpo_update(base, batch, None, OptimConfig("sgd", cfg.lr, params="full", temperature=cfg.temperature))
            fp = FullPath(base, full, batch, ft, cfg.lr, N, cfg.temperature)
            with progress("full-parameter masked updates", n_full * len(CONDITIONS)) as advance:
                for i, c in enumerate(cand[:n_full].tolist()):
                    lp_new = fp.logprob(full, c)
                    for cond in CONDITIONS:
                        df.loc[(df.candidate == c) & (df.condition == cond), "delta_full"] = fp.effect(c, masks[cond][i], lp_new)
                        advance()
        run.write_table("candidates", df)
        table1 = summarize_effects(df)
        run.write_table("table1", table1)
        run.write_table("topk", topk_effects(W, W_new, ft, cand, cfg, N, probs_rows))
        print_table("Table 1: masked updates (ours vs paper)", [
            {"masked": r.condition, "head BR": r.head_boost_rate, "head MB": r.head_mean_boost, "full BR": r.full_boost_rate,
             "full MB": r.full_mean_boost, "paper head BR": r.paper_head_boost_rate, "paper full BR": r.paper_full_boost_rate}
            for r in table1.itertuples()])
        t = table1.set_index("condition")
        summary = {"candidates": len(cand), "full_candidates": n_full, "low_conf_threshold_p": thr,
                   **{f"{c}_{k}": float(t.loc[c, k]) for c in CONDITIONS
                      for k in ("head_boost_rate", "head_mean_boost", "full_boost_rate", "full_mean_boost")}}
        run.finish(summary)
    return run, summary


def topk_effects(W, W_new, ft, cand, cfg: MaskConfig, N, probs_rows) -> pd.DataFrame:
    """Fig. 3c: mask the top-k tokens by coupling contribution A_k <h_c,h_k> phi_ck (LM-head closed form)."""
    kmax = min(max(TOPK), len(ft) - 1)
    tops = []
    for s in range(0, len(cand), 64):
        c = cand[s : s + 64]
        contrib = torch.empty(len(c), len(ft))
        for b in range(0, len(ft), 2048):
            K = slice(b, min(len(ft), b + 2048))
            hh = ft.hidden[c] @ ft.hidden[K].T
            phi = phi_block(W, ft.hidden[c], ft.token[c], ft.hidden[K], ft.token[K], cfg.temperature)
            contrib[:, K] = ft.advantage[K][None, :].float() * hh * phi
        contrib[torch.arange(len(c)), c] = -float("inf")
        tops.append(contrib.topk(kmax, dim=1).indices)
    top = torch.cat(tops)
    rows = []
    for k in TOPK:
        if k > kmax:
            continue
        d = head_closed_form(W_new, ft.hidden, ft.token, ft.advantage, probs_rows, cand, top[:, :k], cfg.lr, N,
                             cfg.temperature)
        rows.append({"k": k, "boost_rate": float((d > 0).double().mean() * 100), "mean_boost": float(d.mean())})
    return pd.DataFrame(rows)
