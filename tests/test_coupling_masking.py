import torch

from cancel_cli.analysis.common import flat_tokens
from cancel_cli.analysis.kernel import phi_block, proxy_kernel
from cancel_cli.analysis.masked_update import FullPath, head_closed_form
from cancel_cli.grpo.update import OptimConfig, grpo_update


def test_blockwise_phi_equals_naive_inner_product(toy, toy_batch):
    ft = flat_tokens(toy, toy_batch)
    W = toy.lm_head.weight.detach().float()
    idx = torch.randperm(len(ft), generator=torch.Generator().manual_seed(0))[:300]
    h, o = ft.hidden[idx], ft.token[idx]
    pi = torch.softmax(h.double() @ W.double().T, -1)
    r = torch.nn.functional.one_hot(o, W.shape[0]).double() - pi
    naive = r @ r.T
    assert torch.allclose(phi_block(W, h, o, h, o).double(), naive, atol=1e-6)
    # Eq. 10, same-token case: the paper writes phi = (1 - pi_j(o)) (1 - pi_k(o)); exactly, Eq. 8 adds the
    # overlap of the remaining mass, sum_{v != o} pi_j(v) pi_k(v) >= 0
    same = o[:, None] == o[None, :]
    p_self = pi.gather(1, o[:, None]).squeeze(1)
    eq10 = (1 - p_self)[:, None] * (1 - p_self)[None, :]
    rest = pi @ pi.T - p_self[:, None] * p_self[None, :]
    assert torch.allclose(naive[same], (eq10 + rest)[same], atol=1e-9)
    assert (naive[same] >= eq10[same] - 1e-12).all()


def test_proxy_kernel_equals_exact_lm_head_gradient_inner_product(toy, toy_batch):
    b = toy_batch
    ft = flat_tokens(toy, b)
    idx = torch.tensor([0, 3, 7, 40, 41, 90, 200, 333])
    W = toy.lm_head.weight
    grads = []
    for j in idx.tolist():
        r = ft.rollout[j].item()
        W.requires_grad_(True)
        st = toy.token_stats(b.prompt_ids[r : r + 1], b.prompt_mask[r : r + 1], b.response_ids[r : r + 1],
                             b.response_mask[r : r + 1], grad=True, with_entropy=False)
        (g,) = torch.autograd.grad(st.logprob[0, ft.position[j]], [W])
        W.requires_grad_(False)
        grads.append(g.reshape(-1).double())
    G = torch.stack(grads)
    exact = G @ G.T
    proxy = proxy_kernel(W.detach().float(), ft.hidden[idx], ft.token[idx]).double()
    assert torch.allclose(proxy, exact, atol=1e-5, rtol=1e-5)


def _brute_masked_logprob(toy, batch, ft, c, M, eta, params):
    """Copy, SGD step on the masked loss (M dropped, normaliser kept), forward."""
    lm = torch.ones_like(batch.response_mask)
    for k in M.tolist():
        lm[ft.rollout[k], ft.position[k]] = 0
    new = grpo_update(toy, batch, None, OptimConfig("sgd", eta, params=params), loss_mask=lm)
    r = ft.rollout[c].item()
    st = new.token_stats(batch.prompt_ids[r : r + 1], batch.prompt_mask[r : r + 1], batch.response_ids[r : r + 1],
                         batch.response_mask[r : r + 1], with_entropy=False)
    return float(st.logprob[0, ft.position[c]])


def _logprob(policy, batch, ft, c):
    r = ft.rollout[c].item()
    st = policy.token_stats(batch.prompt_ids[r : r + 1], batch.prompt_mask[r : r + 1], batch.response_ids[r : r + 1],
                            batch.response_mask[r : r + 1], with_entropy=False)
    return float(st.logprob[0, ft.position[c]])


def test_closed_form_head_masking_equals_brute_force(toy, toy_batch):
    b, eta = toy_batch, 0.1
    ft = flat_tokens(toy, b)
    N = int(b.response_mask.sum())
    g = torch.Generator().manual_seed(1)
    cand = ft.logprob.argsort()[:20]  # the 20 least confident tokens: effects large enough to test
    masks = []
    for c in cand.tolist():  # same-token partners (most coupled), topped up with random tokens
        same = ((ft.token == ft.token[c]) & (torch.arange(len(ft)) != c)).nonzero().squeeze(-1)
        same = same[ft.logprob[same].argsort()][:6]
        rest = torch.randperm(len(ft), generator=g)
        rest = rest[(rest != c) & ~torch.isin(rest, same)][: 6 - len(same)]
        masks.append(torch.cat([same, rest]))
    masks = torch.stack(masks)
    W = toy.lm_head.weight.detach().float()
    new = grpo_update(toy, b, None, OptimConfig("sgd", eta, params="head"))
    d = head_closed_form(new.lm_head.weight.detach().float(), ft.hidden, ft.token, ft.advantage,
                         lambda idx: torch.softmax(ft.hidden[idx] @ W.T, -1), cand, masks, eta, N)
    for i, c in enumerate(cand.tolist()):
        brute = _logprob(new, b, ft, c) - _brute_masked_logprob(toy, b, ft, c, masks[i], eta, "head")
        assert abs(d[i].item() - brute) < 1e-5, (i, d[i].item(), brute)
    assert d.abs().max() > 1e-3 and (d.abs() > 1e-5).sum() >= 5  # the effects are not all ~0: the test can fail


def test_full_path_masking_equals_brute_force(toy, toy_batch):
    b, eta = toy_batch, 0.1
    ft = flat_tokens(toy, b)
    N = int(b.response_mask.sum())
    full = grpo_update(toy, b, None, OptimConfig("sgd", eta))
    fp = FullPath(toy, full, b, ft, eta, N, 1.0)
    g = torch.Generator().manual_seed(2)
    effects = []
    for c in ft.logprob.argsort()[:4].tolist():  # low-confidence candidates, masked with same-token partners
        same = ((ft.token == ft.token[c]) & (torch.arange(len(ft)) != c)).nonzero().squeeze(-1)
        M = torch.cat([same[torch.randperm(len(same), generator=g)[:4]], torch.randperm(len(ft), generator=g)[:2]])
        M = M[M != c].unique()
        lp_new = fp.logprob(full, c)
        brute = lp_new - _brute_masked_logprob(toy, b, ft, c, M, eta, "full")
        eff = fp.effect(c, M, lp_new)
        assert abs(eff - brute) < 2e-5, (eff, brute)
        effects.append(abs(brute))
    assert max(effects) > 1e-4  # not vacuous
