"""Fig. 1 (token flipping), Fig. 4 (positive-only vs GRPO by token category), Fig. 9 (across models)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd

from .style import PALETTE, need, source_note

CLS = ("boosted", "suppressed", "stable")


def _ratios(ax, df, sign, title):
    for c in CLS:
        ax.plot(df.step, df[f"{sign}_{c}"], marker="o", ms=3, color=PALETTE[c], label=c)
    ax.set_title(title)
    ax.set_xlabel("training step")
    ax.set_ylabel("token ratio")
    ax.set_ylim(0, 1)


def fig1(store, run_id=None):
    flip = need(store, "flip", run_id)
    steps = flip.read_table("steps")
    model = steps.model.iloc[0]
    s = steps[steps.model == model].sort_values("step")
    po = store.latest("positive-only")
    fig, axes = plt.subplots(1, 4, figsize=(18, 3.8))
    _ratios(axes[0], s, "pos", f"(a) positive rollouts (A>0), {model}")
    _ratios(axes[1], s, "neg", "(b) negative rollouts (A<0)")
    axes[0].legend(loc="center right")
    ax = axes[2]
    ax.plot(s.step, s.pos_mean_abs_delta, marker="o", ms=3, color=PALETTE["pos"], label="A>0")
    ax.plot(s.step, s.neg_mean_abs_delta, marker="o", ms=3, color=PALETTE["neg"], label="A<0")
    ax.set_title("(c) update magnitude")
    ax.set_xlabel("training step")
    ax.set_ylabel(r"mean $|\Delta \log p|$")
    ax.legend()
    ax = axes[3]
    runs = [flip]
    if po is not None:
        tr = po.read_table("training")
        for v, g in tr.groupby("variant"):
            g = g.sort_values("step")
            ax.plot(g.step, g.pos_suppressed, marker="o", ms=3, color=PALETTE[v], label=f"{v}: A>0 suppressed")
            ax.plot(g.step, g.neg_boosted, marker="s", ms=3, ls="--", color=PALETTE[v],
                    label=f"{v}: A<0 boosted" + (" (no loss: coupling only)" if v == "positive_only" else ""))
        ax.set_title("(d) flips: positive-only vs GRPO training")
        ax.legend(fontsize=7)
        runs.append(po)
    else:
        ax.text(0.5, 0.5, "run `cancel positive-only`\nfor panel (d)", ha="center", va="center", transform=ax.transAxes)
        ax.set_title("(d) flip ratios: positive-only vs GRPO training")
    ax.set_xlabel("training step")
    ax.set_ylabel("flipped token ratio")
    ax.set_ylim(0, 1)
    fig.tight_layout()
    source_note(fig, *runs)
    return fig, None


def fig9(store, run_id=None):
    flip = need(store, "flip", run_id)
    steps = flip.read_table("steps")
    models = list(dict.fromkeys(steps.model))
    fig, axes = plt.subplots(len(models), 3, figsize=(14, 3.2 * len(models)), squeeze=False)
    for i, m in enumerate(models):
        s = steps[steps.model == m].sort_values("step")
        for j, c in enumerate(CLS):
            ax = axes[i, j]
            for sign, lab in (("pos", "A>0"), ("neg", "A<0"), ("all", "all")):
                ax.plot(s.step, s[f"{sign}_{c}"], marker="o", ms=3, label=lab,
                        color=PALETTE.get(sign, "#6c757d"), ls="-" if sign != "all" else ":")
            ax.set_title(f"{m}: {c}")
            ax.set_ylim(0, 1)
            ax.set_xlabel("training step")
            if j == 0:
                ax.set_ylabel("token ratio")
        axes[i, 0].legend()
    fig.tight_layout()
    source_note(fig, flip)
    return fig, None


def fig4(store, run_id=None):
    po = need(store, "positive-only", run_id)
    var = po.read_table("variants").set_index("variant")
    top = po.read_table("top_boosted")
    cats = [c[5:] for c in var.columns if c.startswith("mass_")]
    fig, axes = plt.subplots(1, 3, figsize=(17, 4.8), gridspec_kw={"width_ratios": [1.1, 1, 1]})
    ax = axes[0]
    df = pd.DataFrame({v: [var.loc[v, f"mass_{c}"] for c in cats] for v in ("positive_only", "grpo")}, index=cats)
    df.plot.bar(ax=ax, color=[PALETTE["positive_only"], PALETTE["grpo"]], rot=0)
    ax.set_ylabel("share of boosted mass (sum of positive Δlog p)")
    ax.set_title("(a) where the boosted mass goes, by token category")
    for j, v in enumerate(("positive_only", "grpo")):
        ax = axes[1 + j]
        t = top[top.variant == v].head(20).iloc[::-1]
        labels = [_visible(x) for x in t.token_text]
        ax.barh(range(len(t)), t.boosted_mass, color=[_cat_color(c) for c in t.category])
        ax.set_yticks(range(len(t)), labels, fontsize=7)
        ax.set_title(f"({'bc'[j]}) top-20 boosted tokens: {v.replace('_', '-')}")
        ax.set_xlabel("boosted mass")
    from matplotlib.patches import Patch

    axes[2].legend(handles=[Patch(color=_cat_color(c), label=c) for c in cats], loc="lower right", fontsize=7)
    fig.tight_layout()
    source_note(fig, po)
    return fig, None


def _cat_color(c):
    return {"format": "#adb5bd", "number": "#2a9d8f", "operator": "#e9c46a", "word": "#264653"}.get(c, "#6c757d")


def _visible(text: str) -> str:
    """Token text with whitespace made visible."""
    return text.replace(" ", "\u2423").replace("\n", "\\n").replace("\t", "\\t") or "''"
