"""REPORT.md claims 1-7 decided across seeds: each pure rule on synthetic per-seed estimates (supported, not
supported, inconclusive, an interval touching the threshold), the paired bootstrap of claim 6's contrasts, and
each claim group end to end on a synthetic store of three seeds."""

import math

import numpy as np
import pandas as pd
import pytest

from cancel_cli import report_claims as rc
from cancel_cli import report_stats as rs
from cancel_cli.analysis.budget import BudgetSummary
from cancel_cli.analysis.coupling import CouplingSummary
from cancel_cli.analysis.entropy_gap import EntropyGapSummary, gap_curve
from cancel_cli.analysis.flip_run import FlipSummary
from cancel_cli.analysis.masking import BoostStats, MaskSummary
from cancel_cli.analysis.positive_only import VARIANTS, PositiveOnlySummary
from cancel_cli.analysis.value import ValueSummary
from cancel_cli.grpo.probe import FlipShares
from cancel_cli.report import write_report
from cancel_cli.scope import scoped

S, N, I = "supported", "not supported", "inconclusive"


def E(values, se=0.01):
    return [rs.Estimate(i, v, se, 100) for i, v in enumerate(values)]


def edge(threshold, se=0.05, side=+1, eps=1e-9):
    """One seed whose within-seed 95% interval ends at ``threshold`` (side=+1: lower end, -1: upper end), moved
    by ``eps`` outward (> 0: clear of the threshold) or inward (< 0: crossing it)."""
    h = rs.Z975 * se
    return [rs.Estimate(0, threshold + side * (h + eps), se)]


# -- pure rules -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("diff,flips,expected", [
    ([0.01, -0.01, 0.0], [0.40, 0.45, 0.42], S),
    ([0.30, 0.32, 0.31], [0.40, 0.45, 0.42], N),  # boosted ratios differ
    ([0.01, -0.01, 0.0], [0.05, 0.06, 0.04], N),  # hardly any flips
    ([0.01, -0.01, 0.0], [0.20, 0.18, 0.22], I),  # flips between 0.10 and 0.25
    ([0.05, 0.15, 0.10], [0.40, 0.45, 0.42], I),  # the interval straddles 0.10
])
def test_rule_flipping(diff, flips, expected):
    assert rc.rule_flipping(E(diff), E(flips, se=float("nan")))[0] == expected


def test_rule_flipping_boundaries():
    flips = [rs.Estimate(0, 0.4)]
    assert rc.rule_flipping(edge(0.10, side=-1, eps=-1e-9), flips)[0] == I  # upper end reaches 0.10
    assert rc.rule_flipping(edge(0.10, side=-1, eps=1e-9), flips)[0] == S
    assert rc.rule_flipping(E([0.0, 0.0, 0.0]), E([0.25, 0.25, 0.25], se=float("nan")))[0] == S  # >= 0.25
    assert rc.rule_flipping(E([0.0, 0.0, 0.0]), E([0.2499, 0.25, 0.25], se=float("nan")))[0] == I
    assert rc.rule_flipping([rs.Estimate(0, 0.0)], flips)[0] == I  # one seed without an SE


@pytest.mark.parametrize("diffs,expected", [([-0.15, -0.13, -0.14], S), ([0.10, 0.12, 0.11], N),
                                            ([-0.15, -0.13, 0.15], I)])
def test_rule_positive_only(diffs, expected):
    assert rc.rule_positive_only(E(diffs))[0] == expected


def test_rule_positive_only_boundary():
    assert rc.rule_positive_only(edge(0.0, side=-1, eps=-1e-9))[0] == I
    assert rc.rule_positive_only(edge(0.0, side=-1, eps=1e-9))[0] == S


def logs(ratios):
    return E([math.log(r) for r in ratios], se=float("nan"))


@pytest.mark.parametrize("r1,r2,expected", [
    ([10, 12, 8], [5, 6, 4], S), ([10, 12, 8], [0.5, 0.6, 0.4], N), ([1.5, 1.4, 1.6], [5, 6, 4], I),
    ([10, 12, 8], [1.2, 3, 6], I),
])
def test_rule_coupling(r1, r2, expected):
    assert rc.rule_coupling(logs(r1), logs(r2))[0] == expected


