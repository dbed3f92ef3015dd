"""Item 12 on CPU: the vLLM engine's request seeding and shutdown against a stand-in ``vllm`` module that
records what it is given, and vLLM's own rule for child seeds (copy j of a request with seed s gets s + j,
``vllm/v1/engine/parallel_sampling.py``)."""

import sys
import types

import pytest
import torch

from cancel_cli.sampling import SamplingParams


class FakeLLM:
    instances = []

    def __init__(self, **kw):
        self.kw, self.calls, self.shut = kw, [], 0
        self.llm_engine = types.SimpleNamespace(engine_core=types.SimpleNamespace(shutdown=self._shutdown))
        FakeLLM.instances.append(self)

    def _shutdown(self):
        self.shut += 1

    def generate(self, prompts, sps, use_tqdm=False):
        self.calls.append(sps)
        out = types.SimpleNamespace
        return [out(outputs=[out(token_ids=[5], logprobs=None) for _ in range(sp.n)]) for sp in sps]


@pytest.fixture
def fake_vllm(monkeypatch):
    class VSP:
        def __init__(self, **kw):
            self.__dict__.update(kw)

    mod = types.ModuleType("vllm")
    mod.LLM, mod.SamplingParams = FakeLLM, VSP
    inputs = types.ModuleType("vllm.inputs")
    inputs.TokensPrompt = dict
    monkeypatch.setitem(sys.modules, "vllm", mod)
    monkeypatch.setitem(sys.modules, "vllm.inputs", inputs)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    FakeLLM.instances.clear()
    return FakeLLM


def _policy():
    return types.SimpleNamespace(model=types.SimpleNamespace(name_or_path="/m"), eos_id=1)


def test_default_requests_are_unseeded_so_vllm_uses_its_batched_sampler(fake_vllm):
    from cancel_cli.vllm_engine import VLLMSampler

    s = VLLMSampler(_policy(), seed=7)
    s.continue_prefixes([[1, 2], [3]], 4, SamplingParams(1.0, 1.0, 3), torch.Generator().manual_seed(0))
    llm = fake_vllm.instances[-1]
    assert llm.kw["seed"] == 7 and all(sp.seed is None for sp in llm.calls[-1])


def test_seeded_requests_give_every_prompt_copy_its_own_stream(fake_vllm):
    """mc-value continues s and s+a with M copies each: no (prompt, copy) may share a seed with another."""
    from cancel_cli.vllm_engine import VLLMSampler

    s = VLLMSampler(_policy(), seeded=True)
    m = 8
    s.continue_prefixes([[1]] * 6, m, SamplingParams(1.0, 1.0, 3), torch.Generator().manual_seed(0))
    child = [sp.seed + j for sp in fake_vllm.instances[-1].calls[-1] for j in range(sp.n)]  # vLLM: seed + j
    assert len(set(child)) == 6 * m


def test_close_shuts_the_engine_down_once(fake_vllm):
    from cancel_cli.vllm_engine import VLLMSampler

    s = VLLMSampler(_policy())
    s.close()
    s.close()
    assert fake_vllm.instances[-1].shut == 1 and s.llm is None
