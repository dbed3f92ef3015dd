"""Issue 18 on CPU: Monte-Carlo continuations on vLLM (``VLLMContinuationEngine``) against the stand-in
``vllm`` module of test_vllm_engine_cpu, extended to record prompts, answer from (prompt, seed) and count
prefix-cache hits / queries the way vLLM's Prometheus counters do (``vllm:prefix_cache_hits`` /
``vllm:prefix_cache_queries``, vllm/v1/metrics/loggers.py, read through ``LLM.get_metrics()``)."""

import random
import sys
import types

import pandas as pd
import pytest
import test_vllm_engine_cpu as cpu_fake
import torch

from cancel_cli.continuation import ContinuationEngine, Job, stream_key
from cancel_cli.sampling import SamplingParams

FakeLLM, _policy = cpu_fake.FakeLLM, cpu_fake._policy
fake_vllm = cpu_fake.fake_vllm  # the stand-in vllm module (fixture), reused

EOS = 1  # _policy().eos_id and the toy's EOS
BASE_HITS, BASE_QUERIES = 700, 1000  # counters before the engine exists (rollouts, other runs)


class RecordingLLM(FakeLLM):
    """Records every generate call (prompts, params); continuation tokens are a function of (prompt, seed,
    max_tokens) only, some end with EOS; the prefix-cache counters grow by (len(prompt) - 1, len(prompt)) for
    a prompt seen before and (0, len(prompt)) for a new one."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.prompts, self.seen = [], set()
        self.hits, self.queries = BASE_HITS, BASE_QUERIES

    def generate(self, prompts, sps, use_tqdm=False):
        self.prompts.append([list(p["prompt_token_ids"]) for p in prompts])
        self.calls.append(list(sps))
        outs = []
        for p, sp in zip(self.prompts[-1], sps):
            rng = random.Random(repr((p, sp.seed)))
            toks = [rng.randrange(3, 12) for _ in range(sp.max_tokens)]
            if rng.random() < 0.3:
                toks[rng.randrange(len(toks))] = EOS
                toks = toks[: toks.index(EOS) + 1]
            self.queries += len(p)
            self.hits += len(p) - 1 if tuple(p) in self.seen else 0
            self.seen.add(tuple(p))
            outs.append(types.SimpleNamespace(outputs=[types.SimpleNamespace(token_ids=tuple(toks))]))
        return outs

    def get_metrics(self):
        m = types.SimpleNamespace
        return [m(name="vllm:prefix_cache_queries", labels={"engine": "0"}, value=self.queries - 10),
                m(name="vllm:prefix_cache_queries", labels={"engine": "1"}, value=10),  # summed over engines
                m(name="vllm:prefix_cache_hits", labels={"engine": "0"}, value=self.hits),
                m(name="vllm:external_prefix_cache_hits", labels={}, value=10**9),  # another counter
                m(name="vllm:kv_cache_usage_perc", labels={}, value=0.5)]


@pytest.fixture
def llm_cls(fake_vllm, monkeypatch):
    monkeypatch.setattr(sys.modules["vllm"], "LLM", RecordingLLM)
    return RecordingLLM


def _jobs():
    """Jobs of two rollouts: both branches of tokens, an EOS first token and a spent budget (no request)."""
    jobs = []
    for src, n, first in [(0, 3, 7), (0, 5, 4), (1, 2, 9)]:
        for br, f in (("a", first), ("b", first + 1)):
            jobs += [Job(src, n, f, 4, stream_key(("tok", src, n), br, j)) for j in range(3)]
    return jobs + [Job(0, 4, EOS, 4, stream_key("eos", 0)), Job(1, 2, 5, 0, stream_key("spent", 0))]


IDS = {0: [2, 3, 4, 5, 6, 7, 8], 1: [9, 8, 7, 6]}


def _run(jobs, params=SamplingParams(0.7, 0.9, 96)):
    from cancel_cli.vllm_engine import VLLMContinuationEngine

    llm = RecordingLLM()
    eng = VLLMContinuationEngine(_policy(), llm)
    for src, ids in IDS.items():
        eng.ids[src] = ids  # what encode keeps (encode itself: test_encode_matches_the_torch_engine)
    got = {}
    eng.run(jobs, params, lambda j, toks: got.__setitem__(j, toks))
    return llm, eng, got


def test_all_jobs_go_in_one_generate_call_with_exact_prefixes_and_params(llm_cls):
    jobs = _jobs()
    llm, _, got = _run(jobs)
    assert len(llm.calls) == 1  # one generate for the whole run, not one per job
    decoded = [job for job in jobs if job.first != EOS and job.budget > 0]
    (prompts,), (sps,) = llm.prompts, llm.calls
    assert prompts == [IDS[job.source][: job.length] + [job.first] for job in decoded]  # s_t + first token
    for job, sp in zip(decoded, sps):
        assert (sp.n, sp.max_tokens, sp.top_k, sp.temperature, sp.top_p) == (1, job.budget, -1, 0.7, 0.9)
        assert sp.stop_token_ids == [EOS] and isinstance(sp.seed, int) and 0 <= sp.seed < 2**63
    assert sorted(got) == list(range(len(jobs)))  # every job reaches on_done once
    assert got[len(jobs) - 2] == [EOS] and got[len(jobs) - 1] == [5]  # done without a request
    for (j, job), p, sp in zip([(j, job) for j, job in enumerate(jobs) if job in decoded], prompts, sps):
        toks = got[j]
        assert toks[0] == job.first and 1 <= len(toks) - 1 <= job.budget  # [first] + sampled
        assert EOS not in toks[1:-1]


def test_seeds_come_from_job_keys_only(llm_cls):
    """Distinct per job, the two branches of a token apart, the same for the same keys, whatever the order."""
    from cancel_cli.vllm_engine import job_seed

    jobs = [job for job in _jobs() if job.first != EOS and job.budget > 0]
    llm, _, got = _run(jobs)
    seeds = [sp.seed for sp in llm.calls[0]]
    assert seeds == [job_seed(job.key) for job in jobs]
    assert len(set(seeds)) == len(jobs)
    a = {sp.seed for sp, job in zip(llm.calls[0], jobs) if job.source == 0 and job.length == 3 and job.first == 7}
    b = {sp.seed for sp, job in zip(llm.calls[0], jobs) if job.source == 0 and job.length == 3 and job.first == 8}
    assert len(a) == len(b) == 3 and not a & b  # the branches of one token never share a seed
    by_key = {job.key: (seed, got[j]) for j, (job, seed) in enumerate(zip(jobs, seeds))}
    shuffled = jobs[:]
    random.Random(0).shuffle(shuffled)
    llm2, _, got2 = _run(shuffled)
    assert {job.key: (sp.seed, got2[j]) for j, (job, sp) in enumerate(zip(shuffled, llm2.calls[0]))} == by_key
    assert job_seed(2**64 - 1) == 2**63 - 1 and job_seed(5) == 5  # int64 range, identity below it


def test_encode_matches_the_torch_engine(toy, fake_vllm):
    from cancel_cli.vllm_engine import VLLMContinuationEngine

    ids = toy.encode("Add 58+67.\nColumns: 8+7+0=15")
    pos = [3, 11, len(ids)]
    want = ContinuationEngine(toy).encode(0, ids, pos)
    eng = VLLMContinuationEngine(toy, FakeLLM())
    got = eng.encode(0, ids, pos)
    assert eng.ids[0] == ids and set(got) == set(pos)
    for n in pos:
        assert got[n].dtype == torch.float64 and torch.allclose(got[n], want[n], atol=1e-5)
    eng.release(0)
    assert 0 not in eng.ids


def test_prefix_cache_counts_and_hit_rate_delta(llm_cls):
    from cancel_cli.vllm_engine import prefix_cache_counts

    llm, eng, _ = _run(_jobs())
    prompts = llm.prompts[0]
    hits = sum(len(p) - 1 for i, p in enumerate(prompts) if p in prompts[:i])
    assert prefix_cache_counts(llm) == (BASE_HITS + hits, BASE_QUERIES + sum(map(len, prompts)))
    assert eng.prefix_cache_hit_rate == pytest.approx(hits / sum(map(len, prompts)))  # since the engine was built
    assert prefix_cache_counts(FakeLLM()) is None  # no get_metrics

    class NoStats(FakeLLM):
        def get_metrics(self):
            raise AssertionError("Stat logging disabled")

    assert prefix_cache_counts(NoStats()) is None


def test_engine_follows_the_sampling_engine(toy, llm_cls, monkeypatch):
    from cancel_cli.analysis.value import ValueConfig
    from cancel_cli.analysis.value_estimate import continuation_engine
    from cancel_cli.vllm_engine import VLLMContinuationEngine

    monkeypatch.setattr(toy, "_vllm_sampler", None, raising=False)  # the session's toy gets its own fake engine
    eng = continuation_engine(toy, ValueConfig(engine="vllm"))
    assert isinstance(eng, VLLMContinuationEngine) and eng.llm is toy._vllm_sampler.llm  # one LLM per policy
    assert continuation_engine(toy, ValueConfig(engine="vllm")).llm is eng.llm
    kw = eng.llm.kw
    assert kw["enable_prefix_caching"] is True and kw["disable_log_stats"] is False
    assert type(continuation_engine(toy, ValueConfig(engine="torch"))) is ContinuationEngine


def test_token_values_on_vllm_one_call_per_chunk_and_hit_rate(toy, toy_batch, tmp_path, llm_cls, monkeypatch):
    from cancel_cli.analysis.value import ValueConfig
    from cancel_cli.analysis.value_estimate import token_values
    from cancel_cli.store import Store

    monkeypatch.setattr(toy, "_vllm_sampler", None, raising=False)
    toks = pd.DataFrame({"rollout": [0, 0, 2], "position": [1, 3, 2]})
    M = 4
    cfg = ValueConfig(engine="vllm", M=M, chunk=2, max_new_tokens=64)
    vals = token_values(toy, toy_batch, toks, cfg, Store(tmp_path), reward_fn=lambda t, a: [0.0] * len(t))
    llm = toy._vllm_sampler.llm
    assert [len(c) for c in llm.calls] == [2 * 2 * M, 2 * M]  # chunks of 2 tokens: both branches, M each
    first = llm.prompts[0]
    for i, (r, t) in enumerate([(0, 1), (0, 3)]):
        p = toy_batch.prompt_ids[r][toy_batch.prompt_mask[r].bool()].tolist()
        resp = toy_batch.response_ids[r][toy_batch.response_mask[r].bool()].tolist()
        a = first[i * 2 * M : i * 2 * M + M]
        assert a == [p + resp[: t + 1]] * M  # branch a: s_t + o_t
        b = first[i * 2 * M + M : (i + 1) * 2 * M]
        assert all(q[:-1] == p + resp[:t] and q[-1] != resp[t] for q in b)  # branch b: s_t + a, a != o_t
        assert all(sp.max_tokens == 64 - t - 1 for sp in llm.calls[0][i * 2 * M : (i + 1) * 2 * M])
    seeds = [sp.seed for c in llm.calls for sp in c]
    assert len(set(seeds)) == len(seeds)
    queries = sum(len(p) for c in llm.prompts for p in c)
    hits = llm.hits - BASE_HITS
    assert vals.attrs["prefix_cache_hit_rate"] == pytest.approx(hits / queries) and 0 < hits < queries
    torch_cfg = ValueConfig(engine="torch", M=2, chunk=2, max_new_tokens=64, decode_width=8)
    zero = lambda texts, answers: [0.0] * len(texts)  # noqa: E731
    torch_vals = token_values(toy, toy_batch, toks, torch_cfg, Store(tmp_path / "t"), reward_fn=zero)
    assert torch_vals.attrs["prefix_cache_hit_rate"] is None


def test_mc_value_summary_records_the_hit_rate(toy_batch, tmp_path, llm_cls, monkeypatch):
    from cancel_cli.analysis import value
    from cancel_cli.store import Store

    monkeypatch.setattr(value, "batch_for", lambda cfg, policy, store, gen: toy_batch)
    run, summary = value.run(value.ValueConfig(engine="vllm", device="cpu", M=2, per_cell=2, chunk=4, seed=1),
                             Store(tmp_path))
    (llm,) = llm_cls.instances  # the policy's one engine (rollouts came from the stored batch)
    queries = sum(len(p) for c in llm.prompts for p in c)
    assert len(llm.calls) >= 2 and summary.prefix_cache_hit_rate == pytest.approx((llm.hits - BASE_HITS) / queries)
    assert value.ValueSummary.of(run).prefix_cache_hit_rate == summary.prefix_cache_hit_rate
    old = {k: v for k, v in summary.to_json().items() if k != "prefix_cache_hit_rate"}  # written before the field
    assert value.ValueSummary.from_json(old).prefix_cache_hit_rate is None