def test_rule_coupling_boundary_and_one_seed():
    big = E([5.0], se=0.01)
    assert rc.rule_coupling(edge(math.log(2)), big)[0] == S
    assert rc.rule_coupling(edge(math.log(2), eps=-1e-9), big)[0] == I  # lower end reaches log 2
    assert rc.rule_coupling(logs([1e9]), logs([1e9]))[0] == I  # one seed, no within-seed SE


@pytest.mark.parametrize("signed,raw,expected", [
    ([20, 25, 22], [20, 25, 22], S), ([20, 25, 22], None, S), ([20, 25, 22], [-20, -25, -22], N),
    ([-20, -25, -22], None, N), ([20, 25, 22], [5, -5, 1], I),
])
def test_rule_table1(signed, raw, expected):
    assert rc.rule_table1(E(signed, 2.0), None if raw is None else E(raw, 2.0))[0] == expected


def test_rule_table1_boundary():
    assert rc.rule_table1(edge(0.0, se=3.0, eps=-1e-9))[0] == I
    assert rc.rule_table1(edge(0.0, se=3.0))[0] == S


@pytest.mark.parametrize("pos,neg,expected", [([0.1, 0.12, 0.11], [0.05, 0.06, 0.07], S),
                                              ([0.1, 0.12, 0.11], [-0.05, -0.06, -0.07], N),
                                              ([0.1, 0.12, 0.11], [0.05, -0.06, 0.01], I)])
def test_rule_value(pos, neg, expected):
    assert rc.rule_value(E(pos), E(neg))[0] == expected


def test_rule_value_boundary():
    ok = E([0.1], 0.01)
    assert rc.rule_value(ok, edge(0.0, eps=-1e-9))[0] == I
    assert rc.rule_value(ok, edge(0.0))[0] == S


@pytest.mark.parametrize("d1,d2,expected", [([0.05, 0.06, 0.07], [0.03, 0.04, 0.05], S),
                                            ([0.05, 0.06, 0.07], [-0.03, -0.04, -0.05], N),
                                            ([0.05, -0.06, 0.07], [0.03, 0.04, 0.05], I)])
def test_rule_entropy(d1, d2, expected):
    assert rc.rule_entropy(E(d1), E(d2))[0] == expected


def test_rule_entropy_boundary_and_between_seed_only():
    ok = E([0.1], 0.01)
    assert rc.rule_entropy(edge(0.0, eps=-1e-9), ok)[0] == I
    assert rc.rule_entropy(edge(0.0), ok)[0] == S
    nose = E([0.05, 0.06, 0.07], se=float("nan"))  # no token table: the between-seed spread alone decides
    verdict, (iv, _) = rc.rule_entropy(nose, nose)
    assert verdict == S and iv.hi - iv.mean == pytest.approx(rs.t975(2) * 0.01 / math.sqrt(3))


@pytest.mark.parametrize("b,r,expected", [([1e-3, 1.2e-3, 0.9e-3], [2e-3, 2.5e-3, 1.5e-3], S),
                                          ([1e-3, 1.2e-3, 0.9e-3], [-2e-3, -2.5e-3, -1.5e-3], N),
                                          ([1e-3, -1.2e-3, 0.9e-3], [2e-3, 2.5e-3, 1.5e-3], I)])
def test_rule_budget(b, r, expected):
    assert rc.rule_budget(E(b, 1e-4), E(r, 1e-4))[0] == expected


def test_rule_budget_boundary():
    ok = E([1e-3], 1e-5)
    assert rc.rule_budget(edge(0.0, se=1e-4, eps=-1e-12), ok)[0] == I
    assert rc.rule_budget(edge(0.0, se=1e-4, eps=1e-12), ok)[0] == S


def test_rules_use_every_seed():
    # two seeds say "above 0" alone; the third disagrees: across the three seeds the verdict is inconclusive
    diffs = E([0.10, 0.11, -0.12])
    assert rc.rule_value(diffs[2:], diffs[2:])[0] == N and rc.rule_value(diffs[:2], diffs[:2])[0] == S
    verdict, (iv, _) = rc.rule_value(diffs, diffs)
    assert verdict == I and iv.k == 3 and iv.mean == pytest.approx(0.03)


