"""Monte-Carlo token values against exact enumeration, and resumability."""


import numpy as np
import pandas as pd
import pytest
import torch

from cancel_cli.analysis.value import ValueConfig, estimate, token_values
from cancel_cli.policy import Policy
from cancel_cli.rollout import build_batch


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


def exact_values(policy, prompt, response, answer, horizon):
    """V(s_t) and Q(s_t, a) by full enumeration of every continuation within the horizon."""
    from cancel_cli.tasks.reward import score

    cache = {}

    def next_probs(seq):
        with torch.no_grad():
            return torch.softmax(policy.model(input_ids=torch.tensor([seq])).logits[0, -1].double(), -1).numpy()

    def V(resp):  # expected reward from a partial response
        key = tuple(resp)
        if key in cache:
            return cache[key]
        if resp and resp[-1] == policy.eos_id or len(resp) >= horizon:
            val = score(policy.decode(resp), answer)
        else:
            p = next_probs(prompt + resp)
            val = sum(p[a] * V(resp + [a]) for a in range(len(p)) if p[a] > 0)
        cache[key] = val
        return val

    out = []
    for t in range(len(response)):
        s = response[:t]
        p = next_probs(prompt + s)[response[t]]
        out.append(((V(s + [response[t]]) - V(s)) / (1 - p), p))
    return out


def test_estimator_is_within_three_standard_errors_of_exact(tmp_path):
    from cancel_cli.store import Store

    pol = tiny_policy()
    prompt = pol.encode("1")
    response = pol.encode("\\boxed{1}") + [pol.eos_id]
    exact = exact_values(pol, prompt, response, "1", horizon=5)
    batch = build_batch(pol, [prompt], [response], ["0"], ["1"])
    cfg = ValueConfig(model="tiny", M=4000, temperature=1.0, top_p=1.0, max_new_tokens=5, chunk=2, seed=0)
    toks = pd.DataFrame({"rollout": [0] * 3, "position": [0, 1, 2], "p": [e[1] for e in exact[:3]]})
    got = token_values(pol, batch, toks, cfg, Store(tmp_path))
    assert (got.se > 0).all()
    for (ex, p), est, se in zip(exact[:3], got.value, got.se):
        assert abs(est - ex) <= 3 * se, (est, ex, se)
    assert np.ptp([e[0] for e in exact[:3]]) > 0.05  # the exact values differ: the check is not vacuous


def test_estimate_formula():
    v, se = estimate(0.75, 0.5, 0.5, 101)
    assert v == pytest.approx(0.5)
    assert se == pytest.approx(((0.75 * 0.25 + 0.25) / 100) ** 0.5 / 0.5)


def test_killed_and_resumed_equals_uninterrupted(tmp_path, monkeypatch):
    from cancel_cli.analysis import value
    from cancel_cli.store import Store

    cfg = dict(prompts=4, n=4, M=8, per_cell=3, chunk=2, seed=11, max_new_tokens=96)
    run_a, _ = value.run(value.ValueConfig(**cfg), Store(tmp_path / "a"))
    full = run_a.read_table("values_final")

    store_b = Store(tmp_path / "b")
    real = value._value_chunk
    calls = {"n": 0}

    def dying(*a, **kw):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("killed")
        return real(*a, **kw)

    monkeypatch.setattr(value, "_value_chunk", dying)
    with pytest.raises(KeyboardInterrupt):
        value.run(value.ValueConfig(**cfg), store_b)
    monkeypatch.setattr(value, "_value_chunk", real)
    (crashed,) = store_b.runs("mc-value")
    assert crashed.status == "failed" and len(crashed.parts("values")) == 2
    run_b, _ = value.run(value.ValueConfig(**cfg), store_b, resume=crashed.id)
    resumed = run_b.read_table("values_final")
    cols = ["rollout", "position", "avg_a", "avg_s", "value", "se"]
    pd.testing.assert_frame_equal(full[cols].reset_index(drop=True), resumed[cols].reset_index(drop=True))
    assert len(resumed) == len(full) == len(resumed.drop_duplicates(["rollout", "position"]))
