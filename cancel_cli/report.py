"""figures/REPORT.md: one section per claim of the paper, with the figure, our numbers beside the
paper's, and a verdict computed from the numbers by a rule fixed in advance (stated in each section):
supported / not supported / inconclusive, with the interval it was decided on."""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pandas as pd

from .atomic import atomic_write_bytes

Z = 1.96


def mean_ci(x) -> tuple[float, float, float]:
    x = np.asarray(x, dtype=float)
    x = x[~np.isnan(x)]
    if len(x) == 0:
        return float("nan"), float("nan"), float("nan")
    m = float(x.mean())
    se = float(x.std(ddof=1) / math.sqrt(len(x))) if len(x) > 1 else float("nan")
    return m, m - Z * se, m + Z * se


def prop_diff(p1, n1, p2, n2) -> tuple[float, float, float]:
    """Difference of two proportions (in %) with a normal 95% CI."""
    a, b = p1 / 100, p2 / 100
    se = math.sqrt(a * (1 - a) / max(n1, 1) + b * (1 - b) / max(n2, 1)) * 100
    d = p1 - p2
    return d, d - Z * se, d + Z * se


def interval_verdict(lo, hi, threshold=0.0) -> str:
    """supported if the whole interval is above ``threshold``, not supported if entirely below, else inconclusive."""
    if any(map(lambda v: v != v, (lo, hi))):
        return "inconclusive"
    if lo > threshold:
        return "supported"
    if hi < threshold:
        return "not supported"
    return "inconclusive"


def fmt(v, d=3) -> str:
    return "n/a" if v is None or (isinstance(v, float) and v != v) else f"{v:.{d}f}"


class Section:
    def __init__(self, title, figure, rule):
        self.title, self.figure, self.rule = title, figure, rule
        self.rows, self.verdict, self.why, self.notes = [], "inconclusive", "", []

    def md(self) -> str:
        out = [f"## {self.title}", "", f"**Verdict: {self.verdict}** — {self.why}", ""]
        if self.figure:
            out += [f"![{self.figure}]({self.figure}.png)", ""]
        if self.rows:
            out += ["| quantity | ours | paper |", "|---|---|---|"] + [
                "| " + " | ".join(str(x).replace("|", "\\|") for x in row) + " |" for row in self.rows] + [""]
        out += [f"*Rule:* {self.rule}", ""] + [f"- {n}" for n in self.notes] + [""]
        return "\n".join(out)


def _missing(sec: Section, what: str) -> Section:
    sec.verdict, sec.why = "inconclusive", f"no data: {what}"
    return sec


def claim_flipping(store) -> Section:
    s = Section("1. Token flipping: positive and negative rollouts have similar boosted/suppressed ratios", "fig1",
                "per-step difference of the boosted ratio between A>0 and A<0 tokens; supported if its 95% CI lies "
                "inside [-0.10, 0.10] and tokens moving against their advantage sign make up >= 25% of moved tokens; "
                "not supported if the CI lies outside [-0.10, 0.10] or that share is < 10%.")
    run = store.latest("flip")
    if run is None:
        return _missing(s, "run `cancel flip`")
    st = run.read_table("steps")
    m, lo, hi = mean_ci(st.pos_boosted - st.neg_boosted)
    fr, frlo, frhi = mean_ci(st.flip_rate)
    s.rows = [("boosted ratio, A>0 (mean over steps)", fmt(st.pos_boosted.mean()), "similar to A<0 (Fig. 1a)"),
              ("boosted ratio, A<0", fmt(st.neg_boosted.mean()), "similar to A>0 (Fig. 1b)"),
              ("suppressed ratio, A>0 / A<0", f"{fmt(st.pos_suppressed.mean())} / {fmt(st.neg_suppressed.mean())}", "similar"),
              ("difference of boosted ratios (95% CI)", f"{fmt(m)} [{fmt(lo)}, {fmt(hi)}]", "≈ 0"),
              ("mean |Δlog p|, A>0 / A<0", f"{fmt(st.pos_mean_abs_delta.mean(), 5)} / {fmt(st.neg_mean_abs_delta.mean(), 5)}",
               "similar (Fig. 1c)"),
              ("share of moved tokens against their advantage sign (95% CI)", f"{fmt(fr)} [{fmt(frlo)}, {fmt(frhi)}]",
               "nearly half")]
    if lo >= -0.1 and hi <= 0.1 and fr >= 0.25:
        s.verdict = "supported"
    elif hi < -0.1 or lo > 0.1 or fr < 0.10:
        s.verdict = "not supported"
    s.why = f"boosted-ratio difference {fmt(m)} (95% CI [{fmt(lo)}, {fmt(hi)}]), flip share {fmt(fr)} over {len(st)} steps"
    return s