# -- claim 6: paired bootstrap over tokens ------------------------------------------------------------------
def value_table(rng, n_per_decile=40, bump=(0, 0, 0, 0, 0, 0, 0.3, 0.3, 0.3, 0.0), noise=0.2):
    rows = []
    for dec in range(10):
        for cls in ("boosted", "suppressed"):
            v = 0.5 + (bump[dec] if cls == "boosted" else 0.0) + rng.normal(0, noise, n_per_decile)
            rows.append(pd.DataFrame({"decile": dec, "class": cls, "value": v, "p": 0.5, "entropy": dec / 10.0}))
    return pd.concat(rows, ignore_index=True)


def test_contrast_ses_are_paired_over_nested_sets():
    t = value_table(np.random.default_rng(0))
    se1, se2 = rc.contrast_ses(t, reps=2000)
    # analytic SE of gap40 - gap100 with independent strata: per class (n60/n)^2 (v40/n40 + v60/n60)
    def part(cls):
        d = t[t["class"] == cls]
        a, b = d[d.decile >= 6].value, d[d.decile < 6].value
        return (len(b) / len(d)) ** 2 * (a.var() / len(a) + b.var() / len(b))
    analytic = math.sqrt(part("boosted") + part("suppressed"))
    assert se1 == pytest.approx(analytic, rel=0.15)
    # treating the nested sets as independent would add the two gaps' variances: clearly larger
    g = {k: gap_curve(t, 2000, 0, ks=(k,)).iloc[0] for k in (40, 100)}
    independent = math.hypot(*[(g[k].ci_high - g[k].ci_low) / (2 * 1.96) for k in (40, 100)])
    assert se1 < 0.8 * independent and np.isfinite(se2)
    flat = t.assign(value=np.where(t["class"] == "boosted", 1.0, 0.0))
    assert rc.contrast_ses(flat, reps=200) == [0.0, 0.0]


# -- end to end on a synthetic store of three seeds -------------------------------------------------------
def shares(**kw):
    return FlipShares(**{**dict.fromkeys(FlipShares.__dataclass_fields__, 0.3), **kw})


def finish(store, command, seed, summary, config=None, tables=None):
    r = store.new_run(command, {"seed": seed, **(config or {})}, model="toy", seed=seed)
    for name, df in (tables or {}).items():
        r.write_table(name, df)
    r.finish(summary)
    return r


def seeds_of(cell: str) -> list[str]:
    return [part.split(":")[0].strip() for part in cell.split(";")]


def row(sec, start):
    return next(r for r in sec.rows if r[0].startswith(start))


def fill_flip_and_positive_only(store, rng):
    for seed, (pos_b, neg_b, po_supp) in enumerate([(0.40, 0.39, 0.25), (0.42, 0.43, 0.27), (0.41, 0.40, 0.26)]):
        steps = pd.DataFrame([{"model": "toy", "step": s, **dict.fromkeys(FlipShares.__dataclass_fields__, 0.3),
                               "pos_boosted": pos_b + rng.normal(0, 0.01), "neg_boosted": neg_b + rng.normal(0, 0.01),
                               "pos_suppressed": 0.45, "flip_rate": 0.45} for s in range(1, 6)])
        fs = FlipShares.mean_of(steps)
        finish(store, "flip", seed, FlipSummary(models=["toy"], steps=5, shares={"toy": fs}), tables={"steps": steps})
        tr = pd.DataFrame([{"step": s, "variant": v, **dict.fromkeys(FlipShares.__dataclass_fields__, 0.3),
                            "pos_suppressed": (po_supp if v == "positive_only" else 0.40) + rng.normal(0, 0.01)}
                           for s in range(1, 6) for v in VARIANTS])
        finish(store, "positive-only", seed,
               PositiveOnlySummary(update={v: shares() for v in VARIANTS},
                                   training={v: FlipShares.mean_of(tr[tr.variant == v]) for v in VARIANTS},
                                   format_mass={v: 0.5 for v in VARIANTS}, train_steps=5), tables={"training": tr})


