"""Monte-Carlo token values: continuations/s of the shared-prefix sampler vs naive per-token
``model.generate`` (num_return_sequences=M, top_k=0: the prefix is re-encoded for every continuation);
target >= 3x on the toy.  Then the value-cache hit rate of budget sweeps sharing one pool.
Usage: python benchmarks/mc_value.py
"""

import tempfile
import time

import torch

from cancel_cli.analysis import budget
from cancel_cli.rollout import ProblemSource, RolloutConfig, sample_batch
from cancel_cli.config import load_policy
from cancel_cli.console import SETTINGS
from cancel_cli.policy import left_pad
from cancel_cli.sampling import SamplingParams, TorchSampler
from cancel_cli.store import Store

torch.set_num_threads(2)
SETTINGS.quiet = True
pol = load_policy("toy")
M, K = 128, 8
# real mc-value states: s_t and s_t + a_t at a random position t of sampled toy rollouts
batch = sample_batch(pol, ProblemSource("toy", 3).take(K), RolloutConfig(prompts=K, n=1), torch.Generator().manual_seed(3))
rng = torch.Generator().manual_seed(4)
prefixes = []
for i in range(K):
    prompt = batch.prompt_ids[i][batch.prompt_mask[i].bool()].tolist()
    resp = batch.response_ids[i][batch.response_mask[i].bool()].tolist()
    t = int(torch.randint(1, len(resp) - 1, (1,), generator=rng))
    prefixes += [prompt + resp[:t], prompt + resp[: t + 1]]
print(f"{len(prefixes)} prefixes, mean length {sum(map(len, prefixes)) / len(prefixes):.0f} tokens, M={M}")
params = SamplingParams(1.0, 1.0, 96)

t = time.perf_counter()
TorchSampler(pol, max_rows=1024).continue_prefixes(prefixes, M, params, torch.Generator().manual_seed(0))
t_ours = time.perf_counter() - t

t = time.perf_counter()
with torch.no_grad():
    for pre in prefixes:
        ids, mask = left_pad([pre], pol.pad_id)
        pol.model.generate(input_ids=ids, attention_mask=mask, do_sample=True, top_k=0, top_p=1.0, temperature=1.0,
                           max_new_tokens=96, num_return_sequences=M, pad_token_id=pol.pad_id, eos_token_id=pol.eos_id)
t_naive = time.perf_counter() - t
n = len(prefixes) * M
print(f"shared-prefix: {n / t_ours:.0f} continuations/s; naive generate: {n / t_naive:.0f} continuations/s; "
      f"speed-up {t_naive / t_ours:.2f}x (target >= 3x)")

store = Store(tempfile.mkdtemp())
for axis in ("batch-size", "rollout-n", "reward-mix"):
    cfg = budget.BudgetConfig(axis=axis, M=32, candidates=24, values="16,32" if axis == "batch-size" else "2,4" if axis == "rollout-n" else "2,6")
    run, summary = budget.run(cfg, store)
    print(f"budget-sweep {axis}: value-cache hit rate {summary['cache_hit_rate']:.2f}")
