"""The output-layer coupling kernel (Eq. 6-10), computed blockwise.

For tokens j, k with LM-head inputs h and output distributions pi (at the state that predicts them):

    r_j = e_{o_j} - pi_j                                                    (Eq. 6, error term)
    <g_j^W, g_k^W>_F = <h_j, h_k> * phi_jk                                  (Eq. 7)
    phi_jk = <r_j, r_k> = 1[o_j = o_k] - pi_j(o_k) - pi_k(o_j) + <pi_j, pi_k>   (Eq. 8)
    contribution of k to j: A_k <h_j, h_k> phi_jk                           (Eq. 9)

For o_j = o_k = o, Eq. 10 writes phi = (1 - pi_j(o))(1 - pi_k(o)); the exact value (Eq. 8, computed
here) adds sum_{v != o} pi_j(v) pi_k(v) >= 0, the overlap of the two distributions' remaining mass.
At sampling temperature T the logits are W h / T, so g^W = r h^T / T and the kernel carries 1 / T^2.
Only <pi_j, pi_k> needs the vocabulary: it is a matrix product of blocks of probability rows,
recomputed from h and W per block, so no V-sized vector is ever formed per pair.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch


def probs(W: torch.Tensor, h: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    return torch.softmax((h @ W.T).float() / temperature, -1)


def phi_block(W, h_j, o_j, h_k, o_k, temperature: float = 1.0) -> torch.Tensor:
    """phi for all pairs of a block of j tokens and a block of k tokens (Eq. 8): [|J|, |K|]."""
    pj, pk = probs(W, h_j, temperature), probs(W, h_k, temperature)
    same = (o_j[:, None] == o_k[None, :]).float()
    return same - pj[:, o_k] - pk[:, o_j].T + pj @ pk.T


def blocks(n: int, size: int) -> Iterator[slice]:
    for s in range(0, n, size):
        yield slice(s, min(n, s + size))


def kernel_blocks(W, h, o, block: int = 1024, temperature: float = 1.0):
    """Yield (J slice, K slice, <h_j,h_k>, phi_jk) over all pairs of tokens, block by block."""
    for J in blocks(len(o), block):
        for K in blocks(len(o), block):
            yield J, K, h[J] @ h[K].T, phi_block(W, h[J], o[J], h[K], o[K], temperature)


def contribution(hh: torch.Tensor, phi: torch.Tensor, A_k=1.0, temperature: float = 1.0) -> torch.Tensor:
    """Coupling contribution of k to j, A_k <h_j,h_k> phi_jk / T^2 (Eq. 9 without eta/N); A_k = 1 gives the
    output-layer kernel <g_j^W, g_k^W> (Eq. 7).  The one place where coupling and masking form Eq. 9."""
    return A_k * hh * phi / temperature**2


def proxy_kernel(W, h, o, temperature: float = 1.0) -> torch.Tensor:
    """The full [N, N] output-layer kernel <h_j,h_k> phi_jk (small N only)."""
    return contribution(h @ h.T, phi_block(W, h, o, h, o, temperature), 1.0, temperature)


def kernel_to_sets(W, h, o, cand: torch.Tensor, masks: torch.Tensor, temperature: float = 1.0, chunk: int = 64):
    """Kernel of every candidate c with each token k of its set M(c) (Eq. 7): K_cM [C, m], K_cc [C], K_kk [C, m]."""
    C, m = masks.shape
    K, Kcc, Kkk = torch.empty(C, m, dtype=torch.float64), torch.empty(C, dtype=torch.float64), torch.empty(C, m, dtype=torch.float64)
    for s in range(0, C, chunk):
        c, M = cand[s : s + chunk], masks[s : s + chunk]
        flat, nc = M.reshape(-1), len(c)
        phi = phi_block(W, h[c], o[c], h[flat], o[flat], temperature).reshape(nc, nc, m)[torch.arange(nc), torch.arange(nc)]
        hh = torch.einsum("ch,cmh->cm", h[c], h[M])
        K[s : s + nc] = contribution(hh, phi, 1.0, temperature).double()
        Kcc[s : s + nc] = contribution((h[c] * h[c]).sum(-1), phi_block(W, h[c], o[c], h[c], o[c], temperature).diagonal(),
                                       1.0, temperature).double()
        Kkk[s : s + nc] = contribution((h[flat] * h[flat]).sum(-1), phi_block(W, h[flat], o[flat], h[flat], o[flat],
                                                                              temperature).diagonal(), 1.0, temperature).double().reshape(nc, m)
    return K, Kcc, Kkk


def proxy_delta(W, h, o, A, eta: float, n_tokens: int, temperature: float = 1.0, block: int = 1024) -> torch.Tensor:
    """First-order proxy delta_j = (eta/N) sum_k A_k <h_j,h_k> phi_jk (Eq. 9), blockwise."""
    out = torch.zeros(len(o), dtype=torch.float64)
    for J, K, hh, phi in kernel_blocks(W, h, o, block, temperature):
        out[J] += contribution(hh, phi, 1.0, temperature).double() @ A[K].double() * eta / n_tokens
    return out
