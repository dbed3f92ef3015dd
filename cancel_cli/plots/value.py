"""Fig. 5 (token value by class; entropy gap), Fig. 6 (budget), Fig. 11 (repeated updates)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from ..analysis.value import ValueSummary
from .style import PALETTE, need, source_note


def fig5(store, run_id=None):
    mc = need(store, "mc-value", run_id)
    s = ValueSummary.of(mc)
    eg = store.latest("entropy-gap", from_run=mc.id) or store.latest("entropy-gap")
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.3))
    ax = axes[0]
    x = np.arange(2)
    for j, cls in enumerate(("boosted", "suppressed")):
        cells = [s.value[f"{cls}_{o}"] for o in ("pos", "neg")]  # mean and SE (token spread + MC noise)
        ax.bar(x + (j - 0.5) * 0.38, [c["mean"] for c in cells], 0.38, yerr=[1.96 * c["se"] for c in cells], capsize=4,
               color=PALETTE[cls], label=cls)
    ax.set_xticks(x, ["positive rollouts", "negative rollouts"])
    ax.axhline(0, color="k", lw=0.8)
    ax.set_ylabel(f"MC token value ({s.estimator} estimator), mean ± 95% CI")
    ax.set_title(f"(a) token value by class (M={s.M}, {s.per_cell} tokens per cell)")
    ax.legend()
    ax = axes[1]
    runs = [mc]
    if eg is not None:
        c = eg.read_table("curve")
        ax.plot(c.k, c.gap, marker="o", color=PALETTE["grpo"])
        ax.fill_between(c.k, c.ci_low, c.ci_high, alpha=0.2, color=PALETTE["grpo"])
        ax.axhline(0, color="k", lw=0.8)
        runs.append(eg)
    else:
        ax.text(0.5, 0.5, "run `cancel entropy-gap`", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("top-k% highest-entropy tokens")
    ax.set_ylabel("value gap (boosted − suppressed)")
    ax.set_title("(b) value gap vs entropy subset (bootstrap 95% CI)")
    fig.tight_layout()
    source_note(fig, *runs)
    return fig, None


def _sweep(ax, run, xlabel, title):
    sw = run.read_table("sweep")
    for q, ls in ((25, "-"), (50, "--"), (100, ":")):
        g = sw[sw.subset == q].sort_values("value")
        ax.errorbar(g.value, g.gap, yerr=1.96 * g.se if "se" in g else None, marker="o", ls=ls, capsize=3,
                    label=f"top-{q}% |value| (±95% CI)")
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("value gap (boosted − suppressed)")
    ax.set_title(title)
    ax.legend()


def fig6(store, run_id=None):
    bs = need(store, "budget-sweep", run_id, axis="batch-size") if not run_id else need(store, "budget-sweep", run_id)
    rn = store.latest("budget-sweep", axis="rollout-n")
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.3))
    _sweep(axes[0], bs, "batch size (prompts)", "(a) value gap vs batch size")
    runs = [bs]
    if rn is not None:
        _sweep(axes[1], rn, "rollout-n", "(b) value gap vs rollout-n")
        runs.append(rn)
    else:
        axes[1].text(0.5, 0.5, "run `cancel budget-sweep --axis rollout-n`", ha="center", transform=axes[1].transAxes)
    fig.tight_layout()
    source_note(fig, *runs)
    return fig, None


def fig7b(ax, store):
    rm = store.latest("budget-sweep", axis="reward-mix")
    if rm is None:
        ax.text(0.5, 0.5, "run `cancel budget-sweep --axis reward-mix`", ha="center", transform=ax.transAxes)
        ax.set_title("(b) value gap vs reward mix")
        return None
    _sweep(ax, rm, f"positive rollouts per group of {rm.config.get('n', 8)}", "(b) value gap vs reward mix")
    return rm


def fig11(store, run_id=None):
    if run_id:
        mc = need(store, "mc-value", run_id)
    else:
        mc = store.latest("mc-value", where=lambda r: r.config.get("repeat", 1) > 1)
        if mc is None:
            from ..errors import UserError

            raise UserError("needs a done `mc-value` run with --repeat K > 1; make one with `cancel mc-value --repeat 5`")
    rep = mc.read_table("repeat")
    fig, ax = plt.subplots(figsize=(6, 4))
    for o, c in (("all", PALETTE["grpo"]), ("pos", PALETTE["pos"]), ("neg", PALETTE["neg"])):
        ax.plot(rep.updates, rep[f"gap_{o}"], marker="o", color=c, label=o)
        ax.fill_between(rep.updates, rep[f"gap_{o}_ci_low"], rep[f"gap_{o}_ci_high"], alpha=0.12, color=c)
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xlabel("repeated updates on the fixed batch")
    ax.set_ylabel("value gap (boosted − suppressed)")
    ax.set_title("Fig. 11: value gap after repeated updates")
    ax.legend(title="origin")
    fig.tight_layout()
    source_note(fig, mc)
    return fig, None
