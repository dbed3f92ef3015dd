"""REPORT.md claims 1-7 (Fig. 1-6, Table 1), decided per seed and across seeds with ``report_stats``.

As in ``report_train``, each claim has two halves: gathering one ``Estimate`` per seed from that seed's
run (its typed summary, and its tables where the SE needs them) and a pure rule
``rule_x(estimates...) -> (verdict, interval(s))`` that the tests drive with synthetic estimates.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from . import report_stats as rs
from .errors import UserError
from .report_section import Z, Section, _missing, fmt, mean_ci, prop_diff
from .scope import run_seed

ACROSS = ("Across seeds: mean over the k seeds ± t_{k-1}(0.975) x SE with SE^2 = max(s^2/k, mean(se_i^2)/k) "
          "(s^2 between-seed variance, se_i within-seed SE); one seed: its within-seed 95% CI, inconclusive without "
          "an SE (see *Across seeds* above).")


def seed_runs(store, command: str, ignore=("seed",), **match) -> dict:
    """seed -> the latest done run of ``command`` per seed (config items ``match``), among the runs whose config
    equals the newest such run's apart from ``ignore``: seeds are pooled only over one experiment setting."""
    def key(r):
        return {k: v for k, v in r.config.items() if k not in ignore}

    runs = [r for r in reversed(store.runs(command)) if r.status == "done" and run_seed(r) is not None
            and all(r.config.get(k) == v for k, v in match.items())]
    out: dict = {}
    for r in runs:
        if int(run_seed(r)) not in out and key(r) == key(runs[0]):
            out[int(run_seed(r))] = r
    return dict(sorted(out.items()))


def all_above(*series: list[rs.Estimate], threshold: float = 0.0):
    """One across-seed interval per series; supported if every one lies above ``threshold``, not supported if any
    lies below it (``report_stats.combine``)."""
    ivs = tuple(rs.across_seeds(e) for e in series)
    return rs.combine(*(rs.verdict_above(iv, threshold) for iv in ivs)), ivs


def _mean(xs) -> float:
    x = np.asarray([v for v in xs if v is not None], dtype=float)
    x = x[np.isfinite(x)]
    return float(x.mean()) if len(x) else float("nan")


def _text(iv: rs.Interval, f) -> str:
    """``mean [lo, hi]`` with each number written by ``f`` (e.g. exponentiated, or in scientific notation)."""
    return f"{f(iv.mean)} [{f(iv.lo)}, {f(iv.hi)}]"


def _seeds(iv: rs.Interval, f) -> str:
    """Per-seed numbers written by ``f``, ± the within-seed 95% half-width where there is one."""
    pm = lambda e: f"±{f(rs.Z975 * e.se)}" if math.isfinite(e.se) else ""  # noqa: E731
    return "; ".join(f"s{e.seed}: {f(e.value)}{pm(e)}" for e in iv.per_seed) or "n/a"


def _sci(v) -> str:
    return f"{v:.2e}" if v == v and math.isfinite(v) else "n/a"


def _over(iv: rs.Interval) -> str:
    return iv.method or "no seed"


# -- claim 1: token flipping (Fig. 1a-c) ---------------------------------------------------------------
FLIP_BAND, FLIP_SUPPORT, FLIP_REJECT = 0.10, 0.25, 0.10


def rule_flipping(diff: list[rs.Estimate], flips: list[rs.Estimate]):
    """Supported if the boosted-ratio difference's interval lies inside (-0.10, 0.10) and the mean flip share is
    >= 0.25; not supported if the interval lies outside or the mean flip share is < 0.10."""
    iv, fl = rs.across_seeds(diff), rs.across_seeds(flips)
    band = rs.verdict_inside(iv, -FLIP_BAND, FLIP_BAND)
    if band == rs.NOT_SUPPORTED or fl.mean < FLIP_REJECT:
        return rs.NOT_SUPPORTED, iv, fl
    if band == rs.SUPPORTED and fl.mean >= FLIP_SUPPORT:
        return rs.SUPPORTED, iv, fl
    return rs.INCONCLUSIVE, iv, fl


