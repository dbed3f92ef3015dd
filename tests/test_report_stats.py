"""Across-seed intervals and verdicts (cancel_cli/report_stats.py) on synthetic per-seed estimates."""

import math

import numpy as np
import pytest

from cancel_cli import report_stats as rs
from cancel_cli.report_stats import Estimate, across_seeds


def est(values, se=float("nan")):
    return [Estimate(i, v, se) for i, v in enumerate(values)]


def test_t_critical_values_match_scipy():
    stats = pytest.importorskip("scipy.stats")
    for df in (1, 2, 3, 5, 10, 30, 31, 50, 200):
        assert rs.t975(df) == pytest.approx(stats.t.ppf(0.975, df), rel=2e-3)


def test_three_seeds_t_interval_by_hand():
    iv = across_seeds(est([1.0, 2.0, 3.0]))
    h = 4.3027 * 1.0 / math.sqrt(3)  # s = 1, t_2 = 4.3027
    assert (iv.mean, iv.lo, iv.hi) == pytest.approx((2.0, 2 - h, 2 + h))
    assert iv.k == 3 and "between-seed" in iv.method


def test_within_seed_se_floors_a_lucky_agreement_of_seeds():
    iv = across_seeds(est([0.5, 0.5, 0.5], se=0.3))  # seeds agree exactly, but each is noisy
    h = 4.3027 * math.sqrt(0.09 / 3)
    assert (iv.lo, iv.hi) == pytest.approx((0.5 - h, 0.5 + h))
    assert "within-seed floor" in iv.method
    assert rs.verdict_above(iv) == "inconclusive"
    assert rs.verdict_above(across_seeds(est([0.5, 0.5, 0.5], se=0.01))) == "supported"


def test_one_seed_uses_within_seed_ci_or_is_undefined():
    iv = across_seeds([Estimate(0, 0.3, 0.1)])
    assert (iv.lo, iv.hi) == pytest.approx((0.3 - 0.196, 0.3 + 0.196), abs=1e-3)
    assert rs.verdict_above(iv) == "supported"
    iv = across_seeds([Estimate(0, 0.3)])
    assert math.isnan(iv.lo) and rs.verdict_above(iv) == "inconclusive"


def test_non_finite_seeds_dropped_and_empty_is_inconclusive():
    iv = across_seeds(est([1.0, float("nan"), 3.0]))
    assert iv.k == 2 and iv.mean == 2.0
    assert rs.verdict_above(across_seeds([])) == "inconclusive"


@pytest.mark.parametrize("values,expected", [
    ([0.30, 0.32, 0.31], "supported"), ([-0.30, -0.32, -0.31], "not supported"), ([0.5, -0.4, 0.1], "inconclusive"),
    ([0.0, 0.0, 0.0], "inconclusive"),  # zero-width interval at the threshold: touching is inconclusive
])
def test_verdict_above_and_below(values, expected):
    iv = across_seeds(est(values))
    assert rs.verdict_above(iv) == expected
    mirrored = {"supported": "not supported", "not supported": "supported"}.get(expected, expected)
    assert rs.verdict_below(iv) == mirrored


def test_boundary_interval_touching_the_threshold_is_inconclusive():
    iv = rs.Interval(0.1, 0.0, 0.2, tuple(est([0.1])))
    assert rs.verdict_above(iv, 0.0) == "inconclusive"
    assert rs.verdict_above(iv, -1e-12) == "supported"
    assert rs.verdict_below(rs.Interval(-0.1, -0.2, 0.0), 0.0) == "inconclusive"


@pytest.mark.parametrize("lo,hi,expected", [(-0.05, 0.05, "supported"), (0.2, 0.3, "not supported"),
                                            (-0.3, -0.2, "not supported"), (0.05, 0.15, "inconclusive"),
                                            (-0.1, 0.05, "inconclusive")])
def test_verdict_inside_equivalence_band(lo, hi, expected):
    assert rs.verdict_inside(rs.Interval((lo + hi) / 2, lo, hi), -0.1, 0.1) == expected


def test_paired_differences_and_combine():
    a, b = est([0.5, 0.6, 0.7], se=0.03), [Estimate(1, 0.5, 0.04), Estimate(2, 0.5, 0.04), Estimate(7, 0.0)]
    d = rs.paired(a, b)
    assert [e.seed for e in d] == [1, 2] and [e.value for e in d] == pytest.approx([0.1, 0.2])
    assert d[0].se == pytest.approx(0.05)
    assert rs.combine("supported", "supported") == "supported"
    assert rs.combine("supported", "not supported") == "not supported"
    assert rs.combine("supported", "inconclusive") == "inconclusive"
    assert rs.combine() == "inconclusive"


def test_proportion_and_mean_estimates():
    p = rs.proportion(3, 0.25, 100)
    assert (p.seed, p.value, p.se, p.n) == (3, 0.25, pytest.approx(math.sqrt(0.25 * 0.75 / 100)), 100)
    m = rs.mean_estimate(0, [1.0, 2.0, 3.0, np.nan])
    assert (m.value, m.se, m.n) == (2.0, pytest.approx(1 / math.sqrt(3)), 3)
    assert "s0: 0.500±" in across_seeds(est([0.5], se=0.1)).seeds_text()
