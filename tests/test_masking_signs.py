"""Table 1 / Fig. 3 measure coupling, not the sign balance of the masked tokens (issue 11)."""

import dataclasses

import pytest
import torch
from typer.testing import CliRunner

from cancel_cli.analysis.common import flat_tokens
from cancel_cli.analysis.masked_update import boost_stats, head_closed_form
from cancel_cli.analysis.masking import MaskConfig, draw_masks, topk_masks
from cancel_cli.grpo.update import OptimConfig, grpo_update


def _softmax_rows(W, h):
    return torch.softmax(h.double() @ W.double().T, -1)


def test_hand_built_opposite_signs_cancel_exactly():
    """Vocabulary of 3, hidden size 2.  Candidate c and two copies k+, k- of it (same token 0, same h) with
    A = +1 and -1.  Eq. 9: each contributes A_k <h,h> phi with phi = |e_0 - pi|^2 > 0, so masking k+ alone
    lowers the candidate (delta > 0), k- alone raises it (delta < 0), and together they cancel exactly."""
    W = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]], dtype=torch.float64)
    h = torch.tensor([[0.5, 0.2]] * 3, dtype=torch.float64)  # c, k+, k-
    tok = torch.tensor([0, 0, 0])
    A = torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64)
    eta, N = 0.1, 3
    pi = _softmax_rows(W, h)
    r = torch.nn.functional.one_hot(tok, 3).double() - pi  # Eq. 6 error terms
    W_new = W + eta / N * (A[:, None] * r).T @ h  # one SGD step on J = (1/N) sum A log pi (Eq. 3), LM head only
    delta = {}
    for name, M in (("k+", [1]), ("k-", [2]), ("both", [1, 2])):
        d = head_closed_form(W_new, h, tok, A, lambda idx: pi[idx], torch.tensor([0]), torch.tensor([M]), eta, N)
        # the same by hand: remove (eta/N) sum_{k in M} A_k r_k h_k^T from W_new and compare log pi(c)
        W_m = W_new - eta / N * (A[M, None] * r[M]).T @ h[M]
        lp = lambda Wx: torch.log_softmax(h[0] @ Wx.T, -1)[0]  # noqa: E731
        assert d.item() == pytest.approx((lp(W_new) - lp(W_m)).item(), abs=1e-14)
        delta[name] = d.item()
    phi = float(r[0] @ r[0])
    assert phi > 0 and delta["k+"] > 0 > delta["k-"]
    assert delta["k+"] == pytest.approx(eta / N * float(h[0] @ h[0]) * phi, rel=0.05)  # first order (Eq. 9)
    assert delta["both"] == 0.0  # opposite signs cancel exactly
    plus, minus = boost_stats([delta["k+"]], [1.0]), boost_stats([delta["k-"]], [-1.0])
    assert (plus["boost_rate"], minus["boost_rate"]) == (100.0, 0.0)  # raw BR flips with the sign mix
    assert plus["signed_boost_rate"] == minus["signed_boost_rate"] == 100.0  # signed BR does not
    assert (plus["p_sum_pos"], minus["p_sum_pos"]) == (100.0, 0.0)
    both = boost_stats([delta["both"]], [0.0])
    assert both["boost_rate"] == 0.0 and both["n_signed"] == 0  # no net sign: not counted in the signed BR


@pytest.fixture(scope="module")
def head_setup(toy, toy_batch):
    ft = flat_tokens(toy, toy_batch)
    W = toy.lm_head.weight.detach().float()
    new = grpo_update(toy, toy_batch, None, OptimConfig("sgd", 0.1, params="head"))
    return ft, W, new.lm_head.weight.detach().float(), int(toy_batch.response_mask.sum())