def claim_positive_only(store) -> Section:
    s = Section("2. Positive-only updates reduce flipping; GRPO moves boosted mass away from format tokens", "fig4",
                "flip rate per training step under positive-only training minus under GRPO training (Fig. 1d); "
                "supported if the 95% CI is below 0, not supported if above 0.  The format share of boosted mass "
                "(one update from theta_0) is reported beside it.")
    run = store.latest("positive-only")
    if run is None:
        return _missing(s, "run `cancel positive-only`")
    sm = run.meta["summary"]
    tr = run.read_table("training")
    po = tr[tr.variant == "positive_only"].sort_values("step").flip_rate.to_numpy()
    gr = tr[tr.variant == "grpo"].sort_values("step").flip_rate.to_numpy()
    n = min(len(po), len(gr))
    m, lo, hi = mean_ci(po[:n] - gr[:n])
    s.rows = [("flip rate, one update: positive-only / GRPO", f"{fmt(sm['flip_rate_positive_only'])} / {fmt(sm['flip_rate_grpo'])}",
               "much lower under positive-only"),
              ("flip rate during training: positive-only / GRPO", f"{fmt(sm['train_flip_rate_positive_only'])} / "
               f"{fmt(sm['train_flip_rate_grpo'])}", "much lower under positive-only (Fig. 1d)"),
              ("difference per step (95% CI)", f"{fmt(m)} [{fmt(lo)}, {fmt(hi)}]", "< 0"),
              ("format share of boosted mass: positive-only / GRPO", f"{fmt(sm['format_mass_positive_only'])} / "
               f"{fmt(sm['format_mass_grpo'])}", "GRPO lower (Fig. 4)")]
    s.verdict = {"supported": "not supported", "not supported": "supported"}.get(interval_verdict(lo, hi), "inconclusive")
    s.why = f"positive-only minus GRPO flip rate {fmt(m)} (95% CI [{fmt(lo)}, {fmt(hi)}]) over {n} steps"
    s.notes.append("Token categories come from a fixed text classifier (cancel_cli/analysis/categories.py); on the "
                   "toy's character tokenizer letters of scaffold words count as format.")
    return s


def claim_coupling(store) -> Section:
    s = Section("3. Coupling concentrates on same-token, low-confidence pairs", "fig2",
                "mean |A_k<h_j,h_k>phi_jk| for same-token pairs divided by different-token pairs, and for the highest- "
                "vs lowest-entropy bins; supported if both ratios exceed 2, not supported if either is below 1.")
    run = store.latest("coupling")
    if run is None:
        return _missing(s, "run `cancel coupling`")
    sm = run.meta["summary"]
    r1 = sm["same_abs_contribution"] / max(sm["diff_abs_contribution"], 1e-30)
    r2 = sm["contribution_high_high"] / max(sm["contribution_low_low"], 1e-30)
    s.rows = [("mean <h_j,h_k>: same / different token", f"{fmt(sm['same_mean_hh'])} / {fmt(sm['diff_mean_hh'])}", "same > different (Fig. 2a)"),
              ("mean phi: same / different", f"{fmt(sm['same_mean_phi'], 4)} / {fmt(sm['diff_mean_phi'], 4)}", "non-negligible mainly for same (Fig. 2b)"),
              ("|contribution| ratio same / different", f"{r1:.3g}", "> 1"),
              ("|contribution| ratio high-high / low-low entropy", f"{r2:.3g}", "> 1 (Fig. 2c)"),
              ("proxy vs exact kernel (Pearson / Spearman)", f"{fmt(sm.get('pearson_proxy_exact'))} / {fmt(sm.get('spearman_proxy_exact'))}",
               "proxy tracks full update (App. D.1)")]
    s.verdict = "supported" if r1 > 2 and r2 > 2 else "not supported" if r1 < 1 or r2 < 1 else "inconclusive"
    s.why = f"same/different ratio {r1:.3g}, high/low entropy ratio {r2:.3g}"
    tr = store.latest("train", where=lambda r: r.has_table("proxy"))
    if tr:
        p = tr.read_table("proxy")
        pm, plo, phi = mean_ci(p.sign_agreement)
        s.rows.append(("LM-head vs full sign agreement over training (Fig. 10)", f"{fmt(pm)} [{fmt(plo)}, {fmt(phi)}]", "≈ 0.7"))
    return s


