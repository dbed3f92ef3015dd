"""``cancel entropy-gap`` (Fig. 5b): the value gap (boosted minus suppressed) on the top-k% highest-
entropy tokens of an mc-value run, k = 10, 20, ..., 100, with percentile bootstrap 95% CIs (tokens
resampled within each class).  Reads cached values only.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from ..config import to_dict
from ..console import print_table
from ..errors import UserError

KS = tuple(range(10, 101, 10))


@dataclass
class EntropyGapConfig:
    from_run: str = ""
    bootstrap: int = 2000
    seed: int = 0


def gap_curve(vals: pd.DataFrame, bootstrap: int, seed: int, ks=KS) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    order = vals.sort_values("entropy", ascending=False)
    rows = []
    for k in ks:
        top = order.iloc[: max(1, int(round(len(order) * k / 100)))]
        b = top[top["class"] == "boosted"].value.to_numpy()
        s = top[top["class"] == "suppressed"].value.to_numpy()
        if len(b) < 2 or len(s) < 2:
            rows.append({"k": k, "tokens": len(top), "gap": np.nan, "ci_low": np.nan, "ci_high": np.nan})
            continue
        boots = rng.choice(b, (bootstrap, len(b))).mean(1) - rng.choice(s, (bootstrap, len(s))).mean(1)
        rows.append({"k": k, "tokens": len(top), "boosted": len(b), "suppressed": len(s), "gap": float(b.mean() - s.mean()),
                     "ci_low": float(np.quantile(boots, 0.025)), "ci_high": float(np.quantile(boots, 0.975)),
                     "min_entropy": float(top.entropy.min())})
    return pd.DataFrame(rows)


def run(cfg: EntropyGapConfig, store):
    if cfg.bootstrap < 1:
        raise UserError(f"--bootstrap must be >= 1, got {cfg.bootstrap}")
    src = store.get_done(cfg.from_run) if cfg.from_run else store.latest("mc-value")
    if src is None:
        raise UserError("no done mc-value run in the store; run `cancel mc-value` first")
    vals = src.read_table("values_final")  # candidate tokens with entropy, class and value
    cfg = replace(cfg, from_run=src.id)  # run.json holds the resolved config
    with store.running("entropy-gap", to_dict(cfg),
                       model=src.meta.get("model", ""), model_hash=src.meta.get("model_hash", ""), seed=cfg.seed) as run:
        curve = gap_curve(vals, cfg.bootstrap, cfg.seed)
        run.write_table("curve", curve)
        ok = curve.dropna(subset=["gap"])
        peak = ok.loc[ok.gap.idxmax()] if len(ok) else None
        summary = {"from_run": src.id, "peak_k": int(peak.k) if peak is not None else None,
                   "peak_gap": float(peak.gap) if peak is not None else float("nan"),
                   "gap_at_100": float(curve.set_index("k").gap.get(100, np.nan))}
        print_table("value gap on the top-k% highest-entropy tokens", curve.to_dict("records"))
        run.finish(summary)
    return run, summary