def test_flip_and_positive_only_claims_across_three_seeds(store):
    fill_flip_and_positive_only(store, np.random.default_rng(0))
    view = scoped(store, "toy", [0, 1, 2])
    flip = rc.claim_flipping(view)
    assert flip.verdict == S, flip.why
    diff = row(flip, "difference of boosted ratios")
    assert seeds_of(diff[3]) == ["s0", "s1", "s2"] and "3 seeds" in flip.why
    assert float(diff[1].split()[0]) == pytest.approx(np.mean([0.01, -0.01, 0.01]), abs=0.01)
    po = rc.claim_positive_only(view)
    assert po.verdict == S and "15 steps x seeds (3 seeds)" in po.why
    assert seeds_of(row(po, "difference, mean over steps")[3]) == ["s0", "s1", "s2"]
    # seed 0 alone: a one-seed interval from the SE over its steps
    one = rc.claim_positive_only(scoped(store, "toy", [0]))
    assert one.verdict == S and "one seed" in one.why


def mask_summary(sign, random_br, sl_br, n=200, sl_signed=None):
    st = lambda br, sg: BoostStats(boost_rate=br, mean_boost=0.0, n=n, p_sum_pos=100.0, signed_boost_rate=sg, n_signed=n)  # noqa: E731
    head = {"random": st(random_br, random_br), "same": st(random_br + 5, random_br + 5), "lowconf": st(random_br, random_br),
            "same_lowconf": st(sl_br, sl_signed if sl_signed is not None else sl_br)}
    return MaskSummary(candidates=n, full_candidates=0, mask_size=8, mask_sign=sign, low_conf="p<0.5",
                       low_conf_threshold_p=0.5, low_conf_share=0.1, first_order_sign_agreement=0.9, head=head, full=head)


def coupling_summary(same, diff, hh, ll):
    return CouplingSummary(tokens=500, tokens_used=500, same_mean_hh=1.0, diff_mean_hh=0.1, same_mean_phi=0.5,
                           diff_mean_phi=0.01, same_abs_contribution=same, diff_abs_contribution=diff,
                           contribution_high_high=hh, contribution_low_low=ll, pearson_proxy_exact=0.9,
                           spearman_proxy_exact=0.9, exact_kernel="exact", exact_tokens=64,
                           max_abs_head_minus_proxy=0.0, head_share_of_kernel_norm=0.5)


def test_coupling_and_table1_claims_across_three_seeds(store):
    for seed, (same, hh, sl) in enumerate([(1e-3, 5e-4, 80.0), (2e-3, 6e-4, 75.0), (1.5e-3, 4e-4, 30.0)]):
        finish(store, "coupling", seed, coupling_summary(same, 1e-5, hh, 1e-5))
        finish(store, "mask-effect", seed, mask_summary("positive", 50.0, sl), config={"mask_sign": "positive"})
    view = scoped(store, "toy", [0, 1, 2])
    cp = rc.claim_coupling(view)
    assert cp.verdict == S, cp.why
    assert seeds_of(row(cp, "|contribution| ratio same")[3]) == ["s0", "s1", "s2"]
    assert row(cp, "|contribution| ratio same")[3].startswith("s0: 100 (0.001 / 1e-05)")
    assert rc.claim_coupling(scoped(store, "toy", [0])).verdict == I  # one seed: no SE
    t1 = rc.claim_table1(view)
    # seeds 0 and 1 alone: +30 and +25 points; seed 2: -20 points -> across the three seeds inconclusive
    assert t1.verdict == I, t1.why
    r = row(t1, "same+low minus random, signed BR")
    assert r[3] == "s0: 30.0±8.9; s1: 25.0±9.2; s2: -20.0±9.4" and "3 seeds" in t1.why
    assert rc.claim_table1(scoped(store, "toy", [0])).verdict == S  # seed 0 alone would say supported
    assert any("~100%" in n for n in t1.notes)  # the --mask-sign positive caveat