def claim_table1(store) -> Section:
    s = Section("4. Table 1: masking same-token low-confidence tokens boosts the candidate most", "table1",
                "boost rate (LM-head closed form) of same+low-confidence masks minus random masks, as a difference of "
                "proportions with a 95% CI: supported if above 0 and the same-token row is also above random; not "
                "supported if the CI is below or covers only values <= 0 ... decided on the interval.")
    run = store.latest("mask-effect")
    if run is None:
        return _missing(s, "run `cancel mask-effect`")
    t = run.read_table("table1").set_index("condition")
    n = int(t.loc["random", "head_n"])
    d, lo, hi = prop_diff(t.loc["same_lowconf", "head_boost_rate"], n, t.loc["random", "head_boost_rate"], n)
    d2, lo2, hi2 = prop_diff(t.loc["same", "head_boost_rate"], n, t.loc["random", "head_boost_rate"], n)
    for c, lab in (("random", "random"), ("same", "same token"), ("lowconf", "low confidence"), ("same_lowconf", "same + low conf.")):
        r = t.loc[c]
        s.rows.append((f"{lab}: BR head / full, MB head / full",
                       f"{fmt(r.head_boost_rate, 1)} / {fmt(r.full_boost_rate, 1)}, {fmt(r.head_mean_boost, 5)} / {fmt(r.full_mean_boost, 5)}",
                       f"{r.paper_head_boost_rate:.1f} / {r.paper_full_boost_rate:.1f}, {r.paper_head_mean_boost:+.4f} / {r.paper_full_mean_boost:+.4f}"))
    v1, v2 = interval_verdict(lo, hi), interval_verdict(lo2, hi2)
    s.verdict = "supported" if v1 == v2 == "supported" else "not supported" if "not supported" in (v1, v2) else "inconclusive"
    s.why = (f"same+low-conf minus random boost rate {fmt(d, 1)} points (95% CI [{fmt(lo, 1)}, {fmt(hi, 1)}]); same-token minus "
             f"random {fmt(d2, 1)} [{fmt(lo2, 1)}, {fmt(hi2, 1)}]; {n} candidates")
    s.rule = ("boost-rate differences (LM-head closed form) of same+low-confidence and of same-token masks vs random masks, "
              "each with a 95% CI: supported if both CIs lie above 0, not supported if either lies below 0, else inconclusive.")
    return s


def claim_value(store) -> Section:
    from .analysis.value import ValueSummary

    s = Section("5. Boosted tokens have higher Monte-Carlo value than suppressed ones, from both origins", "fig5",
                "gap = mean value(boosted) - mean value(suppressed) with a 95% CI whose SE contains the token-to-token "
                "spread and the per-token Monte-Carlo noise, for positive and negative rollouts: supported if both CIs "
                "lie above 0, not supported if either lies below 0, else inconclusive.")
    run = store.latest("mc-value")
    if run is None:
        return _missing(s, "run `cancel mc-value`")
    sm = ValueSummary.of(run)
    for o, lab in (("pos", "positive rollouts"), ("neg", "negative rollouts"), ("all", "all")):
        g = sm.gap[o]
        s.rows.append((f"gap, {lab} (SE; 95% CI)", f"{fmt(g['gap'])} ({fmt(g['se'])}; [{fmt(g['ci_low'])}, {fmt(g['ci_high'])}])",
                       "> 0 (Fig. 5a)"))
    s.rows.append(("estimator / tokens per cell / M / mean per-token SE",
                   f"{sm.estimator} / {sm.per_cell} / {sm.M} / {fmt(sm.mean_se)}", "Eq. 20 / n/a / 256 / n/a"))
    vs = [interval_verdict(sm.gap[o]["ci_low"], sm.gap[o]["ci_high"]) for o in ("pos", "neg")]
    s.verdict = "supported" if vs == ["supported"] * 2 else "not supported" if "not supported" in vs else "inconclusive"
    s.why = f"positive-origin gap {fmt(sm.gap['pos']['gap'])}, negative-origin gap {fmt(sm.gap['neg']['gap'])} (CIs in the table)"
    if sm.estimator == "eq20":
        s.notes.append(f"{sm.skipped_confident} of {sm.tokens} tokens had p > 1-1e-3 and were skipped (Eq. 20 divides by 1-p).")
    rep = store.latest("mc-value", where=lambda r: r.has_table("repeat"))
    if rep:
        rg = ValueSummary.of(rep).repeat_gaps
        s.notes.append("Fig. 11 (repeated updates): gap after 1..K updates = " + ", ".join(fmt(v) for v in rg) +
                       " (paper: grows monotonically).")
    return s


