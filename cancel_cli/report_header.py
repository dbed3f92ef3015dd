"""The head of REPORT.md: model and its entropy profile, seeds, preset, the across-seed method, stage
times and package versions."""

from __future__ import annotations

import math
import time

import numpy as np

from .report_stats import METHOD
from .scope import per_seed
from .store import package_versions

HIGH_ENTROPY = 0.672  # nats: the high-entropy threshold the entropy-profile line reports (top ~20% in Qwen3 models)
CONFIDENT_P = 0.99


def entropy_profile(tokens) -> dict:
    """Share of response tokens with entropy > 0.672 nats and with p(o_t) > 0.99, from a per-token table
    (``entropy`` in nats, ``old_logprob`` = log p under the policy before the update)."""
    ent = tokens.entropy.to_numpy(dtype=float)
    p = np.exp(tokens.old_logprob.to_numpy(dtype=float))
    return {"tokens": len(tokens), "high_entropy": float(np.mean(ent > HIGH_ENTROPY)) if len(ent) else math.nan,
            "confident": float(np.mean(p > CONFIDENT_P)) if len(p) else math.nan,
            "mean_entropy": float(ent.mean()) if len(ent) else math.nan}


def profile_lines(store) -> list[str]:
    """Measured on the first step of each seed's flip run (the model before any update, rollout temperature)."""
    rows = []
    for seed, run in per_seed(store, "flip").items():
        if not run.has_table("tokens"):
            continue
        t = run.read_table("tokens")
        rows.append((seed, run.id, entropy_profile(t[t.step == t.step.min()])))
    if not rows:
        return ["Entropy profile: n/a (needs a done `cancel flip` run with its per-token table)."]
    hi = np.mean([r[2]["high_entropy"] for r in rows])
    cf = np.mean([r[2]["confident"] for r in rows])
    per = "; ".join(f"seed {s}: {d['high_entropy']:.3f} / {d['confident']:.3f} of {d['tokens']} tokens ({rid})"
                    for s, rid, d in rows)
    return [f"Entropy profile of the model (first step of the flip runs, rollout temperature): {hi:.3f} of response "
            f"tokens have entropy > {HIGH_ENTROPY} nats and {cf:.3f} have p > {CONFIDENT_P} (mean over seeds; {per})."]


def header_lines(store, model: str, preset: str, timings: dict, seeds, total_seconds, cpu_seconds=None) -> list[str]:
    seeds_txt = ", ".join(map(str, seeds)) if seeds else "as found in the store"
    out = [f"Model `{model}`, preset `{preset}`, seeds {seeds_txt}; written {time.strftime('%Y-%m-%d %H:%M:%S')} from "
           f"the store at `{store.root}`.  Every number below is read from a run in that store; each claim's rule was "
           "fixed before the runs and is stated before its numbers.", ""]
    out += profile_lines(store) + [""]
    out += [f"*Across seeds:* {METHOD}", ""]
    if timings:
        tot = f"{total_seconds:.0f} s" if total_seconds is not None else "n/a"
        cpu_seconds = cpu_seconds or {}
        out += [f"Total wall time {tot} (stages plus figures and this report).  CPU seconds are this process's "
                "(all its threads); on shared cores wall time overstates the cost.", "",
                "| stage | wall s per seed | total wall s | CPU s per seed |", "|---|---|---|---|"]
        for name, secs in timings.items():
            secs = secs if isinstance(secs, (list, tuple)) else [secs]
            c = cpu_seconds.get(name, [])
            out.append(f"| {name} | {', '.join(f'{x:.0f}' for x in secs)} | {sum(secs):.0f} | "
                       f"{', '.join(f'{x:.0f}' for x in c) or 'n/a'} |")
        out.append("")
    out += ["Packages: " + ", ".join(f"{k} {v}" for k, v in package_versions().items()) + ".", ""]
    return out
