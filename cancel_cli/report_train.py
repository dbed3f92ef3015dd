"""REPORT.md claims on training and evaluation (Fig. 7a, Fig. 8 / Table 2, Fig. 10, Table 4), decided per
seed and across seeds with ``report_stats``.

Each claim has two halves: gathering per-seed ``Estimate``s from the store (one train / eval run per seed
and variant) and a pure rule ``rule_x(estimates) -> (verdict, Interval)``, which the tests drive with
synthetic estimates.
"""

from __future__ import annotations

import math

from . import report_stats as rs
from .report_section import Section, _missing, fmt
from .scope import per_seed, scoped

PAPER_TABLE2_AVG = {"baseline": "37.8 / 31.9 / 49.1", "QB": "42.3 / 33.7 / 50.2", "RB": "42.4 / 35.5 / 50.1",
                    "QB+RB": "45.0 / 36.1 / 50.8", "sign-partitioned": "degrades (Fig. 7a)"}
TABLE4_MARGIN = 0.05  # accuracy points (as a fraction) T=0.6/p=0.95 may trail the best other setting


def accuracy_estimate(seed: int, scores: dict, samples: dict) -> rs.Estimate:
    """Mean accuracy over benchmarks (equal weights) with the binomial SE of that mean."""
    if not scores:
        return rs.Estimate(seed, float("nan"))
    acc = sum(scores.values()) / len(scores)
    var = sum(p * (1 - p) / samples[b] for b, p in scores.items() if samples.get(b)) / len(scores) ** 2
    ok = all(samples.get(b) for b in scores)
    return rs.Estimate(seed, acc, math.sqrt(var) if ok else float("nan"), sum(samples.get(b, 0) for b in scores))


def _seeds(store, command: str) -> list[int]:
    return sorted(per_seed(store, command))


def final_accuracy(store) -> dict[str, list[rs.Estimate]]:
    """label -> per-seed final accuracy: the eval run of the train run's checkpoints (Table 2) when there
    is one, else the train run's last validation."""
    from .analysis.evaluate import EvalSummary
    from .plots.training import _eval_for, train_runs

    out: dict[str, list[rs.Estimate]] = {}
    for s in _seeds(store, "train"):
        view = scoped(store, getattr(store, "model", None), [s])
        try:
            runs = train_runs(view)
        except Exception:
            continue
        for label, tr in runs.items():
            ev = _eval_for(view, tr)
            if ev is not None:
                e = EvalSummary.of(ev)
                scores, samples = e.scores[e.setting], e.samples
            else:
                v = tr.read_table("validation")
                last = v[v.step == v.step.max()]
                scores = dict(zip(last.benchmark, last.accuracy))
                samples = dict(zip(last.benchmark, last.problems * last.k)) if "problems" in last else {}
            out.setdefault(label, []).append(accuracy_estimate(s, scores, samples))
    return out


def rule_improves(treated: list[rs.Estimate], baseline: list[rs.Estimate]):
    """Paired per-seed difference treated - baseline; supported if its interval lies above 0."""
    iv = rs.across_seeds(rs.paired(treated, baseline))
    return rs.verdict_above(iv, 0.0), iv


def rule_hurts(treated: list[rs.Estimate], baseline: list[rs.Estimate]):
    iv = rs.across_seeds(rs.paired(treated, baseline))
    return rs.verdict_below(iv, 0.0), iv


def claim_training(store) -> Section:
    s = Section("8. QB and RB improve GRPO training (Fig. 8, Table 2)", "fig8",
                "per seed, final mean accuracy over the held-out sets (eval of the last checkpoint, else the last "
                "validation) of QB+RB minus baseline; supported if the across-seed interval of that paired difference "
                "lies above 0, not supported if below 0, else inconclusive.  QB and RB alone are reported beside it.")
    acc = final_accuracy(store)
    if "baseline" not in acc or "QB+RB" not in acc:
        return _missing(s, "run `cancel train --preset train_toy` and `cancel train --preset train_toy --qb --rb` "
                           "(or `cancel reproduce`)")
    _level_rows(s, acc, ("baseline", "QB", "RB", "QB+RB"))
    for label in ("QB", "RB", "QB+RB"):
        if label in acc:
            v, iv = rule_improves(acc[label], acc["baseline"])
            s.rows.append((f"{label} minus baseline (points)", _pts(iv), "> 0", _pts_seeds(iv)))
            if label == "QB+RB":
                s.verdict, main = v, iv
    s.why = f"QB+RB minus baseline {_pts(main)} points over {main.k} seed(s) ({main.method})"
    acted = rb_interventions(store)
    if acted:
        steps, held = sum(a for a, _ in acted.values()), sum(n for _, n in acted.values())
        s.rows.append(("RB steps whose batch the buffer changed (rollouts held back or dropped, or a wait)",
                       f"{steps} of {held}", "", "; ".join(f"s{k}: {a}/{n}" for k, (a, n) in acted.items())))
        if steps == 0:
            s.notes.append("RB never acted: every sampled batch already met min(N+, N-) >= tau |B|, so the RB runs "
                           "trained on exactly the baseline's batches and the RB rows measure nothing about RB "
                           "(raise tau, or use a model whose reward rate is far from 0.5).")
    return s


def rb_interventions(store) -> dict[int, tuple[int, int]]:
    """seed -> (steps at which an RB run's buffer held back or dropped rollouts or waited for a refill, steps), over
    that seed's RB train runs: RB equals the baseline by construction when it never acts."""
    out = {}
    for seed in _seeds(store, "train"):
        view = scoped(store, getattr(store, "model", None), [seed])
        for r in view.runs("train"):
            if r.status != "done" or not r.config.get("rb") or not r.has_table("metrics"):
                continue
            m = r.read_table("metrics")
            cols = [c for c in ("rb_buffered", "rb_dropped") if c in m]
            if not cols:
                continue
            acted = (m[cols].sum(axis=1) > 0) | (m.get("rb_rollouts_sampled_this_step", m.rollouts) > m.rollouts)
            a, n = out.get(seed, (0, 0))
            out[seed] = (a + int(acted.sum()), n + len(m))
    return out


