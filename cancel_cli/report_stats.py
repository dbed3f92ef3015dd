"""Across-seed statistics for REPORT.md verdicts.

A claim is measured once per seed (``Estimate``: the seed's value and, where the experiment has one, its
within-seed standard error).  ``across_seeds`` combines them into one interval:

- mean over the k seeds;
- variance of that mean = max(s^2 / k, mean(se_i^2) / k), where s^2 is the between-seed sample variance
  of the per-seed estimates (it already contains each seed's sampling noise) and mean(se_i^2) / k is the
  variance the mean would have from within-seed sampling noise alone (a floor: with 2-3 seeds s^2 can be
  small by chance);
- critical value t_{k-1}(0.975) when k >= 2; with one seed the within-seed interval (z = 1.96) alone;
  with one seed and no within-seed SE the interval is undefined and the verdict is inconclusive.

``verdict_above`` / ``verdict_below`` / ``verdict_inside`` turn the interval into supported / not
supported / inconclusive; an interval that touches the threshold is inconclusive.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE = "supported", "not supported", "inconclusive"
Z975 = 1.959963984540054
# two-sided 95% Student t critical values t_{df}(0.975), df = 1..30 (larger df: Cornish-Fisher expansion)
_T975 = (12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281, 2.2010, 2.1788, 2.1604,
         2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860, 2.0796, 2.0739, 2.0687, 2.0639, 2.0595, 2.0555,
         2.0518, 2.0484, 2.0452, 2.0423)


def t975(df: int) -> float:
    """Two-sided 95% critical value of Student's t with ``df`` degrees of freedom."""
    if df < 1:
        raise ValueError(f"t critical value needs df >= 1, got {df}")
    if df <= len(_T975):
        return _T975[df - 1]
    z = Z975
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


def _finite(v) -> bool:
    return v is not None and isinstance(v, (int, float, np.floating)) and math.isfinite(v)


@dataclass(frozen=True)
class Estimate:
    """One seed's estimate of a quantity; ``se`` its within-seed standard error (nan if none)."""

    seed: int
    value: float
    se: float = float("nan")
    n: int = 0  # sample size behind ``se`` (tokens, problems, candidates); 0 if not applicable


@dataclass(frozen=True)
class Interval:
    mean: float
    lo: float
    hi: float
    per_seed: tuple[Estimate, ...] = field(default_factory=tuple)
    method: str = ""

    @property
    def k(self) -> int:
        return len(self.per_seed)

    def text(self, d: int = 3) -> str:
        return f"{_f(self.mean, d)} [{_f(self.lo, d)}, {_f(self.hi, d)}]"

    def seeds_text(self, d: int = 3) -> str:
        """Per-seed numbers for a claim table: ``s0: 0.12±0.03; s1: ...`` (± = within-seed 95% half-width)."""
        parts = []
        for e in self.per_seed:
            pm = f"±{_f(Z975 * e.se, d)}" if _finite(e.se) else ""
            parts.append(f"s{e.seed}: {_f(e.value, d)}{pm}")
        return "; ".join(parts) or "n/a"


def _f(v, d: int) -> str:
    return f"{v:.{d}f}" if _finite(v) else "n/a"


def across_seeds(estimates: list[Estimate]) -> Interval:
    """Mean over seeds with a 95% interval (method in the module docstring); non-finite seeds are dropped."""
    est = tuple(e for e in estimates if _finite(e.value))
    k = len(est)
    nan = float("nan")
    if k == 0:
        return Interval(nan, nan, nan, est, "no finite estimate")
    x = np.array([e.value for e in est], dtype=float)
    m = float(x.mean())
    se_w = np.array([e.se for e in est], dtype=float)
    within = float(np.mean(se_w**2) / k) if np.all(np.isfinite(se_w)) else nan
    if k == 1:
        if not math.isfinite(within):
            return Interval(m, nan, nan, est, "one seed, no within-seed SE")
        h = Z975 * math.sqrt(within)
        return Interval(m, m - h, m + h, est, "one seed: within-seed normal 95% CI")
    between = float(x.var(ddof=1) / k)
    var = max(between, within) if math.isfinite(within) else between
    h = t975(k - 1) * math.sqrt(var)
    src = "between-seed" if not math.isfinite(within) or between >= within else "within-seed floor"
    return Interval(m, m - h, m + h, est, f"{k} seeds: mean ± t_{k - 1} x SE ({src})")


