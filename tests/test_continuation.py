"""The continuation engine: continuations from a slice of one rollout encode are fresh samples, results do
not depend on the decode width, memory is bounded by the width (issue 18)."""

import numpy as np
import pandas as pd
import torch
from scipy import stats

from cancel_cli.continuation import ContinuationEngine, Job, stream_key
from cancel_cli.sampling import SamplingParams


def _probs(policy, prefix, temperature=1.0):
    with torch.no_grad():
        logits = policy.model(input_ids=torch.tensor([prefix])).logits[0, -1]
    return torch.softmax(logits.double() / temperature, -1).numpy()


def test_slice_continuations_are_fresh_samples(toy):
    """Two tokens after a prefix taken from the middle of an encoded rollout: the first sampled token follows
    the model's softmax (chi-square), and the second-step frequencies match samples that re-encode the
    prefix from scratch (contingency chi-square)."""
    rollout = toy.encode("Add 58+67.\nColumns: 8+7+0=15; 5+6+1=12 -> \\boxed{125}")
    n = len(toy.encode("Add 58+67."))  # state s = rollout[:n] (a slice of the one encode), first token "\n"
    first = rollout[n]
    eng = ContinuationEngine(toy, width=512)
    eng.encode(0, rollout)
    N = 2000
    got = {}
    eng.run([Job(0, n, first, 2, stream_key("slice", j)) for j in range(N)], SamplingParams(1.0, 1.0, 96),
            lambda j, t: got.__setitem__(j, t))
    second = np.array([got[j][1] for j in range(N)])
    probs = _probs(toy, rollout[:n] + [first])
    assert (probs > 0.02).sum() >= 2  # a state with real entropy
    keep = probs * N >= 5
    obs = np.append(np.bincount(second, minlength=len(probs))[keep], (~keep[second]).sum())
    exp = np.append(probs[keep], probs[~keep].sum()) * N
    if exp[-1] < 5:
        obs, exp = obs[:-1], exp[:-1] * obs[:-1].sum() / exp[:-1].sum()
    assert stats.chisquare(obs, exp).pvalue > 1e-3
    # third token vs fresh re-encoded samples (torch.multinomial on a full forward of each prefix)
    fresh_g = torch.Generator().manual_seed(0)
    third_engine = [got[j][2] if len(got[j]) > 2 else -1 for j in range(N)]
    fresh = []
    for tok2, cnt in zip(*np.unique(second, return_counts=True)):
        p3 = torch.tensor(_probs(toy, rollout[:n] + [first, int(tok2)]))
        fresh += torch.multinomial(p3, int(cnt), replacement=True, generator=fresh_g).tolist()
    cats = sorted(set(third_engine) | set(fresh))
    table = np.array([[third_engine.count(c) for c in cats], [fresh.count(c) for c in cats]])
    table = table[:, table.sum(0) >= 10]
    assert table.shape[1] >= 2 and stats.chi2_contingency(table).pvalue > 1e-3