def claim_sign_partition(store) -> Section:
    s = Section("9. Sign-partitioned mini-batches hurt training (Fig. 7a)", "fig7",
                "per seed, final mean accuracy of sign-partitioned minus baseline training; supported if the "
                "across-seed interval lies below 0, not supported if above 0, else inconclusive.")
    acc = final_accuracy(store)
    if "baseline" not in acc or "sign-partitioned" not in acc:
        return _missing(s, "run `cancel train --preset train_toy` and `cancel train --preset train_toy --sign-partition`")
    _level_rows(s, acc, ("baseline", "sign-partitioned"))
    s.verdict, iv = rule_hurts(acc["sign-partitioned"], acc["baseline"])
    s.rows.append(("sign-partitioned minus baseline (points)", _pts(iv), "< 0 (substantial drop)", _pts_seeds(iv)))
    s.why = f"sign-partitioned minus baseline {_pts(iv)} points over {iv.k} seed(s)"
    return s


def rule_proxy(agreement: list[rs.Estimate]):
    """Fig. 10: supported if the sign agreement's interval lies above chance (0.5), not supported if below."""
    iv = rs.across_seeds(agreement)
    return rs.verdict_above(iv, 0.5), iv


def claim_proxy(store) -> Section:
    s = Section("10. The LM-head-only update agrees in sign with the full update (Fig. 10)", "fig10",
                "per seed, the mean over probe steps of the share of tokens whose Δlog p has the same sign under an "
                "LM-head-only and a full-parameter update (same θ, batch, plan); supported if the across-seed "
                "interval lies above 0.5 (chance), not supported if below 0.5.  The paper's plateau is ≈ 0.7.")
    est = []
    for seed, run in per_seed(store, "train").items():
        view = scoped(store, getattr(store, "model", None), [seed])
        cands = [r for r in reversed(view.runs("train")) if r.status == "done" and r.has_table("proxy")]
        if cands:
            est.append(rs.mean_estimate(seed, cands[0].read_table("proxy").sign_agreement))
    if not est:
        return _missing(s, "run `cancel train --probe-proxy 5`")
    s.verdict, iv = rule_proxy(est)
    s.rows.append(("sign-consistent share (mean over probe steps)", iv.text(), "≈ 0.7", iv.seeds_text()))
    s.why = f"sign agreement {iv.text()} over {iv.k} seed(s) vs chance 0.5"
    return s


def rule_sampling(diffs: list[rs.Estimate]):
    """Table 4: T=0.6/p=0.95 is competitive on the base model if its average minus the best other setting's
    lies above -TABLE4_MARGIN; not supported if below it."""
    iv = rs.across_seeds(diffs)
    return rs.verdict_above(iv, -TABLE4_MARGIN), iv


def claim_sampling(store) -> Section:
    s = Section("11. Temperature 0.6 / top-p 0.95 is a competitive evaluation setting (Table 4)", "table4",
                f"per seed, the base model's mean accuracy at (T=0.6, p=0.95) minus the best of the other three "
                f"settings of Table 4; supported if the across-seed interval lies above -{TABLE4_MARGIN * 100:.0f} "
                f"points, not supported if below it, else inconclusive.")
    from .analysis.evaluate import EvalSummary

    diffs, levels = [], {}
    for seed, run in per_seed(store, "eval", sweep_sampling=True).items():
        e = EvalSummary.of(run)
        if "T0.6/p0.95" not in e.scores:
            continue
        est = {k: accuracy_estimate(seed, v, e.samples) for k, v in e.scores.items()}
        best = max((k for k in est if k != "T0.6/p0.95"), key=lambda k: est[k].value, default=None)
        if best is None:
            continue
        diffs += rs.paired([est["T0.6/p0.95"]], [est[best]])
        for k, v in est.items():
            levels.setdefault(k, []).append(v)
    if not diffs:
        return _missing(s, "run `cancel eval --sweep-sampling`")
    for k, v in sorted(levels.items()):
        iv = rs.across_seeds(v)
        s.rows.append((f"mean accuracy at {k}", iv.text(), "", iv.seeds_text()))
    s.verdict, iv = rule_sampling(diffs)
    s.rows.append(("T0.6/p0.95 minus best other setting (points)", _pts(iv), "-2.1 on Qwen3-4B-Base (30.7 vs 32.8)",
                   _pts_seeds(iv)))
    s.why = f"T0.6/p0.95 minus the best other setting {_pts(iv)} points over {iv.k} seed(s)"
    return s


def _level_rows(s: Section, acc: dict, labels) -> None:
    for label in labels:
        if label in acc:
            iv = rs.across_seeds(acc[label])
            s.rows.append((f"{label}: final accuracy", iv.text(), f"Table 2 avg (7B / 1.7B / 4B): {PAPER_TABLE2_AVG[label]}",
                           iv.seeds_text()))


def _pts(iv: rs.Interval) -> str:
    return f"{fmt(iv.mean * 100, 1)} [{fmt(iv.lo * 100, 1)}, {fmt(iv.hi * 100, 1)}]"


def _pts_seeds(iv: rs.Interval) -> str:
    return "; ".join(f"s{e.seed}: {fmt(e.value * 100, 1)}" for e in iv.per_seed) or "n/a"


CLAIMS = [claim_training, claim_sign_partition, claim_proxy, claim_sampling]