def claim_flipping(store) -> Section:
    from .analysis.flip_run import FlipSummary

    s = Section("1. Token flipping: positive and negative rollouts have similar boosted/suppressed ratios", "fig1",
                "per seed, the mean over steps of the boosted-ratio difference (A>0 minus A<0 tokens) with its SE over "
                "steps, and the flip share min(A>0 suppressed, A<0 boosted) (each share the mean over steps); supported "
                f"if the across-seed interval of the difference lies inside (-{FLIP_BAND:.2f}, {FLIP_BAND:.2f}) and the "
                f"mean flip share over seeds is >= {FLIP_SUPPORT}; not supported if that interval lies outside "
                f"(-{FLIP_BAND:.2f}, {FLIP_BAND:.2f}) or the mean flip share is < {FLIP_REJECT:.2f}; else inconclusive.  "
                + ACROSS)
    diff, flips, rate, shares, steps = [], [], [], [], 0
    for seed, run in seed_runs(store, "flip").items():
        sm = FlipSummary.of(run)
        model = sm.models[0]
        st = run.read_table("steps")
        st = st[st.model == model]
        sh = sm.shares[model]
        diff.append(rs.mean_estimate(seed, st.pos_boosted - st.neg_boosted))
        flips.append(rs.Estimate(seed, min(sh.pos_suppressed, sh.neg_boosted), float("nan"), len(st)))
        rate.append(rs.mean_estimate(seed, st.flip_rate))
        shares.append(sh)
        steps += len(st)
    if not diff:
        return _missing(s, "run `cancel flip`")
    s.verdict, iv, fl = rule_flipping(diff, flips)
    fr = rs.across_seeds(rate)

    def m(name, d=3):
        return fmt(_mean(getattr(sh, name) for sh in shares), d)

    s.rows = [("boosted ratio, A>0 / A<0 (mean over steps and seeds)", f"{m('pos_boosted')} / {m('neg_boosted')}",
               "similar (Fig. 1a, 1b)"),
              ("suppressed ratio, A>0 / A<0", f"{m('pos_suppressed')} / {m('neg_suppressed')}", "similar"),
              ("difference of boosted ratios (across seeds)", iv.text(), "≈ 0", iv.seeds_text()),
              ("flip share min(A>0 suppressed, A<0 boosted) (mean over seeds)", fmt(fl.mean), "nearly half each",
               fl.seeds_text()),
              ("mean |Δlog p|, A>0 / A<0", f"{m('pos_mean_abs_delta', 5)} / {m('neg_mean_abs_delta', 5)}", "similar (Fig. 1c)"),
              ("share of moved tokens against their advantage sign (across seeds)", fr.text(), "nearly half",
               fr.seeds_text())]
    s.why = (f"boosted-ratio difference {iv.text()} across seeds, mean flip share {fmt(fl.mean)} over {steps} steps x "
             f"seeds ({_over(iv)})")
    return s


# -- claim 2: positive-only updates (Fig. 1d, Fig. 4) ---------------------------------------------------
def positive_only_differences(runs) -> pd.DataFrame:
    """Fig. 1d per step and seed: positive-only minus GRPO training, for the A>0 suppressed and A<0 boosted shares."""
    out = []
    for r in runs:
        tr = r.read_table("training")
        po = tr[tr.variant == "positive_only"].set_index("step")
        gr = tr[tr.variant == "grpo"].set_index("step")
        steps = po.index.intersection(gr.index)
        out.append(pd.DataFrame({"run": r.id, "step": steps,
                                 "pos_suppressed": (po.pos_suppressed[steps] - gr.pos_suppressed[steps]).to_numpy(),
                                 "neg_boosted": (po.neg_boosted[steps] - gr.neg_boosted[steps]).to_numpy()}))
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame(columns=["run", "step", "pos_suppressed", "neg_boosted"])


def rule_positive_only(diffs: list[rs.Estimate]):
    """Supported if the interval of positive-only minus GRPO A>0 suppressed share lies below 0."""
    iv = rs.across_seeds(diffs)
    return rs.verdict_below(iv, 0.0), iv


