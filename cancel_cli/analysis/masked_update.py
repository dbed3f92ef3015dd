"""The mathematics of masked updates (Sec. 2.3, Table 1, Fig. 3): exact masking effects and their statistics.

One SGD step (lr eta, no momentum, App. D.2-D.3) on the GRPO loss at theta_0 (ratio 1, one mini-batch,
token-mean over N response tokens).  Dropping a set M(c) from the loss, with the normaliser N kept, gives

    theta'^{-M} = theta' - (eta / N) * sum_{k in M(c)} A_k g_k,         g_k = grad log pi(o_k | s_k)
    masking effect  delta_M(c) = log pi_theta'(c) - log pi_theta'^{-M}(c)                  (Sec. 2.3)

To first order delta_M(c) ~ (eta/N) sum_{k in M} A_k <g_c, g_k> (Eq. 5), i.e. with the output-layer proxy
(eta/N) sum_{k in M} A_k <h_c,h_k> phi_ck (Eq. 9).  Its sign therefore follows sign(sum_M A_k) whenever the
kernel is positive on M, so besides the paper's Boost Rate and Mean Boost every condition reports
P(sum_M A > 0) and the *signed* Boost Rate: the share of candidates with sign(delta) = sign(sum_M A_k),
which measures coupling whatever the sign mix of the masked tokens.
"""

from __future__ import annotations

import numpy as np
import torch

from .kernel import contribution, kernel_to_sets, phi_block


def head_closed_form(W_new, h, tok, A, probs_rows, cand, masks, eta, n_tokens, temperature=1.0, chunk=64):
    """Masking effects of the LM-head update for all (candidate, mask set) pairs at once (exact: only W moves).

    z^{-M}_c = W' h_c - (eta / (N T)) sum_{k in M(c)} A_k <h_k, h_c> (e_{o_k} - pi_k).
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


def set_coupling(W, h, tok, A, cand, masks, eta, n_tokens, temperature=1.0) -> dict[str, torch.Tensor]:
    """Per candidate, from the output-layer kernel K_ck = <h_c,h_k> phi_ck (Eq. 7):

    first_order = (eta/N) sum_{k in M} A_k K_ck (Eq. 9, the first-order LM-head masking effect);
    strength    = mean_{k in M} |K_ck| / sqrt(K_cc K_kk), the unsigned proxy cosine (Fig. 3b; no A_k in it).
    A candidate the model is certain of (K_cc = 0) has no LM-head gradient: its strength is NaN."""
    K, Kcc, Kkk = kernel_to_sets(W, h, tok, cand, masks, temperature)
    first = contribution(K, 1.0, A[masks].double()).sum(1) * eta / n_tokens
    denom = (Kcc[:, None] * Kkk).clamp(min=0).sqrt()
    cos = torch.where(denom > 1e-24, K.abs() / denom.clamp(min=1e-300), torch.full_like(K, float("nan")))
    return {"first_order": first, "strength": cos.mean(1)}


def boost_stats(delta, sum_a) -> dict:
    """Table 1 statistics of one condition (in %, Mean Boost in nats) over candidates with a measured delta.

    boost_rate = mean 1[delta > 0] and mean_boost = mean delta (Sec. 2.3); p_sum_pos = mean 1[sum_M A > 0];
    signed_boost_rate = mean 1[sign(delta) = sign(sum_M A)] over candidates with sum_M A != 0 and delta != 0."""
    d, s = np.asarray(delta, dtype=float), np.asarray(sum_a, dtype=float)
    ok = ~np.isnan(d)
    d, s = d[ok], s[ok]
    signed = (s != 0) & (d != 0)
    pct = lambda x: float(np.mean(x) * 100) if len(x) else float("nan")  # noqa: E731
    return {"boost_rate": pct(d > 0), "mean_boost": float(d.mean()) if len(d) else float("nan"), "n": int(len(d)),
            "p_sum_pos": pct(s > 0), "signed_boost_rate": pct(np.sign(d[signed]) == np.sign(s[signed])),
            "n_signed": int(signed.sum())}


def rank_by_coupling(W, h, tok, cand, pool, kmax: int, temperature=1.0, block: int = 2048) -> torch.Tensor:
    """Fig. 3c: for each candidate the kmax tokens of its pool with the largest unsigned coupling
    |<h_c,h_k> phi_ck| (Eq. 7; the ranking contains no advantage).  pool(c_idx) -> bool [len(c_idx), N]."""
    tops = []
    for s in range(0, len(cand), 64):
        c = cand[s : s + 64]
        strength = torch.empty(len(c), len(tok))
        for b in range(0, len(tok), block):
            K = slice(b, min(len(tok), b + block))
            phi = phi_block(W, h[c], tok[c], h[K], tok[K], temperature)
            strength[:, K] = contribution(h[c] @ h[K].T, phi, 1.0, temperature).abs()
        strength[~pool(c)] = -float("inf")
        tops.append(strength.topk(kmax, dim=1).indices)
    return torch.cat(tops)


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
