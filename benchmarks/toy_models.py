"""The embedded toys: the default toy's (fork kind) recorded build time, a timed truncated rebuild, and
per-stage times on toy vs toy-plain (ratio toy / toy-plain in the same run): a GRPO rollout batch (32
prompts x 8), logprobs + entropies of that batch, and one GRPO training step.

Usage: python benchmarks/toy_models.py [--rebuild] [--reports PLAIN_REPORT.md TOY_REPORT.md]
  --rebuild  times a full `cancel toy build` into a temporary folder (minutes) and compares its weights;
  --reports  prints every experiment's stage time (CPU s per seed, mean) from the stage tables of two
             `cancel reproduce` REPORTs (one per model, the same preset and workers) and their ratio.
"""

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from cancel_cli.rollout import ProblemSource, RolloutConfig, sample_batch
from cancel_cli.config import TOY_DIR, load_policy
from cancel_cli.console import SETTINGS
from cancel_cli.grpo.trainer import Trainer, TrainConfig
from cancel_cli.store import Store
from cancel_cli.toy_fork import TRUNCATED_STEPS, build_fork


def stage_cpu_seconds(report: Path) -> dict[str, float]:
    """Mean CPU seconds per seed of every stage, from the stage table in a reproduce REPORT.md."""
    out, rows = {}, False
    for line in Path(report).read_text().splitlines():
        if line.startswith("| stage | wall s per seed"):
            rows = True
        elif rows and line.startswith("| ") and not line.startswith("|---"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            cpu = [float(x) for x in cells[3].split(",")]
            out[cells[0]] = sum(cpu) / len(cpu)
        elif rows and not line.startswith("|"):
            break
    if not out:
        raise SystemExit(f"{report}: no stage table (was it written by `cancel reproduce`?)")
    return out


def compare_reports(plain_report: str, toy_report: str) -> None:
    plain, toy = stage_cpu_seconds(Path(plain_report)), stage_cpu_seconds(Path(toy_report))
    both = [k for k in plain if k in toy]
    print(f"{'stage':34s} {'toy-plain':>9s} {'toy':>8s}  ratio   (CPU s per seed, mean)")
    for k in both:
        print(f"{k:34s} {plain[k]:9.0f} {toy[k]:8.0f}  {toy[k] / max(plain[k], 0.5):.2f}")
    sp, st = sum(plain[k] for k in both), sum(toy[k] for k in both)
    print(f"{'all stages':34s} {sp:9.0f} {st:8.0f}  {st / sp:.2f}")
    for path in (plain_report, toy_report):
        total = [line for line in Path(path).read_text().splitlines() if line.startswith("Total wall time")]
        print(f"{path}: {total[0].split('(')[0].strip() if total else 'no total'}")


def main():
    if "--reports" in sys.argv:
        i = sys.argv.index("--reports")
        compare_reports(sys.argv[i + 1], sys.argv[i + 2])
        return
    torch.set_num_threads(2)
    SETTINGS.quiet = True
    facts = json.loads((TOY_DIR / "build.json").read_text())
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


    toy, plain = stages("toy"), stages("toy-plain")
    for k in toy:
        print(f"{k:17s} toy {toy[k]:.2f} s  toy-plain {plain[k]:.2f} s  ratio {toy[k] / plain[k]:.2f}")
    print("(2 cores shared with other sessions: absolute times are contended; compare the ratios)")


if __name__ == "__main__":  # spawned reward workers import this file
    main()