def claim_positive_only(store) -> Section:
    from .analysis.positive_only import PositiveOnlySummary

    s = Section("2. Positive-only updates reduce flipping of positive-rollout tokens; GRPO moves boosted mass away from "
                "format tokens", "fig1",
                "A>0 suppressed share (tokens of positive rollouts whose log-probability fell) per training step under "
                "positive-only training minus under GRPO training from the same theta_0 (Fig. 1d); per seed the mean "
                "over steps with its SE over steps; supported if the across-seed interval lies below 0, not supported if "
                "above 0, else inconclusive.  The A<0 boosted share is reported beside it and not judged: under "
                "positive-only updates A<0 tokens carry no loss, so what moves them is coupling alone, not a flip against "
                "their loss.  The format share of boosted mass (one update from theta_0, Fig. 4) is reported beside it.  "
                + ACROSS)
    runs = seed_runs(store, "positive-only")
    if not runs:
        return _missing(s, "run `cancel positive-only`")
    pos, neg, sms, steps = [], [], [], 0
    for seed, run in runs.items():
        d = positive_only_differences([run])
        pos.append(rs.mean_estimate(seed, d.pos_suppressed))
        neg.append(rs.mean_estimate(seed, d.neg_boosted))
        sms.append(PositiveOnlySummary.of(run))
        steps += len(d)
    s.verdict, iv = rule_positive_only(pos)
    ivn = rs.across_seeds(neg)

    def m(part, variant, name):
        return fmt(_mean(getattr(getattr(sm, part)[variant], name) for sm in sms))

    def pair(part, name):
        return f"{m(part, 'positive_only', name)} / {m(part, 'grpo', name)}"

    s.rows = [("A>0 suppressed during training: positive-only / GRPO (mean over seeds)", pair("training", "pos_suppressed"),
               "much lower under positive-only (Fig. 1d)"),
              ("difference, mean over steps (across seeds)", iv.text(), "< 0", iv.seeds_text()),
              ("A<0 boosted during training: positive-only / GRPO (not judged)",
               f"{pair('training', 'neg_boosted')}; difference {ivn.text()}", "lower under positive-only (Fig. 1d)",
               ivn.seeds_text()),
              ("one update from theta_0: A>0 suppressed, positive-only / GRPO", pair("update", "pos_suppressed"),
               "lower under positive-only"),
              ("one update: A<0 boosted, positive-only / GRPO", pair("update", "neg_boosted"), ""),
              ("format share of boosted mass: positive-only / GRPO",
               f"{fmt(_mean(sm.format_mass['positive_only'] for sm in sms))} / "
               f"{fmt(_mean(sm.format_mass['grpo'] for sm in sms))}", "GRPO lower (Fig. 4)")]
    s.why = (f"positive-only minus GRPO A>0 suppressed share {iv.text()} across seeds, over {steps} steps x seeds "
             f"({iv.k} seed{'s' if iv.k != 1 else ''}); {_over(iv)}")
    s.notes.append("Fig. 4 (token categories): ![fig4](fig4.png)")
    s.notes.append("Under positive-only training the A<0 tokens have no loss term; their boosted share measures how "
                   "strongly the A>0 update drags them along (coupling), so it is shown beside the verdict, not in it.")
    s.notes.append("Token categories come from a fixed text classifier (cancel_cli/analysis/categories.py); on the "
                   "toy's character tokenizer letters of scaffold words count as format.")
    return s


# -- claim 3: coupling (Fig. 2) ---------------------------------------------------------------------------
COUPLING_SUPPORT = 2.0


def log_ratio(seed: int, num: float, den: float, n: int = 0) -> rs.Estimate:
    """log(num / den) (no within-seed SE: a coupling run averages every pair of its batch)."""
    return rs.Estimate(seed, math.log(max(num, 1e-30) / max(den, 1e-30)), float("nan"), n)


def rule_coupling(same_diff: list[rs.Estimate], high_low: list[rs.Estimate]):
    """Log ratios: supported if both intervals lie above log 2, not supported if either lies below 0 (ratio 1)."""
    ivs = (rs.across_seeds(same_diff), rs.across_seeds(high_low))
    if all(rs.verdict_above(iv, math.log(COUPLING_SUPPORT)) == rs.SUPPORTED for iv in ivs):
        return rs.SUPPORTED, ivs
    if any(rs.verdict_above(iv, 0.0) == rs.NOT_SUPPORTED for iv in ivs):
        return rs.NOT_SUPPORTED, ivs
    return rs.INCONCLUSIVE, ivs


def _ratio(v) -> str:
    return f"{math.exp(v):.3g}" if v == v and math.isfinite(v) else "n/a"


