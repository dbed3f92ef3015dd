"""``cancel entropy-gap`` (Fig. 5b): the value gap (boosted minus suppressed) on the top-k% highest-entropy
tokens of *all* response tokens of an mc-value run's batch, k = 10, 20, ..., 100.

mc-value draws its candidates stratified over the entropy deciles of every response token (equal numbers
per decile and cell where available), so the candidates in deciles >= 10 - k/10 are a sample of the top-k%
of all tokens, and the 100% set contains the low-entropy tail (tokens with p > 0.999 included; only the
eq20 estimator skips them).  CIs: percentile bootstrap over tokens, resampled within each class (each
resampled value carries its own Monte-Carlo noise, so the CI covers both noise and token spread).
Reads the mc-value run's tables only.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from ..config import to_dict
from ..console import print_table
from ..errors import UserError
from ..summary import Summary
from .value import ValueSummary

KS = tuple(range(10, 101, 10))
CONFIDENT_P = 0.999


@dataclass
class EntropyGapConfig:
    from_run: str = ""
    bootstrap: int = 2000
    seed: int = 0


@dataclass
class EntropyGapSummary(Summary):
    SCHEMA = 1
    from_run: str
    estimator: str
    peak_k: int
    peak_gap: float
    peak_ci_low: float
    peak_ci_high: float
    gap_at_100: float
    curve: list = field(default_factory=list)  # {"k", "gap", "ci_low", "ci_high", "boosted", "suppressed", ...}


def gap_curve(vals: pd.DataFrame, bootstrap: int, seed: int, ks=KS) -> pd.DataFrame:
    """The gap on the candidates of the top-k% entropy deciles (``decile`` 0..9 over all tokens, 9 = highest)."""
    rng = np.random.default_rng(seed)
    vals = vals.dropna(subset=["value"])
    rows = []
    for k in ks:
        top = vals[vals.decile >= 10 - k // 10]
        b = top[top["class"] == "boosted"].value.to_numpy()
        s = top[top["class"] == "suppressed"].value.to_numpy()
        row = {"k": k, "tokens": len(top), "boosted": len(b), "suppressed": len(s),
               "confident": int((top.p > CONFIDENT_P).sum()), "min_entropy": float(top.entropy.min()) if len(top) else np.nan}
        if len(b) < 2 or len(s) < 2:
            rows.append({**row, "gap": np.nan, "ci_low": np.nan, "ci_high": np.nan})
            continue
        boots = rng.choice(b, (bootstrap, len(b))).mean(1) - rng.choice(s, (bootstrap, len(s))).mean(1)
        rows.append({**row, "gap": float(b.mean() - s.mean()), "ci_low": float(np.quantile(boots, 0.025)),
                     "ci_high": float(np.quantile(boots, 0.975))})
    return pd.DataFrame(rows)


def run(cfg: EntropyGapConfig, store):
    if cfg.bootstrap < 1:
        raise UserError(f"--bootstrap must be >= 1, got {cfg.bootstrap}")
    src = store.get_done(cfg.from_run) if cfg.from_run else store.latest("mc-value")
    if src is None:
        raise UserError("no done mc-value run in the store; run `cancel mc-value` first")
    vals = src.read_table("values_final")  # candidate tokens with entropy decile, class and value
    if "decile" not in vals.columns:
        raise UserError(f"mc-value run {src.id} predates entropy-stratified candidates; rerun `cancel mc-value`")
    estimator = ValueSummary.of(src).estimator
    cfg = replace(cfg, from_run=src.id)  # run.json holds the resolved config
    with store.running("entropy-gap", to_dict(cfg),
                       model=src.meta.get("model", ""), model_hash=src.meta.get("model_hash", ""), seed=cfg.seed) as run:
        curve = gap_curve(vals, cfg.bootstrap, cfg.seed)
        run.write_table("curve", curve)
        ok = curve.dropna(subset=["gap"])
        pk = ok.loc[ok.gap.idxmax()] if len(ok) else None
        nan = float("nan")
        summary = EntropyGapSummary(
            from_run=src.id, estimator=estimator, peak_k=int(pk.k) if pk is not None else 0,
            peak_gap=float(pk.gap) if pk is not None else nan, peak_ci_low=float(pk.ci_low) if pk is not None else nan,
            peak_ci_high=float(pk.ci_high) if pk is not None else nan,
            gap_at_100=float(curve.set_index("k").gap.get(100, nan)), curve=curve.to_dict("records"))
        print_table("value gap on the top-k% highest-entropy tokens (of all response tokens)", curve.to_dict("records"))
        run.finish(summary)
    return run, summary
