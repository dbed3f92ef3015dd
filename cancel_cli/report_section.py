"""The building blocks of REPORT.md shared by every claim module: a claim's Section (rule, rows, verdict)
and the within-run intervals (mean / proportion-difference CIs) its rows show."""

from __future__ import annotations

import math

import numpy as np

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
        """Rule first, then verdict, figure and numbers; rows are (quantity, ours, paper[, per seed])."""
        out = [f"## {self.title}", "", f"*Rule (fixed before the runs):* {self.rule}", "",
               f"**Verdict: {self.verdict}** — {self.why}", ""]
        if self.figure:
            out += [f"![{self.figure}]({self.figure}.png)", ""]
        if self.rows:
            seeds = any(len(r) > 3 for r in self.rows)
            out += ["| quantity | ours | paper |" + (" per seed |" if seeds else ""), "|---|---|---|" + ("---|" if seeds else "")]
            out += ["| " + " | ".join(str(x).replace("|", "\\|") for x in (tuple(row) + ("",) * (4 - len(row)))[:4 if seeds else 3])
                    + " |" for row in self.rows] + [""]
        out += [f"- {n}" for n in self.notes] + [""]
        return "\n".join(out)


def _missing(sec: Section, what: str) -> Section:
    sec.verdict, sec.why = "inconclusive", f"no data: {what}"
    return sec