def claim_coupling(store) -> Section:
    from .analysis.coupling import CouplingSummary

    s = Section("3. Coupling concentrates on same-token, low-confidence pairs", "fig2",
                "per seed, the ratio of mean |A_k<h_j,h_k>phi_jk| over same-token pairs to that over different-token "
                "pairs, and over highest- vs lowest-entropy-bin pairs, each on the log scale; supported if both "
                "across-seed intervals of the log ratio lie above log 2, not supported if either lies below log 1 = 0, "
                "else inconclusive.  A coupling run averages every pair of its batch and has no within-seed SE, so the "
                "interval is between-seed only and one seed is inconclusive; ratios are shown exponentiated (geometric "
                "mean over seeds).  " + ACROSS)
    runs = seed_runs(store, "coupling")
    if not runs:
        return _missing(s, "run `cancel coupling`")
    sms = {seed: CouplingSummary.of(run) for seed, run in runs.items()}
    r1 = [log_ratio(k, sm.same_abs_contribution, sm.diff_abs_contribution, sm.tokens_used) for k, sm in sms.items()]
    r2 = [log_ratio(k, sm.contribution_high_high, sm.contribution_low_low, sm.tokens_used) for k, sm in sms.items()]
    s.verdict, (iv1, iv2) = rule_coupling(r1, r2)

    def m(name, d=3):
        return fmt(_mean(getattr(sm, name) for sm in sms.values()), d)

    def texts(num, den):
        return "; ".join(f"s{k}: {rs.ratio_text(getattr(sm, num), getattr(sm, den))}" for k, sm in sms.items())

    s.rows = [("mean <h_j,h_k>: same / different token (mean over seeds)", f"{m('same_mean_hh')} / {m('diff_mean_hh')}",
               "same > different (Fig. 2a)"),
              ("mean phi: same / different", f"{m('same_mean_phi', 4)} / {m('diff_mean_phi', 4)}",
               "non-negligible mainly for same (Fig. 2b)"),
              ("|contribution| ratio same / different (across seeds)", _text(iv1, _ratio), "> 1",
               texts("same_abs_contribution", "diff_abs_contribution")),
              ("|contribution| ratio high-high / low-low entropy (across seeds)", _text(iv2, _ratio), "> 1 (Fig. 2c)",
               texts("contribution_high_high", "contribution_low_low")),
              ("proxy vs exact kernel (Pearson / Spearman)", f"{m('pearson_proxy_exact')} / {m('spearman_proxy_exact')}",
               "proxy tracks full update (App. D.1)")]
    s.why = (f"same/different ratio {_text(iv1, _ratio)}, high/low entropy ratio {_text(iv2, _ratio)} across seeds "
             f"({_over(iv1)})")
    tr = store.latest("train", where=lambda r: r.has_table("proxy"))
    if tr:
        p = tr.read_table("proxy")
        pm, plo, phi = mean_ci(p.sign_agreement)
        s.rows.append(("LM-head vs full sign agreement over training (Fig. 10)", f"{fmt(pm)} [{fmt(plo)}, {fmt(phi)}]", "≈ 0.7"))
    return s


# -- claim 4: Table 1 ---------------------------------------------------------------------------------------
TABLE1_RULE = (
    "per seed, LM-head closed form, same+low-confidence masks minus random masks, each a difference of proportions "
    "with its binomial SE: (i) the signed Boost Rate (share of candidates with sign(δ) = sign(Σ_M A), over candidates "
    "with Σ_M A ≠ 0), which measures coupling whatever the sign mix of the masked tokens; (ii) the sign-controlled raw "
    "Boost Rate, defined only when every masked token has one sign (--mask-sign positive: Boost Rate; negative: "
    "100 − Boost Rate).  Supported if the across-seed intervals of (i) and, where defined, (ii) lie above 0; not "
    "supported if either lies below 0; else inconclusive.  P(Σ_M A > 0) is shown per condition so the sign-balance "
    "confound can be read off; with --mask-sign any or same the raw Boost Rate is shown, not judged.  " + ACROSS)
SIGN_DIRECTION = {"positive": 1, "negative": -1}
MASK_SIGN_NOTE = (
    "With --mask-sign positive every masked token has A_k > 0, and for a same-token pair phi_ck = (1 − π_c(o))(1 − π_k(o)) "
    "+ Σ_{v≠o} π_c(v) π_k(v) ≥ 0 (Eq. 8, 10), so the first-order LM-head masking effect (η/N) Σ_M A_k <h_c,h_k> phi_ck "
    "is positive whenever the masked same-token tokens' hidden states point the candidate's way (<h_c,h_k> > 0; 99.9% "
    "of same-token pairs on the toy): removing them can only take away upward pushes on the candidate's own logit.  "
    "The same-token raw Boost Rate on the LM-head path (equal to the signed one there, since P(Σ_M A > 0) = 100%) "
    "therefore reads ~100% whatever the coupling strength; the informative comparisons are random vs low-confidence, "
    "the signed Boost Rate under --mask-sign any or same, and the full-parameter path, whose sign no such identity "
    "fixes.")


