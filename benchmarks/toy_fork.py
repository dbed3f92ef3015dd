"""toy-fork: its recorded build time, a timed truncated rebuild, and per-stage times on toy-fork vs toy
(ratio toy-fork / toy in the same run): a GRPO rollout batch (32 prompts x 8), logprobs + entropies of
that batch, and one GRPO training step.  Usage: python benchmarks/toy_fork.py [--rebuild]
(--rebuild times a full `cancel toy build --kind fork` into a temporary folder: minutes).
"""

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from cancel_cli.rollout import ProblemSource, RolloutConfig, sample_batch
from cancel_cli.config import FORK_DIR, load_policy
from cancel_cli.console import SETTINGS
from cancel_cli.grpo.trainer import Trainer, TrainConfig
from cancel_cli.store import Store
from cancel_cli.toy_fork import TRUNCATED_STEPS, build_fork


def main():
    torch.set_num_threads(2)
    SETTINGS.quiet = True
    facts = json.loads((FORK_DIR / "build.json").read_text())
    print(f"recorded build: {facts['steps']} steps, training {facts['train_seconds']} s, profile "
          f"{facts['profile_seconds']} s, total {facts['build_seconds']} s (plus the truncated-build record)")
    with tempfile.TemporaryDirectory() as d:
        t = time.perf_counter()
        build_fork(Path(d), seed=facts["seed"], stop_at=TRUNCATED_STEPS, log=lambda *_: None)
        per_step = (time.perf_counter() - t) / TRUNCATED_STEPS
    print(f"truncated rebuild: {per_step:.3f} s/step (incl. start-up) -> ~{per_step * facts['steps']:.0f} s of "
          f"training steps for the full build, evaluations excluded")
    if "--rebuild" in sys.argv:
        with tempfile.TemporaryDirectory() as d:
            t = time.perf_counter()
            f = build_fork(Path(d), seed=facts["seed"], log=lambda *_: None)
            print(f"full rebuild: {time.perf_counter() - t:.0f} s (stopped at step {f['steps']}, "
                  f"same weights as shipped: {f['weights_sha256'] == facts['weights_sha256']})")


    def stages(name: str, reps: int = 3) -> dict:
        pol = load_policy(name)
        cfg = RolloutConfig(model=name, prompts=32, n=8, seed=3)
        probs = ProblemSource("toy", 3).take(32)
        out = {"rollout 32x8": [], "logprobs+entropy": [], "GRPO step": []}
        for r in range(reps):
            t = time.perf_counter()
            batch = sample_batch(pol, probs, cfg, torch.Generator().manual_seed(r))
            out["rollout 32x8"].append(time.perf_counter() - t)
            t = time.perf_counter()
            pol.token_stats(batch.prompt_ids, batch.prompt_mask, batch.response_ids, batch.response_mask)
            out["logprobs+entropy"].append(time.perf_counter() - t)
        tr = Trainer(TrainConfig(model=name, steps=reps, val_sets=[], checkpoint_every=0), pol,
                     Store(tempfile.mkdtemp()).new_run("train", {}))
        for s in range(1, reps + 1):
            tr.step = s
            t = time.perf_counter()
            tr.train_step()
            out["GRPO step"].append(time.perf_counter() - t)
        return {k: statistics.median(v) for k, v in out.items()}


    fork, toy = stages("toy-fork"), stages("toy")
    for k in fork:
        print(f"{k:17s} toy-fork {fork[k]:.2f} s  toy {toy[k]:.2f} s  ratio {fork[k] / toy[k]:.2f}")
    print("(2 cores shared with other sessions: absolute times are contended; compare the ratios)")


if __name__ == "__main__":  # spawned reward workers import this file
    main()
