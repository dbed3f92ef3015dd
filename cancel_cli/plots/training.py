"""Fig. 7a (sign-partitioned training), Fig. 8 (QB / RB curves), Fig. 10 (proxy sign agreement),
Table 2 (benchmarks by method), Table 4 (sampling settings)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd

from ..errors import UserError
from .style import PALETTE, markdown_table, need, source_note, table_figure
from .value import fig7b

VARIANTS = {  # label -> train config match
    "baseline": {"plan": "verl-default", "rb": False, "positive_only": False},
    "QB": {"plan": "query-preserved", "rb": False, "positive_only": False},
    "RB": {"plan": "verl-default", "rb": True, "positive_only": False},
    "QB+RB": {"plan": "query-preserved", "rb": True, "positive_only": False},
    "sign-partitioned": {"plan": "sign-partitioned", "rb": False, "positive_only": False},
}
COLORS = {"baseline": "#6c757d", "QB": "#2a9d8f", "RB": "#e9c46a", "QB+RB": "#264653", "sign-partitioned": "#e76f51"}
PAPER_TABLE2 = pd.DataFrame([
    ("Qwen2.5-Math-7B", "", "", 21.3, 11.3, 54.9, 37.8, 29.4, 72.6, 37.8), ("Qwen2.5-Math-7B", "✓", "", 20.7, 10.8, 61.2, 42.6, 36.7, 81.6, 42.3),
    ("Qwen2.5-Math-7B", "", "✓", 25.4, 13.3, 60.1, 39.0, 32.4, 73.0, 42.4), ("Qwen2.5-Math-7B", "✓", "✓", 27.8, 15.9, 63.9, 44.5, 36.0, 82.2, 45.0),
    ("Qwen3-1.7B-Base", "", "", 12.4, 9.4, 37.0, 34.5, 28.3, 69.8, 31.9), ("Qwen3-1.7B-Base", "✓", "", 11.6, 7.9, 40.2, 37.6, 33.8, 71.0, 33.7),
    ("Qwen3-1.7B-Base", "", "✓", 16.2, 11.8, 42.6, 37.3, 30.9, 74.2, 35.5), ("Qwen3-1.7B-Base", "✓", "✓", 16.5, 9.0, 43.5, 38.2, 35.7, 74.0, 36.1),
    ("Qwen3-4B-Base", "", "", 28.3, 24.2, 58.0, 53.2, 44.5, 86.2, 49.1), ("Qwen3-4B-Base", "✓", "", 29.2, 22.8, 64.4, 53.6, 44.9, 86.4, 50.2),
    ("Qwen3-4B-Base", "", "✓", 27.9, 22.4, 61.5, 54.8, 46.0, 88.0, 50.1), ("Qwen3-4B-Base", "✓", "✓", 30.7, 23.0, 64.0, 55.4, 43.4, 88.4, 50.8),
], columns=["Model", "QB", "RB", "AIME24", "AIME25", "AMC", "Olympiad", "Minerva", "Math", "Avg"])
PAPER_TABLE4 = pd.DataFrame([
    ("qwen3-4b-base", 1.0, 0.7, 10.6, 6.7, 36.4, 62.8, 33.4, 24.2, 29.0), ("qwen3-4b-base", 0.6, 0.7, 10.0, 8.5, 41.7, 73.6, 36.7, 26.1, 32.8),
    ("qwen3-4b-base", 1.0, 0.95, 6.6, 3.6, 27.1, 49.0, 23.8, 17.6, 21.3), ("qwen3-4b-base", 0.6, 0.95, 10.2, 6.6, 39.9, 64.8, 34.5, 27.9, 30.7),
    ("hf-4b-step100", 1.0, 0.7, 16.0, 14.1, 49.5, 82.6, 46.2, 37.5, 41.0), ("hf-4b-step100", 0.6, 0.7, 14.2, 12.3, 49.9, 81.0, 46.9, 37.1, 40.2),
    ("hf-4b-step100", 1.0, 0.95, 16.8, 13.9, 49.4, 79.8, 44.4, 37.5, 40.3), ("hf-4b-step100", 0.6, 0.95, 15.8, 14.8, 50.6, 82.4, 46.9, 36.7, 41.2),
], columns=["Model", "Temp.", "Top-p", "AIME24", "AIME25", "AMC", "Math", "Olymp.", "Minerva", "Avg."])


def train_runs(store, model: str | None = None) -> dict:
    """label -> latest done train run of that variant (for one model: the latest train run's model)."""
    runs = [r for r in store.runs("train") if r.status == "done"]
    if not runs:
        raise UserError("needs done `train` runs; make them with `cancel train`, `cancel train --qb`, "
                        "`cancel train --rb`, `cancel train --qb --rb`")
    model = model or runs[-1].config.get("model")
    out = {}
    for label, match in VARIANTS.items():
        r = store.latest("train", model=model, where=lambda r, m=match: all(r.config.get(k, False) == v for k, v in m.items()))
        if r is not None:
            out[label] = r
    return out


def _curve(run):
    v = run.read_table("validation")
    return v


def fig8(store, run_id=None):
    runs = train_runs(store, store.get_done(run_id).config.get("model") if run_id else None)
    labels = [l for l in ("baseline", "QB", "RB", "QB+RB") if l in runs]
    if not labels:
        raise UserError("needs train runs of baseline / --qb / --rb / --qb --rb")
    benches = list(dict.fromkeys(_curve(runs[labels[0]]).benchmark))
    fig, axes = plt.subplots(1, len(benches) + 1, figsize=(4.2 * (len(benches) + 1), 3.8), squeeze=False)
    for j, b in enumerate(benches + ["average"]):
        ax = axes[0, j]
        for l in labels:
            v = _curve(runs[l])
            g = v.groupby("step").accuracy.mean() if b == "average" else v[v.benchmark == b].set_index("step").accuracy
            ax.plot(g.index, g.values, marker="o", ms=3, color=COLORS[l], label=l)
        ax.set_title(b)
        ax.set_xlabel("training step")
        ax.set_ylabel("accuracy")
    axes[0, 0].legend()
    fig.suptitle(f"Fig. 8: QB and RB, {runs[labels[0]].config.get('model')}", y=1.02)
    fig.tight_layout()
    source_note(fig, *[runs[l] for l in labels])
    return fig, None


def fig7(store, run_id=None):
    runs = train_runs(store)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.3))
    ax = axes[0]
    used = []
    for l in ("baseline", "sign-partitioned"):
        if l in runs:
            g = _curve(runs[l]).groupby("step").accuracy.mean()
            ax.plot(g.index, g.values, marker="o", ms=3, color=COLORS[l], label=l)
            used.append(runs[l])
    if not used:
        raise UserError("needs train runs: `cancel train` and `cancel train --sign-partition`")
    ax.set_xlabel("training step")
    ax.set_ylabel("mean validation accuracy")
    ax.set_title("(a) sign-partitioned mini-batches vs baseline")
    ax.legend()
    rm = fig7b(axes[1], store)
    fig.tight_layout()
    source_note(fig, *used, *([rm] if rm else []))
    return fig, None