def table1_estimates(seed: int, sm):
    """(signed-BR difference, sign-controlled raw-BR difference or None) of same+low minus random, LM head, in
    points, each with the binomial SE of a difference of proportions."""
    a, b = sm.head["same_lowconf"], sm.head["random"]
    signed = _signed_diff(seed, sm, "same_lowconf")
    direction = SIGN_DIRECTION.get(sm.mask_sign)
    if direction is None:
        return signed, None
    d2, _, hi2 = prop_diff(a.boost_rate, a.n, b.boost_rate, b.n)
    return signed, rs.Estimate(seed, direction * d2, (hi2 - d2) / Z, min(a.n, b.n))


def rule_table1(signed: list[rs.Estimate], raw: list[rs.Estimate] | None = None):
    """Supported if the signed-BR interval and, when given, the sign-controlled raw-BR interval lie above 0."""
    return all_above(signed, *([raw] if raw is not None else []))


def _table1_why(ivs, mask_sign: str, candidates: int) -> str:
    why = f"same+low-conf minus random signed BR {ivs[0].text(1)} points"
    if len(ivs) > 1:
        why += f"; sign-controlled raw BR ({mask_sign} masks) {ivs[1].text(1)} points"
    else:
        why += f"; raw BR not sign-controlled (--mask-sign {mask_sign}), not judged"
    return why + f"; {candidates} candidates"


def table1_verdicts(sm) -> tuple[list[str], str]:
    """The verdicts of TABLE1_RULE on one MaskSummary (one seed), and the sentence that states them."""
    signed, raw = table1_estimates(0, sm)
    _, ivs = rule_table1([signed], None if raw is None else [raw])
    return [rs.verdict_above(iv) for iv in ivs], _table1_why(ivs, sm.mask_sign, sm.head["random"].n)


def claim_table1(store) -> Section:
    from .analysis.masking import CONDITIONS, PAPER_TABLE1, MaskSummary

    s = Section("4. Table 1: masking same-token low-confidence tokens moves the candidate most", "table1", TABLE1_RULE)
    runs = seed_runs(store, "mask-effect")
    if not runs:
        return _missing(s, "run `cancel mask-effect`")
    sms = {seed: MaskSummary.of(run) for seed, run in runs.items()}
    est = [table1_estimates(seed, sm) for seed, sm in sms.items()]
    raw = [r for _, r in est if r is not None]
    s.verdict, ivs = rule_table1([e for e, _ in est], raw if len(raw) == len(est) else None)
    last = sms[max(sms)]
    labels = {"random": "random", "same": "same token", "lowconf": "low confidence", "same_lowconf": "same + low conf."}

    def m(path, c, name, d):
        return fmt(_mean(getattr(getattr(sm, path)[c], name) for sm in sms.values()), d)

    def cells(path, c):
        return " / ".join(m(path, c, n, d) for n, d in (("boost_rate", 1), ("p_sum_pos", 1), ("signed_boost_rate", 1),
                                                        ("mean_boost", 5)))

    for c in CONDITIONS:
        p = PAPER_TABLE1[c]
        s.rows.append((f"{labels[c]}: BR / P(ΣA>0) / signed BR / MB, head; full (mean over seeds)",
                       f"{cells('head', c)}; {cells('full', c)}", f"BR {p[0]:.1f}, MB {p[1]:+.4f}; BR {p[2]:.1f}, MB {p[3]:+.4f}"))
    s.rows.append(("same+low minus random, signed BR, head (points, across seeds)", ivs[0].text(1), "> 0",
                   ivs[0].seeds_text(1)))
    if len(ivs) > 1:
        s.rows.append((f"same+low minus random, sign-controlled raw BR ({last.mask_sign} masks), head (points)",
                       ivs[1].text(1), "> 0 (74.1 − 50.6)", ivs[1].seeds_text(1)))
    s.why = _table1_why(ivs, last.mask_sign, last.head["random"].n) + f" per seed ({_over(ivs[0])})"
    same = rs.across_seeds([_signed_diff(seed, sm, "same") for seed, sm in sms.items()])
    s.notes.append(f"Masks: --mask-sign {last.mask_sign}, |M| = {last.mask_size}, low confidence {last.low_conf} "
                   f"(p < {fmt(last.low_conf_threshold_p, 4)}, {fmt(last.low_conf_share * 100, 1)}% of response tokens); "
                   f"{last.candidates} head / {last.full_candidates} full candidates (seed {max(sms)}).")
    s.notes.append(f"Same token alone minus random, signed BR (head): {same.text(1)} points across seeds "
                   f"({same.seeds_text(1)}).")
    s.notes.append(f"The first-order term (Eq. 9) predicts the sign of the LM-head masking effect for "
                   f"{fmt(_mean(sm.first_order_sign_agreement for sm in sms.values()) * 100, 1)}% of (candidate, mask) "
                   f"pairs (mean over seeds).")
    if last.mask_sign == "positive":
        s.notes.append(MASK_SIGN_NOTE)
    return s


