"""GRPO step time on the toy: baseline (verl-default) vs --qb vs --rb, as ratios in one run.
Target: QB overhead <= 5%.  Usage: python benchmarks/train_step.py [steps]
"""

import statistics
import sys
import tempfile
import time

import torch

from cancel_cli.config import load_policy
from cancel_cli.grpo.trainer import Trainer, TrainConfig
from cancel_cli.store import Store


def main():
    torch.set_num_threads(2)
    steps = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    store = Store(tempfile.mkdtemp())
    times = {}
    for label, kw in (("baseline", {}), ("qb", {"plan": "query-preserved"}), ("rb", {"rb": True, "tau": 0.25})):
        cfg = TrainConfig(steps=steps, val_sets=[], checkpoint_every=0, **kw)
        run = store.new_run("train", {})
        tr = Trainer(cfg, load_policy("toy"), run)
        per = []
        for s in range(1, steps + 1):
            tr.step = s
            t = time.perf_counter()
            row = tr.train_step()
            per.append(time.perf_counter() - t)
        times[label] = (statistics.median(per), row)
    base = times["baseline"][0]
    for label, (t, row) in times.items():
        extra = f", RB utilisation {row.get('rb_utilization', float('nan')):.2f}" if label == "rb" else ""
        print(f"{label:9s} median step {t:.2f} s  ratio {t / base:.3f}{extra}")
    print(f"QB overhead: {100 * (times['qb'][0] / base - 1):+.1f}% (target <= 5%)")


if __name__ == "__main__":  # spawned reward workers import this file
    main()