def fill_value_entropy_budget(store, rng, missing_tokens=False):
    for seed in range(3):
        vals = value_table(rng)
        gaps = {o: {"gap": 0.1 + 0.01 * seed, "se": 0.02, "ci_low": 0.0, "ci_high": 0.2} for o in ("pos", "neg", "all")}
        mc = finish(store, "mc-value", seed, ValueSummary(estimator="eq20", M=8, per_cell=10, tokens=800,
                                                          skipped_confident=3, mean_se=0.05, cache_hit_rate=0.0, gap=gaps),
                    tables={"values_final": vals})
        curve = gap_curve(vals, 100, seed)
        finish(store, "entropy-gap", seed, EntropyGapSummary(
            from_run="gone" if missing_tokens else mc.id, estimator="eq20", peak_k=40, peak_gap=0.3, peak_ci_low=0.2,
            peak_ci_high=0.4, gap_at_100=0.1, curve=curve.to_dict("records")), config={"from_run": mc.id})
        for axis, xs, slope in (("batch-size", [16, 32, 64, 96], 1e-3), ("rollout-n", [2, 4, 6, 8], 1e-2)):
            pts = [{"value": x, "subset": 100, "gap": 0.05 + slope * x * (1 + 0.1 * seed), "se": 0.01, "n_boosted": 50,
                    "n_suppressed": 50} for x in xs]
            finish(store, "budget-sweep", seed, BudgetSummary(axis=axis, prompts=96, n=8, candidates=100, estimator="eq20",
                                                              M=8, cache_hit_rate=0.0, max_gap_se=0.01, points=pts),
                   config={"axis": axis})


def test_value_entropy_and_budget_claims_across_three_seeds(store):
    fill_value_entropy_budget(store, np.random.default_rng(1))
    view = scoped(store, "toy", [0, 1, 2])
    v = rc.claim_value(view)
    assert v.verdict == S and seeds_of(row(v, "gap, positive")[3]) == ["s0", "s1", "s2"]
    assert float(row(v, "gap, positive")[1].split()[0]) == pytest.approx(0.11)
    en = rc.claim_entropy(view)
    assert en.verdict == S, en.why
    assert "paired token bootstrap" in en.why and "3 seeds" in en.why
    d1 = row(en, "d1 = gap(top-40%)")
    assert seeds_of(d1[3]) == ["s0", "s1", "s2"] and "±" in d1[3]
    assert row(en, "peak of the across-seed mean curve")[1] == "40%"  # reported, not judged
    bu = rc.claim_budget(view)
    assert bu.verdict == S, bu.why
    slope = row(bu, "WLS slope of the gap on batch-size")
    assert [c.split("±")[0] for c in slope[3].split("; ")] == ["s0: 1.00e-03", "s1: 1.10e-03", "s2: 1.20e-03"]
    assert row(bu, "WLS slope of the gap on rollout-n")[1].startswith("1.10e-02 [")


def test_entropy_claim_without_token_tables_uses_the_between_seed_spread(store):
    fill_value_entropy_budget(store, np.random.default_rng(2), missing_tokens=True)
    en = rc.claim_entropy(scoped(store, "toy", [0, 1, 2]))
    assert "between-seed only for 3 seed(s)" in en.why and "±" not in row(en, "d1 = gap")[3]


def test_seed_runs_pools_one_setting_and_the_latest_run_per_seed(store):
    old = finish(store, "mask-effect", 0, mask_summary("positive", 50.0, 80.0), config={"mask_sign": "positive"})
    old.update(start="2000-01-01T00:00:00")
    new = finish(store, "mask-effect", 0, mask_summary("positive", 50.0, 90.0), config={"mask_sign": "positive"})
    other = finish(store, "mask-effect", 1, mask_summary("any", 50.0, 90.0), config={"mask_sign": "any"})
    other.update(start="2000-01-01T00:00:01")  # an older run of another setting: not pooled with seed 0's
    got = rc.seed_runs(store, "mask-effect")
    assert list(got) == [0] and got[0].id == new.id
    assert list(rc.seed_runs(store, "mask-effect", mask_sign="any")) == [1]


def test_write_report_decides_claims_1_to_7_over_the_seeds(store, tmp_path):
    rng = np.random.default_rng(3)
    fill_flip_and_positive_only(store, rng)
    fill_value_entropy_budget(store, rng)
    path = write_report(scoped(store, "toy", [0, 1, 2]), tmp_path, "toy", "toy", {}, {}, seeds=[0, 1, 2])
    text = path.read_text()
    for title in ("## 1. Token flipping", "## 2. Positive-only", "## 5. Boosted tokens", "## 6. The value gap",
                  "## 7. A larger sampling budget"):
        section = text[text.index(title):].split("\n## ")[0]
        assert "| quantity | ours | paper | per seed |" in section and "s2: " in section, title
        assert "across seeds" in section.lower() and "**Verdict: supported**" in section, title