def _masks(ft, sign, m=4, candidates=64, seed=0):
    low = ft.logprob.exp() < 0.5
    cfg = MaskConfig(mask_sign=sign, mask_size=m, candidates=candidates)
    return draw_masks(ft.token, ft.advantage, low, cfg, torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("sign", ["positive", "negative", "same", "any"])
def test_masked_sets_respect_mask_sign(head_setup, sign):
    """Mutation check: a draw that ignored --mask-sign masks tokens of both signs and fails here."""
    ft = head_setup[0]
    cand, masks = _masks(ft, sign)
    s_c = torch.sign(ft.advantage[cand])[:, None]
    for cond, M in masks.items():
        s_m = torch.sign(ft.advantage[M])
        assert (M != cand[:, None]).all()
        if sign == "positive":
            assert (s_m > 0).all(), cond
        elif sign == "negative":
            assert (s_m < 0).all(), cond
        elif sign == "same":
            assert (s_m == s_c).all() and (s_m != 0).all(), cond
    if sign == "any":  # without sign control the random sets do mix signs (so the checks above can fail)
        s_m = torch.sign(ft.advantage[masks["random"]])
        assert ((s_m > 0).any(1) & (s_m < 0).any(1)).any()
    low = ft.logprob.exp() < 0.5
    assert (ft.token[masks["same_lowconf"]] == ft.token[cand][:, None]).all() and low[masks["same_lowconf"]].all()


def test_positive_masks_order_follows_the_first_order_term(head_setup):
    """With --mask-sign positive the ordering of the Boost Rates (same vs random, low-confidence vs random) is
    the one Eq. 9's first-order term (eta/N) sum_{k in M} A_k <h_c,h_k> phi_ck implies, computed here from
    explicit error vectors r = e_o - pi."""
    ft, W, W_new, N = head_setup
    cand, masks = _masks(ft, "positive", m=4, candidates=96, seed=1)
    pi = _softmax_rows(W, ft.hidden)
    br, br_first = {}, {}
    for cond, M in masks.items():
        d = head_closed_form(W_new, ft.hidden, ft.token, ft.advantage, lambda idx: pi[idx].float(), cand, M, 0.1, N)
        first = []
        for c, Mc in zip(cand.tolist(), M):
            r_c = torch.nn.functional.one_hot(ft.token[c], W.shape[0]).double() - pi[c]
            r_k = torch.nn.functional.one_hot(ft.token[Mc], W.shape[0]).double() - pi[Mc]
            hh = ft.hidden[Mc].double() @ ft.hidden[c].double()
            first.append(0.1 / N * float((ft.advantage[Mc].double() * hh * (r_k @ r_c)).sum()))
        br[cond] = float((d > 0).double().mean())
        br_first[cond] = float((torch.tensor(first) > 0).double().mean())
    assert (br["same"] > br["random"]) == (br_first["same"] > br_first["random"])
    assert (br["lowconf"] > br["random"]) == (br_first["lowconf"] > br_first["random"])
    assert (br["same_lowconf"] > br["random"]) == (br_first["same_lowconf"] > br_first["random"])
    assert br["same"] > br["random"]  # same-token partners of positive sign push the candidate up


@pytest.mark.parametrize("sign", ["any", "same"])
def test_fig3c_ranking_ignores_the_sign_of_the_advantages(head_setup, sign):
    ft, W, _, _ = head_setup
    cand = torch.arange(0, len(ft), 97)[:24]
    top = topk_masks(W, ft, cand, sign)
    flipped = dataclasses.replace(ft, advantage=-ft.advantage)
    assert torch.equal(topk_masks(W, flipped, cand, sign), top)
    if sign == "any":  # positive and negative pools differ, so the pool (not the ranking) carries the sign
        assert not torch.equal(topk_masks(W, ft, cand, "positive"), topk_masks(W, ft, cand, "negative"))


runner = CliRunner()


@pytest.mark.parametrize("args,msg", [
    (["--mask-sign", "foo"], "--mask-sign"), (["--low-conf", "p<2"], "0 < T <= 1"), (["--low-conf", "q1.5"], "0 < F < 1"),
    (["--low-conf", "median"], "--low-conf"),
    (["--mask-size", "5000", "--prompts", "2", "--n", "2", "--max-new-tokens", "24"], "larger than every candidate"),
])
def test_mask_effect_bad_input_exits_2_and_writes_nothing(tmp_path, args, msg):
    from cancel_cli.cli import app

    res = runner.invoke(app, ["--results", str(tmp_path / "res"), "--quiet", "mask-effect", *args])
    assert res.exit_code == 2, res.output
    assert msg in res.output and "Traceback" not in res.output and len(res.output.strip().splitlines()) == 1
    assert not (tmp_path / "res" / "mask-effect").exists()
