"""The vLLM engine (GPU only): skipped without CUDA and vLLM; benchmarks/gpu_eval_smoke.sh runs it."""

import importlib.util

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available() or importlib.util.find_spec("vllm") is None,
                                reason="vLLM engine needs CUDA and vllm")


def test_vllm_first_token_distribution_matches_softmax():
    from scipy import stats

    from cancel_cli.config import load_policy
    from cancel_cli.sampling import SamplingParams
    from cancel_cli.vllm_engine import VLLMSampler

    pol = load_policy("toy", "cuda")
    prefix = pol.encode("Add 58+67.\n")
    with torch.no_grad():
        probs = torch.softmax(pol.model(input_ids=torch.tensor([prefix], device="cuda")).logits[0, -1].double(), -1).cpu().numpy()
    out = VLLMSampler(pol).continue_prefixes([prefix], 8000, SamplingParams(1.0, 1.0, 1), torch.Generator().manual_seed(0))[0]
    counts = np.bincount([o[0] for o in out], minlength=len(probs))
    keep = probs * 8000 >= 5
    obs = np.append(counts[keep], counts[~keep].sum()).astype(float)
    exp = np.append(probs[keep], probs[~keep].sum()) * 8000
    assert stats.chisquare(obs, exp / exp.sum() * obs.sum()).pvalue > 1e-3
