"""figures/REPORT.md: one section per claim of the paper, with the figure, our numbers beside the
paper's, and a verdict computed from the numbers by a rule fixed in advance (stated in each section):
supported / not supported / inconclusive, with the interval it was decided on.  Every claim is measured
once per seed and decided across seeds (``report_stats``); claims 1-7 live in ``report_claims``, the
training and evaluation claims in ``report_train``."""

from __future__ import annotations

from pathlib import Path

from .atomic import atomic_write_bytes
from .report_claims import (TABLE1_RULE, claim_budget, claim_coupling, claim_entropy, claim_flipping,
                            claim_positive_only, claim_table1, claim_value, positive_only_differences, table1_verdicts)
from .report_section import Section

__all__ = ["TABLE1_RULE", "Section", "claim_budget", "claim_coupling", "claim_entropy", "claim_flipping",
           "claim_positive_only", "claim_table1", "claim_value", "positive_only_differences", "table1_verdicts",
           "write_report"]


def _claims():
    from . import report_claims, report_train

    return [*report_claims.CLAIMS, *report_train.CLAIMS]


def write_report(store, out: Path, model: str, preset: str, timings: dict, missing: dict, seeds=None,
                 total_seconds: float | None = None, cpu_seconds: dict | None = None, workers: int = 1,
                 reduced: list[str] | None = None) -> Path:
    from .report_header import header_lines

    sections = [c(store) for c in _claims()]
    lines = ["# Reproduction report: The Cancellation Hypothesis in Critic-Free RL", ""]
    lines += header_lines(store, model, preset, timings, seeds, total_seconds, cpu_seconds, workers, reduced)
    lines += ["| claim | verdict |", "|---|---|"] + [f"| {s.title} | {s.verdict} |" for s in sections] + [""]
    lines += [s.md() for s in sections]
    if missing:
        lines += ["## Figures not rendered", ""] + [f"- {k}: {v}" for k, v in missing.items()] + [""]
    path = Path(out) / "REPORT.md"
    atomic_write_bytes(path, "\n".join(lines).encode())
    return path
