"""``cancel budget-sweep`` (Fig. 6, Fig. 7b): the value gap vs the sampling budget.

One pool of ``--prompts`` prompts x 2n rollouts (``--n`` = the group size) is sampled once from theta_0,
and a fixed candidate set is drawn once: ``cand_prompts`` mixed prompts each get one designated rollout
(alternately positive and negative), and ``candidates`` tokens are drawn from the designated rollouts
(every token for the direct estimator; p <= 1 - 1e-3 for eq20); their values are computed once through
the value cache.  Each configuration's update batch holds the candidates' rollouts plus the rest of its
budget; one ``--optimizer`` update from theta_0 (default SGD lr 0.1, one mini-batch, as in mc-value)
classifies the candidates, and the gap is mean value(boosted) - mean value(suppressed) on the top-25/50/100%
candidates by |value|, with its standard error (``value.mean_se``: token spread and per-token noise).

- ``batch-size``: B prompts x n rollouts, B from ``cand_prompts`` to ``--prompts`` (default 6 even steps).
- ``rollout-n``: ``base_prompts`` prompts x k rollouts, k = 1..n (designated rollout first); k = 1 has
  zero advantages: nothing moves and the gap is undefined (NaN).
- ``reward-mix``: ``base_prompts`` prompts x n rollouts with exactly k positives, k = 0..n, from the 2n
  pool rollouts of each prompt; prompts without enough rollouts of a sign are left out at that k.
``--values`` replaces the axis range.  One pool (same seed -> same pool) serves all three axes, so the
candidate set and its cached values are shared between the sweeps.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from ..config import check_positive
from ..console import print_table, progress
from ..errors import UserError
from ..grpo.advantages import grpo_advantage
from ..grpo.probe import classify
from ..grpo.update import OptimConfig, grpo_update
from ..rollout import ProblemSource, RolloutBatch, RolloutConfig, experiment_run, sample_batch, setup
from ..summary import Summary
from .value import check_estimator, mean_se
from .value_estimate import SKIP_P, token_values

AXES = ("batch-size", "rollout-n", "reward-mix")
SUBSETS = (25, 50, 100)


@dataclass
class BudgetConfig(RolloutConfig):
    prompts: int = 96  # pool prompts = the largest batch on the batch-size axis
    n: int = 8  # group size; the pool holds 2n rollouts per prompt (reward-mix draws n of them)
    axis: str = "batch-size"
    M: int = 64
    lr: float = 0.1
    optimizer: str = "sgd"
    estimator: str = "direct"
    candidates: int = 256
    cand_prompts: int = 16
    base_prompts: int = 0  # batch size on the rollout-n and reward-mix axes (0 = --prompts)
    values: str = ""  # comma-separated axis values ("" = the default range of the axis)
    chunk: int = 16
    decode_width: int = 256

    def validate(self) -> None:
        super().validate()
        check_estimator(self.estimator, self.M)
        check_positive(candidates=self.candidates, cand_prompts=self.cand_prompts, chunk=self.chunk,
                       decode_width=self.decode_width)
        if self.cand_prompts > self.prompts:
            raise UserError(f"--prompts ({self.prompts}) must be >= the {self.cand_prompts} candidate prompts")
        axis_values(self)


@dataclass
class BudgetSummary(Summary):
    SCHEMA = 1
    axis: str
    prompts: int
    n: int
    candidates: int
    estimator: str
    M: int
    cache_hit_rate: float
    max_gap_se: float  # largest SE among the plotted (finite) gaps
    points: list = field(default_factory=list)  # {"value", "subset", "gap", "se", "n_boosted", "n_suppressed"}
    seconds: float = 0.0


def axis_values(cfg: BudgetConfig) -> list[int]:
    if cfg.axis not in AXES:
        raise UserError(f"unknown --axis {cfg.axis!r} ({' | '.join(AXES)})")
    lo = {"batch-size": cfg.cand_prompts, "rollout-n": 1, "reward-mix": 0}[cfg.axis]
    hi = {"batch-size": cfg.prompts, "rollout-n": cfg.n, "reward-mix": cfg.n}[cfg.axis]
    if not cfg.values:
        if cfg.axis == "batch-size":
            return sorted({int(round(v)) for v in np.linspace(lo, hi, 6)})
        return list(range(lo, hi + 1))
    try:
        vals = [int(v) for v in cfg.values.split(",")]
    except ValueError:
        raise UserError(f"--values must be comma-separated integers, got {cfg.values!r}") from None
    bad = [v for v in vals if not lo <= v <= hi]
    if bad:
        raise UserError(f"--values {bad} outside [{lo}, {hi}] for --axis {cfg.axis} (--prompts / --n set the maximum)")
    return vals


def designate(pool: RolloutBatch, pool_n: int, n: int, cand_prompts: int) -> dict[int, int]:
    """prompt index -> designated rollout row: mixed prompts (within the first n rollouts), alternately a
    positive and a negative rollout."""
    out, want_pos = {}, True
    for q in range(len(pool) // pool_n):
        rows = list(range(q * pool_n, q * pool_n + n))
        r = pool.reward[rows]
        if 0 < r.sum() < len(rows):
            out[q] = [i for i in rows if (pool.reward[i] == 1) == want_pos][0]
            want_pos = not want_pos
        if len(out) == cand_prompts:
            return out
    raise UserError(f"only {len(out)} of {cand_prompts} pool prompts have mixed groups; use more --prompts")


def config_rows(pool, pool_n, n, desig, axis, v, base_prompts) -> list[int]:
    cand = list(desig)
    others = [q for q in range(len(pool) // pool_n) if q not in desig]
    rows = []
    if axis == "batch-size":
        for q in cand + others[: v - len(cand)]:
            rows += list(range(q * pool_n, q * pool_n + n))
        return rows
    for q in cand + others[: base_prompts - len(cand)]:
        if axis == "rollout-n":
            group = list(range(q * pool_n, q * pool_n + n))
            if q in desig:
                group = [desig[q]] + [i for i in group if i != desig[q]]
            rows += group[:v]
            continue
        group = list(range(q * pool_n, (q + 1) * pool_n))  # reward-mix: exactly v positives of n
        pos = [i for i in group if pool.reward[i] == 1]
        neg = [i for i in group if pool.reward[i] != 1]
        if q in desig:
            d = desig[q]
            side = pos if d in pos else neg
            if (side is pos and v == 0) or (side is neg and v == n):
                continue
            side.remove(d)
            side.insert(0, d)
        if len(pos) >= v and len(neg) >= n - v:
            rows += pos[:v] + neg[: n - v]
    return rows


def run(cfg: BudgetConfig, store, resume: str | None = None):
    cfg.validate()
    t0 = time.perf_counter()
    values = axis_values(cfg)
    policy = setup(cfg)
    gen = torch.Generator().manual_seed(cfg.seed)
    pool_n = 2 * cfg.n
    with experiment_run(store, "budget-sweep", cfg, policy, resume=resume) as run:
        if resume:
            cfg = BudgetConfig(**run.config)
        if run.has_table("pool"):
            pool = RolloutBatch.from_frame(run.read_table("pool"), policy.pad_id)
        else:
            probs = ProblemSource(cfg.data, cfg.seed).take(cfg.prompts)
            pool_cfg = RolloutConfig(**{**{k: getattr(cfg, k) for k in RolloutConfig.__dataclass_fields__}, "n": pool_n})
            pool = sample_batch(policy, probs, pool_cfg, gen)
            run.write_table("pool", pool.to_frame())
        desig = designate(pool, pool_n, cfg.n, cfg.cand_prompts)
        drows = sorted(desig.values())
        sub = pool.select(drows)
        st = policy.token_stats(sub.prompt_ids, sub.prompt_mask, sub.response_ids, sub.response_mask,
                                temperature=cfg.temperature)
        m = sub.response_mask.bool()
        rr, pp = m.nonzero(as_tuple=True)
        rollout = np.array(drows)[rr.numpy()]
        tok = pd.DataFrame({"rollout": rollout, "sub_row": rr.numpy(), "position": pp.numpy(),
                            "p": st.logprob[m].exp().numpy(), "entropy": st.entropy[m].numpy(),
                            "origin": np.where(pool.reward[rollout].numpy() == 1, "pos", "neg")})
        if cfg.estimator == "eq20":
            tok = tok[tok.p <= SKIP_P]
        rng = np.random.default_rng(cfg.seed)
        # the first k of one permutation: a larger --candidates extends a smaller one (shared cache entries)
        cand = tok.iloc[np.sort(rng.permutation(len(tok))[: cfg.candidates])].reset_index(drop=True)
        vals = token_values(policy, pool, cand, cfg, store, run, table="values", desc="candidate values")
        hit_rate = float(vals.attrs.get("cache_hit_rate", 0.0))
        vals = vals.reset_index(drop=True)
        base = cfg.base_prompts or cfg.prompts
        done = run.done_parts("configs")
        with progress(f"budget sweep ({cfg.axis})", len(values)) as advance:
            advance(len(done))
            for i, v in enumerate(values):
                if i in done:
                    continue
                rows = config_rows(pool, pool_n, cfg.n, desig, cfg.axis, v, base)
                run.write_part("configs", i, pd.DataFrame(_one_config(policy, pool, rows, desig, vals, st, cfg, v)))
                advance()
        res = run.read_table("configs")
        run.write_table("sweep", res)
        ok = res.dropna(subset=["gap"])
        summary = BudgetSummary(axis=cfg.axis, prompts=cfg.prompts, n=cfg.n, candidates=len(vals), estimator=cfg.estimator,
                                M=cfg.M, cache_hit_rate=hit_rate, max_gap_se=float(ok.se.max()) if len(ok) else float("nan"),
                                points=res[["value", "subset", "gap", "se", "n_boosted", "n_suppressed"]].to_dict("records"),
                                seconds=time.perf_counter() - t0)
        table = res.assign(cell=[f"{g:.3f} ± {s:.3f}" for g, s in zip(res.gap, res.se)])
        print_table(f"value gap ± SE vs {cfg.axis}", table.pivot(index="value", columns="subset", values="cell").reset_index()
                    .rename(columns=lambda c: f"top{c}%" if isinstance(c, (int, np.integer)) else c).to_dict("records"))
        run.finish(summary)
    return run, summary


def _one_config(policy, pool, rows, desig, vals, st0, cfg, v) -> list[dict]:
    batch = pool.select(rows)
    batch.advantage = grpo_advantage(batch.reward, batch.uid)
    included = vals[vals.rollout.isin(rows)]
    out_base = {"axis": cfg.axis, "value": v, "rollouts": len(rows), "mixed_groups": _mixed(batch)}
    if len(included) == 0 or batch.advantage.abs().max() == 0:
        return [{**out_base, "subset": q, "gap": np.nan, "se": np.nan, "n_boosted": 0, "n_suppressed": 0} for q in SUBSETS]
    new = grpo_update(policy, batch, None, OptimConfig(cfg.optimizer, cfg.lr, temperature=cfg.temperature))
    sub = pool.select(sorted(desig.values()))
    lp = new.token_stats(sub.prompt_ids, sub.prompt_mask, sub.response_ids, sub.response_mask,
                         temperature=cfg.temperature, with_entropy=False).logprob
    r, t = torch.tensor(included.sub_row.to_numpy()), torch.tensor(included.position.to_numpy())
    d = included.assign(cls=classify((lp[r, t] - st0.logprob[r, t]).double().numpy()))
    out = []
    for q in SUBSETS:
        top = d.sort_values("value", key=np.abs, ascending=False, kind="stable").iloc[: max(1, int(round(len(d) * q / 100)))]
        b, s = top[top.cls == "boosted"], top[top.cls == "suppressed"]
        (mb, sb, nb), (ms, ss, ns) = mean_se(b.value, b.se), mean_se(s.value, s.se)
        out.append({**out_base, "subset": q, "gap": mb - ms, "se": float(np.hypot(sb, ss)), "n_boosted": nb,
                    "n_suppressed": ns})
    return out


def _mixed(batch) -> int:
    g = pd.Series(batch.reward.numpy()).groupby(batch.uid).agg(["min", "max"])
    return int((g["min"] != g["max"]).sum())
