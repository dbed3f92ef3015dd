import numpy as np
import torch
from scipy import stats

from cancel_cli.sampling import SamplingParams, TorchSampler, filter_probs


def _next_token_probs(policy, prefix, temperature):
    with torch.no_grad():
        logits = policy.model(input_ids=torch.tensor([prefix])).logits[0, -1]
    return torch.softmax(logits.double() / temperature, -1).numpy()


def _chi2_pvalue(counts, probs, n):
    keep = probs * n >= 5  # pool rare tokens into one cell
    obs = np.append(counts[keep], counts[~keep].sum())
    exp = np.append(probs[keep] * n, probs[~keep].sum() * n)
    if exp[-1] < 5:
        obs, exp = obs[:-1].copy(), exp[:-1].copy()
        obs[-1] += counts[~keep].sum()
        exp[-1] += probs[~keep].sum() * n
    obs, exp = obs.astype(np.float64), exp.astype(np.float64)
    return stats.chisquare(obs, exp / exp.sum() * obs.sum()).pvalue


def test_next_token_frequencies_match_softmax(toy):
    prefix = toy.encode("Add 58+67.\n")  # a state with real entropy over openings
    for temperature in (1.0, 0.7):
        probs = _next_token_probs(toy, prefix, temperature)
        assert (probs > 0.02).sum() >= 3  # the test is not trivial
        out = TorchSampler(toy, max_rows=20000).continue_prefixes(
            [prefix], 20000, SamplingParams(temperature, 1.0, 1), torch.Generator().manual_seed(1))[0]
        counts = np.bincount([o[0] for o in out], minlength=len(probs))
        assert _chi2_pvalue(counts, probs, 20000) > 1e-3


def test_top_p_keeps_the_nucleus_only():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    p = filter_probs(logits, 1.0, 0.8)
    assert torch.allclose(p, torch.tensor([[0.625, 0.375, 0.0, 0.0]]))
    p = filter_probs(logits, 1.0, 0.81)
    assert p[0, 2] > 0 and p[0, 3] == 0


def test_policy_logprobs_equal_sampler_logprobs(toy, monkeypatch):
    """The KV-cache sampling path and the training-path forward give the same log-probabilities: the
    logits each sampling step draws from are recorded (one prefix, one continuation: one row throughout)."""
    from cancel_cli import sampling
    from cancel_cli.rollout import build_batch

    seen, real = [], sampling.draw

    def recording(logits, params, generator):
        tok = real(logits, params, generator)
        seen.append(float(torch.log_softmax(logits.float(), -1)[0, tok[0]]))
        return tok

    monkeypatch.setattr(sampling, "draw", recording)
    for text in ("Add 12+345.\n", "Add 901+99.\n"):
        prompt = toy.encode(text)
        seen.clear()
        (resp,) = TorchSampler(toy).continue_prefixes([prompt], 1, SamplingParams(1.0, 1.0, 96),
                                                      torch.Generator().manual_seed(0))[0]
        batch = build_batch(toy, [prompt], [resp])
        st = toy.token_stats(batch.prompt_ids, batch.prompt_mask, batch.response_ids, batch.response_mask)
        assert len(seen) == len(resp) > 3
        assert np.allclose(st.logprob[0, : len(resp)].numpy(), seen, atol=1e-4)


def test_shared_prefix_continuations_are_fresh_samples(toy):
    """Continuations from a repeated KV cache are distributed like samples that re-encode the prefix."""
    prefix = toy.encode("Add 47+385.\nColumns: 7+5+0=12; ")
    s = TorchSampler(toy, max_rows=2000)
    p = SamplingParams(1.0, 1.0, 40)
    shared = s.continue_prefixes([prefix], 2000, p, torch.Generator().manual_seed(5))[0]
    fresh = [g[0] for g in s.continue_prefixes([prefix] * 2000, 1, p, torch.Generator().manual_seed(6))]
    for pos in (0, 1, 4):
        a = [r[pos] if len(r) > pos else -1 for r in shared]
        b = [r[pos] if len(r) > pos else -1 for r in fresh]
        cats = sorted(set(a) | set(b))
        table = np.array([[a.count(c) for c in cats], [b.count(c) for c in cats]])
        table = table[:, table.sum(0) >= 10]
        if table.shape[1] > 1:
            assert stats.chi2_contingency(table).pvalue > 1e-3
    # and the first token follows the model's softmax exactly
    probs = _next_token_probs(toy, prefix, 1.0)
    counts = np.bincount([r[0] for r in shared], minlength=len(probs))
    assert _chi2_pvalue(counts, probs, 2000) > 1e-3


def test_responses_stop_at_eos(toy):
    outs = TorchSampler(toy).rollouts([toy.encode("Add 10+10.\n")], 16, SamplingParams(1.0, 1.0, 96),
                                      torch.Generator().manual_seed(0))[0]
    for r in outs:
        assert toy.eos_id not in r[:-1]
    assert sum(r[-1] == toy.eos_id for r in outs) >= 12


def test_left_padding_does_not_change_logprobs(toy):
    from cancel_cli.rollout import build_batch

    a, b = toy.encode("Add 1+22.\n"), toy.encode("Add 123+456.\n")
    r = toy.encode("Columns: 1+2+0=3 -> \\boxed{23}") + [toy.eos_id]
    both = build_batch(toy, [a, b], [r, r])
    alone = build_batch(toy, [a], [r])
    s1 = toy.token_stats(both.prompt_ids, both.prompt_mask, both.response_ids, both.response_mask)
    s2 = toy.token_stats(alone.prompt_ids, alone.prompt_mask, alone.response_ids, alone.response_mask)
    assert torch.allclose(s1.logprob[0], s2.logprob[0], atol=1e-5)
