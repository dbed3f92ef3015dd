"""Monte-Carlo token values against exact enumeration on a tiny model, coverage of the CIs, the restricted
first-token draw, resumability and the estimator-keyed cache."""

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

from cancel_cli.analysis.value import ValueConfig
from cancel_cli.analysis.value_estimate import estimate, jeffreys_var, token_values
from cancel_cli.continuation import inverse_cdf, uniforms
from cancel_cli.policy import Policy
from cancel_cli.rollout import build_batch

H = 4  # horizon: responses end at EOS or after H tokens


def tiny_policy(seed=0):
    """A 6-token Qwen3 (pad, eos, "\\boxed{", "0", "1", "}") small enough to enumerate every continuation."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, Qwen3Config, Qwen3ForCausalLM

    vocab = {"<pad>": 0, "<eos>": 1, "\\boxed{": 2, "0": 3, "1": 4, "}": 5}
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<pad>"))
    tk.pre_tokenizer = pre_tokenizers.Split(Regex(r"\\boxed\{|[\s\S]"), behavior="isolated")
    tk.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", eos_token="<eos>", unk_token="<pad>")
    torch.manual_seed(seed)
    cfg = Qwen3Config(vocab_size=6, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                      num_key_value_heads=1, head_dim=8, max_position_embeddings=32, tie_word_embeddings=False,
                      pad_token_id=0, eos_token_id=1)
    model = Qwen3ForCausalLM(cfg).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(30)  # sharper, varied distributions
    return Policy(model, tok, "tiny", "tiny-hash")


def odd_ones(texts, answers):
    """The test's reward (fast, varied): 1 when the response has an odd number of "1" characters."""
    return [float(t.count("1") % 2 == 1) for t in texts]


def exact_deltas(policy, prompt, response):
    """Exact Delta(o_t | s_t) = Q(s, o_t) - E_{a != o_t} Q(s, a) and p(o_t) for every t, by enumeration."""
    memo, child_memo = {}, {}

    def children(resp):  # next-token distributions after resp + [a] for every a, in one batched forward
        key = tuple(resp)
        if key not in child_memo:
            ids = torch.tensor([prompt + list(resp) + [a] for a in range(len(policy.tokenizer))])
            with torch.no_grad():
                child_memo[key] = torch.softmax(policy.model(input_ids=ids).logits[:, -1].double(), -1).numpy()
        return child_memo[key]

    def probs(resp):
        if not resp:
            with torch.no_grad():
                return torch.softmax(policy.model(input_ids=torch.tensor([prompt])).logits[0, -1].double(), -1).numpy()
        return children(resp[:-1])[resp[-1]]

    def V(resp):
        key = tuple(resp)
        if key not in memo:
            if (resp and resp[-1] == policy.eos_id) or len(resp) >= H:
                memo[key] = odd_ones([policy.decode(resp)], [None])[0]
            else:
                p = probs(resp)
                memo[key] = sum(p[a] * V(resp + [a]) for a in range(len(p)))
        return memo[key]

    out = []
    for t, o in enumerate(response):
        s, p = response[:t], probs(response[:t])
        q = np.array([V(s + [a]) for a in range(len(p))])
        rest = np.delete(np.arange(len(p)), o)
        out.append((q[o] - (p[rest] * q[rest]).sum() / p[rest].sum(), p[o]))
    return out


def _setup():
    pol = tiny_policy(2)  # has states with p(o_t) in [0.99, 0.999]
    prompt = pol.encode("1")
    responses = [[2, 2, 4, 4], [3, 4, 4, pol.eos_id]]
    batch = build_batch(pol, [prompt] * 2, responses, ["0", "0"], ["1", "1"])
    toks = pd.DataFrame({"rollout": [i for i, r in enumerate(responses) for _ in r],
                         "position": [t for r in responses for t in range(len(r))]})
    return pol, batch, toks, [e for r in responses for e in exact_deltas(pol, prompt, r)]


def test_exact_setup_is_not_vacuous():
    _, _, _, exact = _setup()
    ps = np.array([p for _, p in exact])
    assert ((ps >= 0.99) & (ps <= 0.999)).sum() >= 2 and (ps < 0.9).any()
    assert np.ptp([d for d, _ in exact]) > 0.2


@pytest.mark.parametrize("estimator", ["direct", "eq20"])
def test_estimators_within_three_se_of_exact(tmp_path, estimator):
    from cancel_cli.store import Store

    pol, batch, toks, exact = _setup()
    cfg = ValueConfig(model="tiny", M=2000, max_new_tokens=H, chunk=3, seed=0, estimator=estimator)
    got = token_values(pol, batch, toks, cfg, Store(tmp_path), reward_fn=odd_ones)
    assert np.allclose(got.p_sampling, [p for _, p in exact])
    for (ex, p), est, se in zip(exact, got.value, got.se):
        assert se > 0 or p == 0
        assert abs(est - ex) <= 3 * se, (estimator, est, ex, se, p)
    if estimator == "direct":  # no 1 / (1 - p): every token's SE is <= sqrt(0.5 / M)
        assert (got.se <= (0.5 / 2000) ** 0.5 + 1e-9).all()


def test_direct_ci_coverage_over_60_seeds(tmp_path):
    from cancel_cli.store import Store

    pol, batch, toks, exact = _setup()
    ex = np.array([d for d, _ in exact])
    hi_p = np.array([0.99 <= p <= 0.999 for _, p in exact])
    covered = []
    for seed in range(60):
        cfg = ValueConfig(model="tiny", M=64, max_new_tokens=H, chunk=6, seed=seed)
        got = token_values(pol, batch, toks, cfg, Store(tmp_path), reward_fn=odd_ones)
        covered.append(np.abs(got.value.to_numpy() - ex) <= 1.96 * got.se.to_numpy())
    covered = np.array(covered)
    assert 0.90 <= covered.mean() <= 0.98, covered.mean(0)
    assert 0.90 <= covered[:, hi_p].mean() <= 0.98, covered[:, hi_p].mean(0)


def test_jeffreys_variance_is_positive_at_the_edges():
    assert jeffreys_var(0, 64) > 0 and jeffreys_var(64, 64) > 0
    assert jeffreys_var(32, 64) == pytest.approx((32.5 / 65) * (32.5 / 65) / 64)
    assert jeffreys_var(1, 0) == 0  # an exact branch
    v, se = estimate("eq20", 0.75, 3, 4, 0.5, 2, 4, 0.5)
    assert v == pytest.approx(0.5) and se == pytest.approx((jeffreys_var(3, 4) + jeffreys_var(2, 4)) ** 0.5 / 0.5)
    v, se = estimate("direct", 0.75, 3, 4, 0.5, 2, 4, 0.5)
    assert v == pytest.approx(0.25) and se == pytest.approx((jeffreys_var(3, 4) + jeffreys_var(2, 4)) ** 0.5)


def test_restricted_first_token_draw_matches_renormalised_policy():
    probs = torch.tensor([0.02, 0.9, 0.05, 0.0, 0.03], dtype=torch.float64)
    o = 1
    alt = probs.clone()
    alt[o] = 0
    n = 20000
    draws = inverse_cdf(alt[None].expand(n, -1), uniforms(np.arange(n) * 7919 + 3, np.zeros(n))).numpy()
    assert not (draws == o).any() and not (draws == 3).any()
    counts = np.bincount(draws, minlength=5)[[0, 2, 4]]
    expected = alt[[0, 2, 4]].numpy() / alt.sum().item() * n
    assert stats.chisquare(counts, expected).pvalue > 1e-3