def _signed_diff(seed: int, sm, cond: str) -> rs.Estimate:
    """Signed Boost Rate of ``cond`` minus random masks (LM head, points) with its binomial SE."""
    a, b = sm.head[cond], sm.head["random"]
    d, _, hi = prop_diff(a.signed_boost_rate, a.n_signed, b.signed_boost_rate, b.n_signed)
    return rs.Estimate(seed, d, (hi - d) / Z, min(a.n_signed, b.n_signed))


# -- claim 5: value gap (Fig. 5a) ---------------------------------------------------------------------------
def rule_value(pos: list[rs.Estimate], neg: list[rs.Estimate]):
    """Supported if the gap's interval lies above 0 for both origins; not supported if either lies below 0."""
    return all_above(pos, neg)


def claim_value(store) -> Section:
    from .analysis.value import ValueSummary

    s = Section("5. Boosted tokens have higher Monte-Carlo value than suppressed ones, from both origins", "fig5",
                "per seed, gap = mean value(boosted) - mean value(suppressed) with an SE that contains the token-to-token "
                "spread and the per-token Monte-Carlo noise, for positive and negative rollouts: supported if both "
                "across-seed intervals lie above 0, not supported if either lies below 0, else inconclusive.  " + ACROSS)
    runs = seed_runs(store, "mc-value")
    if not runs:
        return _missing(s, "run `cancel mc-value`")
    sms = {seed: ValueSummary.of(run) for seed, run in runs.items()}
    gaps = {o: [rs.Estimate(seed, sm.gap[o]["gap"], sm.gap[o]["se"], sm.tokens) for seed, sm in sms.items()]
            for o in ("pos", "neg", "all")}
    s.verdict, (ivp, ivn) = rule_value(gaps["pos"], gaps["neg"])
    for o, lab in (("pos", "positive rollouts"), ("neg", "negative rollouts"), ("all", "all")):
        iv = rs.across_seeds(gaps[o])
        s.rows.append((f"gap, {lab} (across seeds)", iv.text(), "> 0 (Fig. 5a)", iv.seeds_text()))
    last = sms[max(sms)]
    s.rows.append(("estimator / tokens per cell / M / mean per-token SE",
                   f"{last.estimator} / {last.per_cell} / {last.M} / {fmt(_mean(sm.mean_se for sm in sms.values()))}",
                   "Eq. 20 / n/a / 256 / n/a"))
    s.why = f"positive-origin gap {ivp.text()}, negative-origin gap {ivn.text()} across seeds ({_over(ivp)})"
    if last.estimator == "eq20":
        s.notes.append(f"{sum(sm.skipped_confident for sm in sms.values())} of {sum(sm.tokens for sm in sms.values())} "
                       f"tokens (all seeds) had p > 1-1e-3 and were skipped (Eq. 20 divides by 1-p).")
    rep = store.latest("mc-value", where=lambda r: r.has_table("repeat"))
    if rep:
        rg = ValueSummary.of(rep).repeat_gaps
        s.notes.append("Fig. 11 (repeated updates): gap after 1..K updates = " + ", ".join(fmt(v) for v in rg) +
                       f" (paper: grows monotonically; run {rep.id}).")
    return s


# -- claim 6: the gap peaks at intermediate entropy (Fig. 5b) ---------------------------------------------
PEAK_K, CONTRASTS = 40, ((40, 100), (40, 10))  # the paper's peak, against the full set and the top 10%
CONTRAST_BOOTSTRAP = 1000