def claim_entropy(store) -> Section:
    from .analysis.entropy_gap import EntropyGapSummary

    s = Section("6. The value gap peaks at intermediate entropy", "fig5",
                "the gap on the top-k% highest-entropy tokens of all response tokens for k = 10..100; supported if the "
                "peak is at 20 <= k <= 90 and its bootstrap CI lies above the gap at k = 100; not supported if the peak "
                "is at k = 10 or 100.")
    run = store.latest("entropy-gap")
    if run is None:
        return _missing(s, "run `cancel entropy-gap`")
    sm = EntropyGapSummary.of(run)
    if sm.peak_gap != sm.peak_gap:
        return _missing(s, "too few tokens per subset")
    s.rows = [("peak at top-k%", f"{sm.peak_k}%", "≈ 40%"),
              ("gap at peak (95% CI)", f"{fmt(sm.peak_gap)} [{fmt(sm.peak_ci_low)}, {fmt(sm.peak_ci_high)}]", ""),
              ("gap at 100%", fmt(sm.gap_at_100), "lower than at the peak"),
              ("curve k: gap", ", ".join(f"{c['k']}: {fmt(c['gap'], 2)}" for c in sm.curve), "rise then fall")]
    if 20 <= sm.peak_k <= 90 and sm.peak_ci_low > sm.gap_at_100:
        s.verdict = "supported"
    elif sm.peak_k in (10, 100):
        s.verdict = "not supported"
    s.why = (f"peak at top-{sm.peak_k}% with gap {fmt(sm.peak_gap)} (CI [{fmt(sm.peak_ci_low)}, {fmt(sm.peak_ci_high)}]) "
             f"vs {fmt(sm.gap_at_100)} at 100% ({sm.estimator} estimator)")
    return s


def _wls_slope(x, y, se) -> tuple[float, float]:
    """Weighted least-squares slope of y on x (weights 1 / se^2) and its SE."""
    x, y, w = np.asarray(x, float), np.asarray(y, float), 1 / np.maximum(np.asarray(se, float), 1e-9) ** 2
    xm = (w * x).sum() / w.sum()
    sxx = (w * (x - xm) ** 2).sum()
    return float((w * (x - xm) * y).sum() / sxx), float(1 / math.sqrt(sxx))


def claim_budget(store) -> Section:
    from .analysis.budget import BudgetSummary

    s = Section("7. A larger sampling budget widens the value gap", "fig6",
                "weighted least-squares slope of the gap (all candidates, weights 1/SE^2) on batch size and on "
                "rollout-n, with a 95% CI: supported if both CIs lie above 0, not supported if either lies below 0, "
                "else inconclusive.  Fig. 7b (reward mix) reported beside.")
    slopes = {}
    for axis in ("batch-size", "rollout-n", "reward-mix"):
        r = store.latest("budget-sweep", axis=axis)
        if r is None:
            continue
        sm = BudgetSummary.of(r)
        g = pd.DataFrame(sm.points)
        g = g[g.subset == 100].dropna(subset=["gap", "se"]).sort_values("value")
        pts = ", ".join(f"{int(v)}: {fmt(x, 2)}±{fmt(e, 2)}" for v, x, e in zip(g.value, g.gap, g.se))
        if len(g) > 2 and axis != "reward-mix":
            b, se = _wls_slope(g.value, g.gap, g.se)
            slopes[axis] = (b, se)
            pts += f"; slope {b:.2e} [{b - Z * se:.2e}, {b + Z * se:.2e}]"
        s.rows.append((f"gap ± SE vs {axis} (top-100%, {sm.candidates} candidates, max SE {fmt(sm.max_gap_se, 2)})", pts,
                       {"batch-size": "grows 16 -> 96", "rollout-n": "grows 1 -> 8",
                        "reward-mix": "diminishes when sparse or saturated"}[axis]))
    if "batch-size" not in slopes or "rollout-n" not in slopes:
        return _missing(s, "run `cancel budget-sweep --axis batch-size` and `--axis rollout-n`")
    vs = [interval_verdict(b - Z * se, b + Z * se) for b, se in (slopes["batch-size"], slopes["rollout-n"])]
    s.verdict = "supported" if vs == ["supported"] * 2 else "not supported" if "not supported" in vs else "inconclusive"
    s.why = "slope of the gap: " + ", ".join(f"{a} {b:.2e} ± {Z * se:.2e}" for a, (b, se) in slopes.items())
    return s


