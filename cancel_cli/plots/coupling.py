"""Fig. 2 (coupling kernel), Fig. 3 (masked updates), Table 1."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from ..analysis.coupling import CouplingSummary
from ..analysis.masked_update import boost_stats
from .style import PALETTE, markdown_table, need, source_note, symlog_ticks, table_figure

LABELS = {"random": "random", "same": "same token", "lowconf": "low confidence", "same_lowconf": "same + low conf."}


def fig2(store, run_id=None):
    run = need(store, "coupling", run_id)
    pairs = run.read_table("pairs")
    heat = run.read_table("entropy_bins")
    summ = CouplingSummary.of(run)
    pairs["pair"] = np.where(pairs.same_token, "same token", "different token")
    fig, axes = plt.subplots(1, 3, figsize=(17, 4.4))
    sns.histplot(pairs, x="hh", hue="pair", stat="density", common_norm=False, bins=80, ax=axes[0], element="step")
    axes[0].set_xlabel(r"$\langle h_j, h_k \rangle$")
    axes[0].set_title("(a) representation similarity")
    sns.histplot(pairs, x="phi", hue="pair", stat="density", common_norm=False, bins=80, ax=axes[1], element="step",
                 fill=False)
    axes[1].set_yscale("log")
    axes[1].set_xlabel(r"$\phi_{jk} = \langle e_{o_j}-\pi_j, e_{o_k}-\pi_k \rangle$")
    axes[1].set_title("(b) output-distribution factor")
    mat = heat.pivot(index="bin_j", columns="bin_k", values="mean_abs_contribution").sort_index(ascending=False)
    ent = heat.drop_duplicates("bin_j").set_index("bin_j").entropy_j
    sns.heatmap(mat, ax=axes[2], cmap="viridis", annot=True, fmt=".2g",
                xticklabels=[f"{ent[b]:.2g}" for b in mat.columns], yticklabels=[f"{ent[b]:.2g}" for b in mat.index])
    axes[2].set_xlabel("entropy of k (bin mean, nats)")
    axes[2].set_ylabel("entropy of j (bin mean, nats)")
    axes[2].set_title(r"(c) mean $|A_k \langle h_j,h_k\rangle \phi_{jk}|$")
    fig.suptitle(f"proxy vs exact full-parameter kernel: Pearson {summ.pearson_proxy_exact:.2f}, "
                 f"Spearman {summ.spearman_proxy_exact:.2f} ({summ.exact_tokens} tokens)",
                 fontsize=9, y=1.0)
    fig.tight_layout()
    source_note(fig, run)
    return fig, None


def fig3(store, run_id=None):
    run = need(store, "mask-effect", run_id)
    df = run.read_table("candidates")
    topk = run.read_table("topk")
    cfg = run.config
    fig, axes = plt.subplots(1, 3, figsize=(17, 4.4))
    ax = axes[0]
    lim = float(np.quantile(np.abs(df.delta_head), 0.99)) or 1e-9
    thr = max(lim * 1e-4, 1e-12)
    pos = np.geomspace(thr, lim, 20)
    edges = np.concatenate([-pos[::-1], [0.0], pos])  # symmetric log bins: the effects span decades
    for cond, color in (("random", "#adb5bd"), ("same_lowconf", "#264653")):
        x = df[df.condition == cond].delta_head
        ax.hist(x.clip(-lim, lim), bins=edges, alpha=0.6, color=color, label=f"{LABELS[cond]} (mean {x.mean():.2g})")
    ax.set_xscale("symlog", linthresh=thr)
    symlog_ticks(ax, thr, lim)
    ax.axvline(0, color="k", lw=0.8)
    ax.set_ylabel("candidates")
    ax.set_xlabel(r"masking effect $\delta_{\mathcal{M}(c)}$ (LM head, symlog)")
    ax.set_title(f"(a) masking effect: coupled vs random (mask sign {cfg.get('mask_sign')})")
    ax.legend(fontsize=8)
    ax = axes[1]
    d = df.dropna(subset=["coupling_strength"]).copy()
    d["bin"] = pd.qcut(d.coupling_strength, 6, duplicates="drop")
    for path in ("head", "full"):
        dd = d.dropna(subset=[f"delta_{path}"])
        g = [(b.coupling_strength.median(), boost_stats(b[f"delta_{path}"], b.sum_A)) for _, b in dd.groupby("bin", observed=True)]
        lab = "LM head" if path == "head" else "full"
        ax.plot([x for x, _ in g], [s["boost_rate"] for _, s in g], marker="o", color=PALETTE[path], label=f"{lab}: boost rate (n={len(dd)})")
        ax.plot([x for x, _ in g], [s["signed_boost_rate"] for _, s in g], marker="s", ls="--", color=PALETTE[path],
                label=f"{lab}: signed boost rate")
    ax.axhline(50, color="gray", ls=":")
    ax.set_xscale("log")
    ax.set_xlabel(r"coupling strength: mean$_{k\in M}$ |proxy cosine$(g_c, g_k)$| (bin median, sextiles)")
    ax.set_ylabel("rate (%)")
    ax.set_title("(b) boost rate by coupling strength (all conditions)")
    ax.legend(fontsize=7)
    ax = axes[2]
    ax.plot(topk.k, topk.boost_rate, marker="o", color=PALETTE["full"], label="boost rate (%)")
    ax.plot(topk.k, topk.signed_boost_rate, marker="s", ls="--", color=PALETTE["head"], label="signed boost rate (%)")
    ax.plot(topk.k, topk.p_sum_pos, marker="^", ls=":", color="#6c757d", label=r"P($\sum_M A>0$) (%)")
    ax.set_xscale("log", base=2)
    ax.set_ylim(-2, 102)
    ax.set_xlabel("k (top-k tokens by unsigned coupling masked)")
    ax.set_ylabel("rate (%)")
    ax2 = ax.twinx()
    ax2.plot(topk.k, topk.mean_boost, marker="D", color=PALETTE["boosted"], label="mean boost")
    ax2.set_ylabel("mean boost")
    ax.set_title("(c) masking more top-coupled tokens (LM head)")
    ax.legend(loc="upper left", fontsize=7)
    ax2.legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    source_note(fig, run)
    return fig, None


def table1(store, run_id=None):
    run = need(store, "mask-effect", run_id)
    t = run.read_table("table1")
    cols = {"Same": t.same_token, "LowConf.": t.low_conf}
    for path, name in (("head", "LM-head"), ("full", "Full")):
        cols.update({f"{name} BR (ours)": t[f"{path}_boost_rate"], f"{name} BR (paper)": t[f"paper_{path}_boost_rate"],
                     f"{name} P(ΣA>0)": t[f"{path}_p_sum_pos"], f"{name} signed BR": t[f"{path}_signed_boost_rate"],
                     f"{name} MB (ours)": t[f"{path}_mean_boost"], f"{name} MB (paper)": t[f"paper_{path}_mean_boost"]})
    df = pd.DataFrame(cols)
    cfg = run.config
    title = (f"Table 1: masked updates, {run.meta.get('model')} (|M|={cfg.get('mask_size')}, mask sign {cfg.get('mask_sign')}, "
             f"low conf. {cfg.get('low_conf')}, SGD lr {cfg.get('lr')}, {int(t.head_n.iloc[0])} head / {int(t.full_n.iloc[0])} "
             "full candidates) vs the paper")
    note = ("BR: % of candidates with masking effect > 0; P(ΣA>0): % whose masked set has net positive advantage; signed BR: "
            "% with sign(effect) = sign(Σ_M A) (coupling, independent of the sign mix); MB: mean masking effect.")
    md = f"**{title}**\n\n" + markdown_table(df) + f"\n{note}\n\nrun: {run.id}\n"
    return table_figure(df, title), md