def contrast_ses(vals: pd.DataFrame, pairs=CONTRASTS, reps: int = CONTRAST_BOOTSTRAP, seed: int = 0) -> list[float]:
    """SE of gap(top-a%) - gap(top-b%) for each (a, b) by a paired bootstrap over an mc-value run's candidate tokens
    (``values_final``: class, decile, value): tokens are resampled within class as ``entropy_gap.gap_curve`` does, and
    one resample serves every k, since the top-k sets are nested and their gaps correlated."""
    rng = np.random.default_rng(seed)
    vals = vals.dropna(subset=["value"])
    ks = sorted({k for p in pairs for k in p})
    gaps = {k: np.zeros(reps) for k in ks}
    for cls, sign in (("boosted", 1.0), ("suppressed", -1.0)):
        d = vals[vals["class"] == cls]
        v, dec = d.value.to_numpy(float), d.decile.to_numpy()
        if len(v) < 2:
            return [float("nan")] * len(pairs)
        for start in range(0, reps, 100):
            idx = rng.integers(0, len(v), (min(100, reps - start), len(v)))
            vv, dd = v[idx], dec[idx]
            for k in ks:
                top = dd >= 10 - k // 10
                with np.errstate(invalid="ignore", divide="ignore"):
                    gaps[k][start : start + len(idx)] += sign * (vv * top).sum(1) / top.sum(1)
    out = []
    for a, b in pairs:
        diff = gaps[a] - gaps[b]
        diff = diff[np.isfinite(diff)]
        out.append(float(diff.std(ddof=1)) if len(diff) > 1 else float("nan"))
    return out


def rule_entropy(d_full: list[rs.Estimate], d_top10: list[rs.Estimate]):
    """gap(top-40%) - gap(top-100%) and - gap(top-10%): supported if both intervals lie above 0, not supported if
    either lies below 0."""
    return all_above(d_full, d_top10)


def entropy_estimates(seed: int, run, store) -> tuple[rs.Estimate, rs.Estimate, dict, bool]:
    """The seed's two contrasts (SEs by ``contrast_ses`` on its mc-value run's tokens, NaN if that table is gone),
    its curve k -> gap, and whether the SEs were available."""
    from .analysis.entropy_gap import EntropyGapSummary

    sm = EntropyGapSummary.of(run)
    curve = {int(c["k"]): float(c["gap"]) for c in sm.curve}
    ses = [float("nan")] * len(CONTRASTS)
    try:
        src = store.get(sm.from_run)
        if src.has_table("values_final"):
            ses = contrast_ses(src.read_table("values_final"), seed=seed)
    except UserError:
        pass
    nan = float("nan")
    est = [rs.Estimate(seed, curve.get(a, nan) - curve.get(b, nan), se) for (a, b), se in zip(CONTRASTS, ses)]
    return est[0], est[1], curve, all(math.isfinite(x) for x in ses)


def claim_entropy(store) -> Section:
    s = Section("6. The value gap peaks at intermediate entropy", "fig5",
                "per seed, from the entropy-gap curve (gap on the top-k% highest-entropy tokens of all response tokens), "
                f"two contrasts fixed in advance at the paper's peak k = {PEAK_K}: d1 = gap(top-40%) - gap(top-100%) and "
                "d2 = gap(top-40%) - gap(top-10%); each seed's SE comes from a paired bootstrap over its mc-value run's "
                f"candidate tokens ({CONTRAST_BOOTSTRAP} resamples within class, one resample for all k since the top-k "
                "sets are nested; a seed without that token table has no SE, leaving the between-seed variance); "
                "supported if both across-seed intervals lie above 0, not supported if either lies below 0, else "
                "inconclusive.  The peak k of the across-seed mean curve is reported, not judged (the argmax of a noisy "
                "curve is biased upward).  " + ACROSS)
    runs = seed_runs(store, "entropy-gap", ignore=("seed", "from_run"))
    if not runs:
        return _missing(s, "run `cancel entropy-gap`")
    d1, d2, curves, with_se = [], [], {}, []
    for seed, run in runs.items():
        a, b, curve, ok = entropy_estimates(seed, run, store)
        d1.append(a)
        d2.append(b)
        curves[seed] = curve
        with_se.append(ok)
    s.verdict, (iv1, iv2) = rule_entropy(d1, d2)
    if iv1.k == 0 and iv2.k == 0:
        return _missing(s, "too few tokens per subset")
    mean_curve = pd.DataFrame(curves).mean(axis=1, skipna=True).dropna().sort_index()
    peak = int(mean_curve.idxmax()) if len(mean_curve) else None
    s.rows = [("d1 = gap(top-40%) - gap(top-100%) (across seeds)", iv1.text(), "> 0 (peak ≈ 40%)", iv1.seeds_text()),
              ("d2 = gap(top-40%) - gap(top-10%) (across seeds)", iv2.text(), "> 0", iv2.seeds_text()),
              ("peak of the across-seed mean curve (reported, not judged)", f"{peak}%" if peak else "n/a", "≈ 40%"),
              ("curve k: gap (mean over seeds)", ", ".join(f"{k}: {fmt(g, 2)}" for k, g in mean_curve.items()),
               "rise then fall")]
    src = ("paired token bootstrap" if all(with_se) else
           f"between-seed only for {with_se.count(False)} seed(s) without a token table")
    s.why = f"d1 {iv1.text()}, d2 {iv2.text()} across seeds (within-seed SE: {src}; {_over(iv1)})"
    return s