def claim_training(store) -> Section:
    s = Section("8. QB and RB improve GRPO training (and sign-partitioning hurts it)", "fig8",
                "final mean validation accuracy (last evaluation, all held-out sets) of QB+RB minus baseline, with a "
                "binomial 95% CI: supported if above 0, not supported if below 0, else inconclusive.")
    from .plots.training import train_runs

    try:
        runs = train_runs(store)
    except Exception:
        return _missing(s, "run `cancel train` with the four variants")
    if "baseline" not in runs:
        return _missing(s, "no baseline train run")
    final = {}
    for label, r in runs.items():
        v = r.read_table("validation")
        last = v[v.step == v.step.max()]
        n = int(last.problems.sum() * last.k.mean())  # 0 for verl runs (no per-set counts): CI undefined
        w = last.problems if last.problems.sum() > 0 else pd.Series(1.0, index=last.index)
        final[label] = (float((last.accuracy * w).sum() / w.sum()), n,
                        float(v[v.step == v.step.min()].accuracy.mean()))
    paper = {"baseline": "37.8 / 31.9 / 49.1", "QB": "42.3 / 33.7 / 50.2", "RB": "42.4 / 35.5 / 50.1", "QB+RB": "45.0 / 36.1 / 50.8",
             "sign-partitioned": "degrades (Fig. 7a)"}
    for label, (acc, n, first) in final.items():
        s.rows.append((f"{label}: final accuracy (start {fmt(first)})", fmt(acc), f"Table 2 avg (7B / 1.7B / 4B): {paper[label]}"))
    b = final["baseline"]
    target = "QB+RB" if "QB+RB" in final else None
    if target is None:
        return _missing(s, "no QB+RB train run")
    d, lo, hi = prop_diff(final[target][0] * 100, final[target][1], b[0] * 100, b[1])
    if min(final[target][1], b[1]) == 0:
        lo = hi = float("nan")
    s.verdict = interval_verdict(lo, hi)
    s.why = f"QB+RB minus baseline {fmt(d, 1)} points (95% CI [{fmt(lo, 1)}, {fmt(hi, 1)}])"
    for label in ("QB", "RB", "sign-partitioned"):
        if label in final:
            dd, l2, h2 = prop_diff(final[label][0] * 100, final[label][1], b[0] * 100, b[1])
            s.notes.append(f"{label} minus baseline: {fmt(dd, 1)} points (95% CI [{fmt(l2, 1)}, {fmt(h2, 1)}]).")
    met = runs["baseline"].read_table("metrics")
    s.notes.append(f"Baseline (verl-default plan) splits {fmt(met.groups_split_frac.mean() * 100, 0)}% of groups across mini-batches; "
                   "QB splits none.")
    if "RB" in runs:
        rb = runs["RB"].read_table("metrics")
        if "rb_utilization" in rb:
            s.notes.append(f"RB sample utilisation {fmt(rb.rb_utilization.iloc[-1])}.")
    return s


CLAIMS = [claim_flipping, claim_positive_only, claim_coupling, claim_table1, claim_value, claim_entropy, claim_budget,
          claim_training]


def write_report(store, out: Path, model: str, preset: str, timings: dict, missing: dict) -> Path:
    sections = [c(store) for c in CLAIMS]
    lines = ["# Reproduction report: The Cancellation Hypothesis in Critic-Free RL", "",
             f"Model `{model}`, preset `{preset}`, written {time.strftime('%Y-%m-%d %H:%M:%S')} from the store at "
             f"`{store.root}`.  Every number below is read from a run in that store; the verdict rules were fixed before "
             "the runs and are stated in each section.", "",
             "| claim | verdict |", "|---|---|"] + [f"| {s.title} | {s.verdict} |" for s in sections] + [""]
    lines += [s.md() for s in sections]
    if timings:
        lines += ["## Stage timings (s)", "", "| stage | seconds |", "|---|---|"] + [f"| {k} | {v} |" for k, v in timings.items()] + [""]
    if missing:
        lines += ["## Figures not rendered", ""] + [f"- {k}: {v}" for k, v in missing.items()] + [""]
    path = Path(out) / "REPORT.md"
    atomic_write_bytes(path, "\n".join(lines).encode())
    return path