def test_values_identical_for_decode_widths_16_and_256(toy, toy_batch, tmp_path):
    from cancel_cli.analysis.value import ValueConfig
    from cancel_cli.analysis.value_estimate import token_values
    from cancel_cli.store import Store

    lengths = toy_batch.lengths
    toks = pd.DataFrame({"rollout": [0, 0, 3, 5], "position": [1, int(lengths[0]) // 2, 4, int(lengths[5]) - 2]})
    tables = []
    for width in (16, 256):
        cfg = ValueConfig(M=12, chunk=4, seed=5, decode_width=width)
        tables.append(token_values(toy, toy_batch, toks, cfg, Store(tmp_path / str(width))))
    cols = ["q_a", "k_a", "q_b", "k_b", "value", "se"]
    pd.testing.assert_frame_equal(tables[0][cols], tables[1][cols])
    assert tables[0].k_b.sum() > 0 or tables[0].k_a.sum() > 0  # some continuation was rewarded


def test_peak_memory_grows_with_width_not_with_jobs(toy):
    """KV slots held at once <= width x (max(64, 2 (prefix + budget + 1)) + 1): compaction keeps the buffer
    within twice the longest live row (the bound of ``SlotBuffer.compact``; capacity adds HEADROOM free slots), whatever the number of
    jobs; the job count (M x positions) does not enter."""
    rollout = toy.encode("Add 47+385.\nColumns: 7+5+0=12; 4+8+1=13; 0+3+1=4 -> \\boxed{432}")
    budget, width = 30, 8
    peaks = {}
    for m in (2, 16):
        eng = ContinuationEngine(toy, width=width)
        eng.encode(0, rollout)
        jobs = [Job(0, n, rollout[n], budget, stream_key(m, n, j)) for n in range(12, 20) for j in range(m)]
        eng.run(jobs, SamplingParams(1.0, 1.0, 96), lambda j, t: None)
        peaks[m] = eng.peak_kv_slots
    bound = width * (max(64, 2 * (20 + budget + 1)) + 1)
    assert peaks[16] <= bound and peaks[2] <= bound
    assert peaks[16] < 16 * 8 * (20 + budget) / 4  # far below holding every job (M x positions) at once


def test_engine_equals_a_per_job_reference_through_refills_compaction_and_shrinking(toy, monkeypatch):
    """Every job's tokens equal an independent decode of that job alone (full re-encode each step, the same
    counter-based uniforms), at a width that forces refills, hole compaction and shrinking of the batch, and the
    model's attention implementation is restored afterwards."""
    from cancel_cli import continuation as C
    from cancel_cli.sampling import filter_probs

    rollouts = [toy.encode("Add 47+385.\nColumns: 7+5+0=12; 4+8+1=13; 0+3+1=4 -> \\boxed{432}"),
                toy.encode("Add 9+12.\nColumns: 9+2+0=11; 0+1+1=2 -> \\boxed{21}")]
    params = SamplingParams(1.0, 1.0, 96)
    jobs = [Job(s, n, rollouts[s][n], b, stream_key("ref", s, n, j))
            for s, r in enumerate(rollouts) for n in range(8, len(r) - 1, 5) for j, b in enumerate((3, 40, 70))]
    events = {"compact": 0, "shrink": 0}
    real_compact, real_select = C.SlotBuffer.compact, C.SlotBuffer.select

    def compact(self):
        before = self.S
        real_compact(self)
        events["compact"] += self.S < before

    def select(self, idx):
        events["shrink"] += 1
        real_select(self, idx)

    real_attention = C.gqa_decode_attention

    def attention(*a, **k):
        events["gqa"] = events.get("gqa", 0) + 1
        return real_attention(*a, **k)

    monkeypatch.setattr(C.SlotBuffer, "compact", compact)
    monkeypatch.setattr(C.SlotBuffer, "select", select)
    monkeypatch.setattr(C, "gqa_decode_attention", attention)
    eng = ContinuationEngine(toy, width=6)
    for s, r in enumerate(rollouts):
        eng.encode(s, r)
    impl = toy.model.config._attn_implementation
    got = {}
    eng.run(jobs, params, lambda j, t: got.__setitem__(j, t))
    assert toy.model.config._attn_implementation == impl
    assert events["compact"] > 0 and events["shrink"] > 0 and len(got) == len(jobs)
    assert events.get("gqa", 0) > 0  # decode steps took the no-copy attention, not transformers' sdpa
    for j, job in enumerate(jobs):
        ids, out = rollouts[job.source][: job.length] + [job.first], [job.first]
        with torch.no_grad():
            for c in range(1, job.budget + 1):
                logits = toy.model(input_ids=torch.tensor([ids])).logits[:, -1]
                nxt = int(C.inverse_cdf(filter_probs(logits, 1.0, 1.0), C.uniforms([job.key], [c]))[0])
                ids.append(nxt)
                out.append(nxt)
                if nxt == toy.eos_id:
                    break
        assert got[j] == out, (j, job)