def paired(a: list[Estimate], b: list[Estimate]) -> list[Estimate]:
    """Per-seed differences a - b over the seeds both have (independent within-seed SEs add in quadrature)."""
    bs = {e.seed: e for e in b}
    return [Estimate(e.seed, e.value - bs[e.seed].value, math.hypot(e.se, bs[e.seed].se), min(e.n, bs[e.seed].n))
            for e in a if e.seed in bs]


def proportion(seed: int, p: float, n: int) -> Estimate:
    """A proportion p out of n trials with its binomial standard error."""
    se = math.sqrt(p * (1 - p) / n) if n > 0 and _finite(p) else float("nan")
    return Estimate(seed, p, se, n)


def mean_estimate(seed: int, x) -> Estimate:
    """The mean of i.i.d. draws ``x`` (per-step, per-token values) with its standard error."""
    x = np.asarray(x, dtype=float)
    x = x[np.isfinite(x)]
    if len(x) == 0:
        return Estimate(seed, float("nan"))
    se = float(x.std(ddof=1) / math.sqrt(len(x))) if len(x) > 1 else float("nan")
    return Estimate(seed, float(x.mean()), se, len(x))


def verdict_above(iv: Interval, threshold: float = 0.0) -> str:
    """supported if the interval lies above ``threshold``, not supported if below, else inconclusive."""
    if not (_finite(iv.lo) and _finite(iv.hi)):
        return INCONCLUSIVE
    if iv.lo > threshold:
        return SUPPORTED
    if iv.hi < threshold:
        return NOT_SUPPORTED
    return INCONCLUSIVE


def verdict_below(iv: Interval, threshold: float = 0.0) -> str:
    """supported if the interval lies below ``threshold``, not supported if above, else inconclusive."""
    flipped = Interval(-iv.mean, -iv.hi, -iv.lo, iv.per_seed, iv.method)
    return verdict_above(flipped, -threshold)


def verdict_inside(iv: Interval, low: float, high: float) -> str:
    """Equivalence: supported if the interval lies inside (low, high), not supported if it lies entirely
    outside it, else inconclusive."""
    if not (_finite(iv.lo) and _finite(iv.hi)):
        return INCONCLUSIVE
    if low < iv.lo and iv.hi < high:
        return SUPPORTED
    if iv.hi < low or iv.lo > high:
        return NOT_SUPPORTED
    return INCONCLUSIVE


def combine(*verdicts: str) -> str:
    """All supported -> supported; any not supported -> not supported; else inconclusive."""
    if verdicts and all(v == SUPPORTED for v in verdicts):
        return SUPPORTED
    return NOT_SUPPORTED if NOT_SUPPORTED in verdicts else INCONCLUSIVE


def ratio_text(num: float, den: float, d: int = 3) -> str:
    """A ratio shown with the means it divides, e.g. ``1.06e+09 (3.2e-03 / 3.0e-12)``."""
    r = num / den if den else float("inf")
    return f"{r:.{d}g} ({num:.{d}g} / {den:.{d}g})"


METHOD = ("Each claim is measured once per seed. The interval is the mean over k seeds ± t_{k-1}(0.975) x SE, with "
          "SE^2 = max(s^2/k, mean(se_i^2)/k): s^2 is the between-seed variance of the per-seed estimates and se_i "
          "each seed's within-seed standard error (a floor, since 2-3 seeds can agree by chance). With one seed the "
          "within-seed 95% CI is used. Supported / not supported only when the whole interval is on one side of the "
          "rule's threshold; an interval touching it is inconclusive.")