# -- claim 7: budget (Fig. 6, 7b) ---------------------------------------------------------------------------
def _wls_slope(x, y, se) -> tuple[float, float]:
    """Weighted least-squares slope of y on x (weights 1 / se^2) and its SE."""
    x, y, w = np.asarray(x, float), np.asarray(y, float), 1 / np.maximum(np.asarray(se, float), 1e-9) ** 2
    xm = (w * x).sum() / w.sum()
    sxx = (w * (x - xm) ** 2).sum()
    return float((w * (x - xm) * y).sum() / sxx), float(1 / math.sqrt(sxx))


def budget_points(sm) -> pd.DataFrame:
    """The top-100% gaps of a BudgetSummary with an SE, by axis value."""
    g = pd.DataFrame(sm.points, columns=["value", "subset", "gap", "se", "n_boosted", "n_suppressed"])
    return g[g.subset == 100].dropna(subset=["gap", "se"]).sort_values("value")


def rule_budget(batch: list[rs.Estimate], rollout: list[rs.Estimate]):
    """Supported if the slope's interval lies above 0 on both axes; not supported if either lies below 0."""
    return all_above(batch, rollout)


def claim_budget(store) -> Section:
    from .analysis.budget import BudgetSummary

    s = Section("7. A larger sampling budget widens the value gap", "fig6",
                "per seed and axis (batch size, rollout-n), the weighted least-squares slope of the gap (all candidates, "
                "top-100%, weights 1/SE^2) on the axis value, with its SE; supported if both across-seed intervals of "
                "the slope lie above 0, not supported if either lies below 0, else inconclusive.  Fig. 7b (reward mix) "
                "reported beside.  " + ACROSS)
    slopes: dict = {}
    paper = {"batch-size": "grows 16 -> 96", "rollout-n": "grows 1 -> 8", "reward-mix": "diminishes when sparse or saturated"}
    for axis in ("batch-size", "rollout-n", "reward-mix"):
        runs = seed_runs(store, "budget-sweep", axis=axis)
        if not runs:
            continue
        pts, est, cand, max_se = [], [], [], []
        for seed, run in runs.items():
            sm = BudgetSummary.of(run)
            g = budget_points(sm)
            pts.append(g.assign(seed=seed))
            cand.append(sm.candidates)
            max_se.append(sm.max_gap_se)
            if len(g) > 2:
                est.append(rs.Estimate(seed, *_wls_slope(g.value, g.gap, g.se), len(g)))
        mean = pd.concat(pts).groupby("value").gap.mean()
        text = ", ".join(f"{int(v)}: {fmt(x, 2)}" for v, x in mean.items())
        s.rows.append((f"gap vs {axis} (top-100%, mean over {len(runs)} seed(s); {'/'.join(map(str, cand))} candidates, "
                       f"max SE {fmt(max(max_se), 2)})", text, paper[axis]))
        if est and axis != "reward-mix":
            slopes[axis] = est
            iv = rs.across_seeds(est)
            s.rows.append((f"WLS slope of the gap on {axis} (across seeds)", _text(iv, _sci), "> 0", _seeds(iv, _sci)))
    if "batch-size" not in slopes or "rollout-n" not in slopes:
        return _missing(s, "run `cancel budget-sweep --axis batch-size` and `--axis rollout-n`")
    s.verdict, ivs = rule_budget(slopes["batch-size"], slopes["rollout-n"])
    s.why = ("slope of the gap across seeds: " + ", ".join(f"{a} {_text(iv, _sci)} ({_over(iv)})"
                                                          for a, iv in zip(("batch-size", "rollout-n"), ivs)))
    return s


CLAIMS = [claim_flipping, claim_positive_only, claim_coupling, claim_table1, claim_value, claim_entropy, claim_budget]
