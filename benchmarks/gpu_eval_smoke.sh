#!/usr/bin/env bash
# GPU check for the vLLM engine (run on a device machine): the toy model sampled by vLLM vs torch.
# Prints accuracies under both engines (they must agree within sampling noise) and vLLM's speed-up.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q -e ".[gpu,test]" >/dev/null
python - <<'PY'
import time, torch
from cancel_cli.config import load_policy
from cancel_cli.evaluation import benchmark_problems, sample_and_score, score_frame
from cancel_cli.sampling import TorchSampler
from cancel_cli.vllm_engine import VLLMSampler
pol = load_policy("toy", "cuda", "float32")
probs = benchmark_problems("toy-3digit", 512)
for name, s in (("torch", TorchSampler(pol)), ("vllm", VLLMSampler(pol))):
    t = time.time()
    df = sample_and_score(pol, probs, 8, 0.6, 0.95, 96, "toy", torch.Generator().manual_seed(0), s)
    print(f"{name}: avg@8 {score_frame(df, 8):.3f}  ({time.time() - t:.1f} s for {len(df)} samples)")
PY
python -m pytest -q tests -k vllm