def fig10(store, run_id=None):
    if run_id:
        run = need(store, "train", run_id)
    else:
        run = store.latest("train", where=lambda r: r.has_table("proxy"))
        if run is None:
            raise UserError("needs a done `train` run with the proxy probe; make one with `cancel train --probe-proxy 1`")
    p = run.read_table("proxy").sort_values("step")
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(p.step, p.sign_agreement, marker="o", color=PALETTE["full"])
    ax.axhline(0.5, color="gray", ls=":", label="chance")
    ax.axhline(0.7, color="#e76f51", ls="--", lw=0.8, label="paper plateau ≈ 0.7")
    ax.set_ylim(0, 1)
    ax.set_xlabel("training step")
    ax.set_ylabel("sign-consistent share of tokens")
    ax.set_title("Fig. 10: LM-head-only vs full update, sign agreement of Δlog p")
    ax.legend()
    fig.tight_layout()
    source_note(fig, run)
    return fig, None


def _eval_for(store, train_run):
    return store.latest("eval", run=train_run.id, where=lambda r: not r.config.get("sweep_sampling"))


def table2(store, run_id=None):
    runs = train_runs(store)
    rows, used = [], []
    for label in ("baseline", "QB", "RB", "QB+RB"):
        if label not in runs:
            continue
        tr = runs[label]
        ev = _eval_for(store, tr)
        if ev is not None:
            s = ev.read_table("results")
            s = s[s.step == s.step.max()].set_index("benchmark").score * 100
            src = f"eval {ev.id}"
            used.append(ev)
        else:
            v = tr.read_table("validation")
            s = v[v.step == v.step.max()].set_index("benchmark").accuracy * 100
            src = f"final validation of {tr.id}"
        used.append(tr)
        rows.append({"Model": tr.config.get("model"), "QB": "✓" if "QB" in label else "", "RB": "✓" if "RB" in label else "",
                     **{b: float(x) for b, x in s.items()}, "Avg": float(s.mean()), "source": src})
    if not rows:
        raise UserError("needs train runs of baseline / --qb / --rb / --qb --rb")
    ours = pd.DataFrame(rows)
    md = ("**Table 2 (ours)**: accuracy (%) by method\n\n" + markdown_table(ours) +
          "\n**Table 2 (paper)**\n\n" + markdown_table(PAPER_TABLE2))
    fig = table_figure(ours.drop(columns=["source"]), f"Table 2 (ours, {ours.Model.iloc[0]}); paper's table in table2.md")
    return fig, md


def table4(store, run_id=None):
    ev = need(store, "eval", run_id) if run_id else store.latest("eval", sweep_sampling=True)
    if ev is None:
        raise UserError("needs a done `eval --sweep-sampling` run; make one with `cancel eval --sweep-sampling`")
    s = ev.read_table("results")
    ours = s.pivot_table(index=["target", "temperature", "top_p"], columns="benchmark", values="score").mul(100)
    ours["Avg."] = ours.mean(1)
    ours = ours.reset_index()
    md = ("**Table 4 (ours)**: accuracy (%) under four sampling settings\n\n" + markdown_table(ours) +
          "\n**Table 4 (paper)**\n\n" + markdown_table(PAPER_TABLE4) + f"\nrun: {ev.id}\n")
    return table_figure(ours, "Table 4 (ours): sampling settings; paper's table in table4.md"), md
