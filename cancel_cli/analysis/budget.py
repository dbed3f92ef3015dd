"""``cancel budget-sweep`` (Fig. 6, Fig. 7b): the value gap vs the sampling budget.

A fixed pool of prompts x rollouts is sampled once from theta_0, and a fixed candidate set is drawn once:
``cand_prompts`` mixed prompts each get one designated rollout (alternately positive and negative), and
``candidates`` tokens (p <= 1 - 1e-3) are drawn from the designated rollouts; their values (Eq. 20) are
computed once through the value cache.  Each configuration's update batch holds the candidates'
rollouts plus the rest of its budget; one SGD update from theta_0 (lr 0.1, one mini-batch) classifies
the candidates (boosted / suppressed) and the gap is mean value(boosted) - mean value(suppressed) on the
top-25/50/100% candidates by |value|.

- ``batch-size``: 16..96 prompts x 8 rollouts (the candidate prompts plus further pool prompts).
- ``rollout-n``: 64 prompts x n rollouts, n = 1..8 (designated rollout first).  With n = 1 every GRPO
  advantage is 0, nothing moves and the gap is undefined (NaN).
One pool of ``pool_prompts`` prompts x 16 rollouts (same seed -> same pool) serves all three axes, so
the candidate set and its cached values are shared between the sweeps.
- ``reward-mix``: 64 prompts x 8 rollouts with exactly k positives, k = 0..8, drawn from a pool of 16
  rollouts per prompt; prompts without enough rollouts of a sign are left out at that k.  k = 0 and 8
  have zero advantages (NaN gap).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from ..config import check_positive
from ..console import print_table, progress
from ..errors import UserError
from ..grpo.advantages import grpo_advantage
from ..grpo.update import OptimConfig, grpo_update
from ..rollout import RolloutBatch
from ..rollout import ProblemSource, RolloutConfig, experiment_run, sample_batch, setup
from ..grpo.probe import classify
from .value import SKIP_P, token_values

AXES = {"batch-size": [16, 32, 48, 64, 80, 96], "rollout-n": list(range(1, 9)), "reward-mix": list(range(0, 9))}
SUBSETS = (25, 50, 100)


@dataclass
class BudgetConfig(RolloutConfig):
    axis: str = "batch-size"
    M: int = 64
    lr: float = 0.1
    candidates: int = 48
    cand_prompts: int = 16
    base_prompts: int = 64  # batch size on the rollout-n and reward-mix axes
    pool_prompts: int = 96  # one pool (prompts x 16 rollouts) serves every axis, so candidate values are shared
    values: str = ""
    chunk: int = 4


def axis_values(cfg: BudgetConfig) -> list[int]:
    if cfg.axis not in AXES:
        raise UserError(f"unknown --axis {cfg.axis!r} ({' | '.join(AXES)})")
    if not cfg.values:
        return AXES[cfg.axis]
    try:
        vals = [int(v) for v in cfg.values.split(",")]
    except ValueError:
        raise UserError(f"--values must be comma-separated integers, got {cfg.values!r}") from None
    lo = {"batch-size": cfg.cand_prompts, "rollout-n": 1, "reward-mix": 0}[cfg.axis]
    bad = [v for v in vals if v < lo]
    if bad:
        raise UserError(f"--values {bad} below the minimum {lo} for --axis {cfg.axis}")
    return vals


def build_pool(policy, cfg: BudgetConfig, n_prompts: int, pool_n: int, gen) -> RolloutBatch:
    probs = ProblemSource(cfg.data, cfg.seed).take(n_prompts)
    pool_cfg = RolloutConfig(**{**{k: getattr(cfg, k) for k in RolloutConfig.__dataclass_fields__}, "n": pool_n})
    return sample_batch(policy, probs, pool_cfg, gen)


def designate(pool: RolloutBatch, pool_n: int, cand_prompts: int, first_n: int = 8) -> dict[int, int]:
    """prompt index -> designated rollout row: mixed prompts (within the first ``first_n`` rollouts),
    alternately a positive and a negative rollout."""
    out, want_pos = {}, True
    n_prompts = len(pool) // pool_n
    for q in range(n_prompts):
        rows = list(range(q * pool_n, q * pool_n + first_n))
        r = pool.reward[rows]
        if 0 < r.sum() < len(rows):
            sign_rows = [i for i in rows if (pool.reward[i] == 1) == want_pos]
            out[q] = sign_rows[0]
            want_pos = not want_pos
        if len(out) == cand_prompts:
            break
    if len(out) < cand_prompts:
        raise UserError(f"only {len(out)} of {cand_prompts} pool prompts have mixed groups; sample more prompts")
    return out


def config_rows(pool, pool_n, desig, axis, v, base_prompts) -> list[int]:
    n_prompts = len(pool) // pool_n
    cand = list(desig)
    others = [q for q in range(n_prompts) if q not in desig]
    rows = []
    if axis == "batch-size":
        for q in cand + others[: v - len(cand)]:
            rows += list(range(q * pool_n, q * pool_n + 8))
    elif axis == "rollout-n":
        for q in cand + others[: base_prompts - len(cand)]:
            group = list(range(q * pool_n, q * pool_n + 8))
            if q in desig:
                group.remove(desig[q])
                group = [desig[q]] + group
            rows += group[:v]
    else:  # reward-mix: exactly v positives of 8
        for q in cand + others[: base_prompts - len(cand)]:
            group = list(range(q * pool_n, (q + 1) * pool_n))
            pos = [i for i in group if pool.reward[i] == 1]
            neg = [i for i in group if pool.reward[i] != 1]
            if q in desig:
                d = desig[q]
                if (d in pos and v == 0) or (d in neg and v == 8):
                    continue
                (pos if d in pos else neg).remove(d)
                if d in [i for i in group if pool.reward[i] == 1]:
                    pos = [d] + pos
                else:
                    neg = [d] + neg
            if len(pos) >= v and len(neg) >= 8 - v:
                rows += pos[:v] + neg[: 8 - v]
    return rows


def run(cfg: BudgetConfig, store, resume: str | None = None):
    check_positive(M=cfg.M, candidates=cfg.candidates, cand_prompts=cfg.cand_prompts, chunk=cfg.chunk)
    values = axis_values(cfg)
    policy = setup(cfg)
    gen = torch.Generator().manual_seed(cfg.seed)
    pool_n = 16  # batch-size and rollout-n use the first 8 rollouts of each prompt; reward-mix all 16
    n_prompts = max([cfg.pool_prompts, cfg.base_prompts] + (values if cfg.axis == "batch-size" else []))
    with experiment_run(store, "budget-sweep", cfg, policy, resume=resume) as run:
        if run.has_table("pool"):
            pool = RolloutBatch.from_frame(run.read_table("pool"), policy.pad_id)
        else:
            pool = build_pool(policy, cfg, n_prompts, pool_n, gen)
            run.write_table("pool", pool.to_frame())
        desig = designate(pool, pool_n, cfg.cand_prompts)
        drows = sorted(desig.values())
        sub = pool.select(drows)
        st = policy.token_stats(sub.prompt_ids, sub.prompt_mask, sub.response_ids, sub.response_mask,
                                temperature=cfg.temperature)
        m = sub.response_mask.bool()
        rr, pp = m.nonzero(as_tuple=True)
        tok = pd.DataFrame({"rollout": np.array(drows)[rr.numpy()], "sub_row": rr.numpy(), "position": pp.numpy(),
                            "p": st.logprob[m].exp().numpy(), "entropy": st.entropy[m].numpy(),
                            "origin": np.where(pool.reward[np.array(drows)[rr.numpy()]].numpy() == 1, "pos", "neg")})
        tok = tok[tok.p <= SKIP_P]
        rng = np.random.default_rng(cfg.seed)
        cand = tok.iloc[np.sort(rng.choice(len(tok), min(cfg.candidates, len(tok)), replace=False))].reset_index(drop=True)
        vals = token_values(policy, pool, cand, cfg, store, run, table="values", desc="candidate values")
        hit_rate = vals.attrs.get("cache_hit_rate", 0.0)
        vals = vals.reset_index(drop=True)
        done = run.done_parts("configs")
        with progress(f"budget sweep ({cfg.axis})", len(values)) as advance:
            advance(len(done))
            for i, v in enumerate(values):
                if i in done:
                    continue
                run.write_part("configs", i, pd.DataFrame(_one_config(policy, pool, pool_n, desig, vals, st, cfg, v)))
                advance()
        res = run.read_table("configs")
        run.write_table("sweep", res)
        summary = {"axis": cfg.axis, "candidates": len(vals), "cache_hit_rate": hit_rate}
        for q in SUBSETS:
            col = res[res.subset == q].set_index("value")
            summary[f"gap_top{q}_first"] = float(col.gap.dropna().iloc[0]) if col.gap.notna().any() else float("nan")
            summary[f"gap_top{q}_last"] = float(col.gap.dropna().iloc[-1]) if col.gap.notna().any() else float("nan")
        print_table(f"value gap vs {cfg.axis}", res.pivot(index="value", columns="subset", values="gap").reset_index()
                    .rename(columns=lambda c: f"top{c}%" if isinstance(c, (int, np.integer)) else c).to_dict("records"))
        run.finish(summary)
    return run, summary


def _one_config(policy, pool, pool_n, desig, vals, st0, cfg, v) -> list[dict]:
    rows = config_rows(pool, pool_n, desig, cfg.axis, v, cfg.base_prompts)
    batch = pool.select(rows)
    batch.advantage = grpo_advantage(batch.reward, batch.uid)
    included = vals[vals.rollout.isin(rows)]
    out_base = {"axis": cfg.axis, "value": v, "rollouts": len(rows), "mixed_groups": int(_mixed(batch))}
    if len(included) == 0 or batch.advantage.abs().max() == 0:
        return [{**out_base, "subset": q, "gap": np.nan, "n_boosted": 0, "n_suppressed": 0} for q in SUBSETS]
    new = grpo_update(policy, batch, None, OptimConfig("sgd", cfg.lr, temperature=cfg.temperature))
    sub = pool.select(sorted(desig.values()))
    lp = new.token_stats(sub.prompt_ids, sub.prompt_mask, sub.response_ids, sub.response_mask,
                         temperature=cfg.temperature, with_entropy=False).logprob
    r, t = torch.tensor(included.sub_row.to_numpy()), torch.tensor(included.position.to_numpy())
    cls = classify((lp[r, t] - st0.logprob[r, t]).double().numpy())
    d = included.assign(cls=cls)
    out = []
    for q in SUBSETS:
        top = d.sort_values("value", key=np.abs, ascending=False).iloc[: max(1, int(round(len(d) * q / 100)))]
        b, s = top[top.cls == "boosted"].value, top[top.cls == "suppressed"].value
        gap = float(b.mean() - s.mean()) if len(b) and len(s) else np.nan
        out.append({**out_base, "subset": q, "gap": gap, "n_boosted": len(b), "n_suppressed": len(s)})
    return out


def _mixed(batch) -> int:
    g = pd.Series(batch.reward.numpy()).groupby(batch.uid).agg(["min", "max"])
    return int((g["min"] != g["max"]).sum())
