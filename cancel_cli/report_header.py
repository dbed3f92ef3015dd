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


def card_lines(model: str) -> list[str]:
    """The embedded toy's profile as measured when it was built (its model card, ``cancel toy info``): T = 1 on
    512 held-out prompts; for the toy (fork kind) also the routes and the share of mixed GRPO groups, with the targets it
    misses named, so a reader knows what kind of model the verdicts are about."""
    import json
    from pathlib import Path

    from .config import MODELS
    from .tasks import TOYS

    if model not in TOYS:
        return []
    path = Path(MODELS[model]) / "build.json"
    try:
        facts = json.loads(path.read_text())
    except (OSError, ValueError):
        return [f"Model card of `{model}`: not found ({path}); `cancel toy build` writes it."]
    prof = facts.get("profile")
    if not prof:  # the plain toy records accuracy and an entropy profile of its own kind
        ep = facts.get("entropy_profile", {})
        return [f"Model card of `{model}` (built by `cancel toy build --kind plain --seed {facts.get('seed')}`): accuracy at T=1 on 512 "
                f"held-out prompts {facts.get('accuracy_t1_512', math.nan):.3f}; mean token entropy "
                f"{ep.get('mean_entropy_all', math.nan):.3f} nats; share of tokens with entropy > 0.1 nats "
                f"{ep.get('share_gt_0.1_all', math.nan):.3f}.  It has no forking decisions (errors are carry slips): see "
                "`--model toy`.", ""]
    from .toy_fork import ROUTES, check_targets

    ok = check_targets(prof)
    routes = ", ".join(f"{r} {prof[f'route_{r}']['share']:.2f} (accuracy {prof[f'route_{r}']['accuracy']:.2f})"
                       for r in ROUTES if f"route_{r}" in prof)
    missed = [k for k, v in ok.items() if not v]
    split = (f" (digits {prof['high_entropy_at_digits']:.3f}, route letters and wording "
             f"{prof['high_entropy_elsewhere']:.3f})" if "high_entropy_at_digits" in prof else "")
    return [f"Model card of `{model}` (T=1, {prof.get('prompts')} held-out prompts): accuracy {prof['accuracy']:.3f}; "
            f"{prof['share_entropy_gt_0.672']:.3f} of response tokens with entropy > {HIGH_ENTROPY} nats{split}; "
            f"{prof['share_p_gt_0.99']:.3f} with p > {CONFIDENT_P}; routes {routes}; mixed GRPO groups (n=8) "
            f"{prof['mixed_groups_n8']:.3f}.  Targets of the toy's design "
            + ("all met." if not missed else "missed: " + ", ".join(missed) + "."), ""]


def header_lines(store, model: str, preset: str, timings: dict, seeds, total_seconds, cpu_seconds=None,
                 workers: int = 1, reduced: list[str] | None = None) -> list[str]:
    seeds_txt = ", ".join(map(str, seeds)) if seeds else "as found in the store"
    out = [f"Model `{model}`, preset `{preset}`, seeds {seeds_txt}; written {time.strftime('%Y-%m-%d %H:%M:%S')} from "
           f"the store at `{store.root}`.  Every number below is read from a run in that store; each claim's rule was "
           "fixed before the runs and is stated before its numbers.", ""]
    out += card_lines(model) + profile_lines(store) + [""]
    out += [f"*Across seeds:* {METHOD}", ""]
    if reduced:
        out += ["Sizes reduced in this reproduce (the per-command presets are larger; each claim's interval shows the "
                "resolution that was kept):", ""] + [f"- {r}" for r in reduced] + [""]
    if timings:
        tot = f"{total_seconds:.0f} s" if total_seconds is not None else "n/a"
        cpu_seconds = cpu_seconds or {}
        par = (f"Stages ran on {workers} single-threaded worker processes at once, so stage wall times overlap and "
               "do not add up to the total.  " if workers > 1 else "")
        out += [f"Total wall time {tot} (stages plus figures and this report).  {par}CPU seconds are the stage's process's "
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
