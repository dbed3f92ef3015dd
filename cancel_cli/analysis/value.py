"""``cancel mc-value`` (Sec. 3.2, App. E.2; Fig. 5a, Fig. 11): counterfactual token values by class.

After one GRPO update on a stored batch, equal numbers of boosted and suppressed tokens are drawn from
positive and negative rollouts (four cells), stratified over the entropy deciles of *all* response tokens
of the batch (so ``entropy-gap``'s top-k% sets are top-k% of every token, low-entropy tail included).
Each token's value Delta(o_t | s_t) is estimated by ``value_estimate`` (``--estimator direct`` by default,
``eq20`` for the paper's Eq. 20).

The update that defines the classes is one step of ``--optimizer`` (default SGD, lr 0.1, no momentum: the
analysis setting of App. D.2) on the whole batch as one mini-batch; ``--optimizer adamw --lr 1e-6`` gives
the optimizer of ``cancel train``'s first step instead.

Class means and gaps: mean of the estimated values per class; its standard error is
sqrt(max(s^2, mean se_i^2) / n), where s^2 (the spread of the *estimates* across tokens) already contains
the token-to-token spread plus the per-token Monte-Carlo noise (law of total variance), and mean se_i^2
(the per-token noise alone) guards small cells.  Gap CI = gap +- 1.96 sqrt(se_b^2 + se_s^2).
``--repeat K`` (Fig. 11): K repeated updates on the same batch; values are computed once and only the
classes change.  Parts are checkpointed; ``--resume`` continues after a kill with the identical table.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from ..config import check_positive
from ..console import print_table
from ..errors import UserError
from ..grpo.update import OptimConfig, Updater, old_logprobs
from ..summary import Summary
from ..grpo.probe import classify
from ..rollout import RolloutConfig, experiment_run, setup
from .common import batch_for
from .value_estimate import ESTIMATORS, SKIP_P, token_values

CELLS = [("boosted", "pos"), ("suppressed", "pos"), ("boosted", "neg"), ("suppressed", "neg")]
ORIGINS = ("pos", "neg", "all")


@dataclass
class ValueConfig(RolloutConfig):
    prompts: int = 16
    M: int = 64  # paper: 256; the toy preset uses 64 (per-token SE <= 0.09 with the direct estimator)
    per_cell: int = 64
    repeat: int = 1
    lr: float = 0.1
    optimizer: str = "sgd"
    estimator: str = "direct"  # direct | eq20
    chunk: int = 16  # tokens per checkpointed part
    decode_width: int = 256  # rows of the continuous decode batch
    from_batch: str = ""

    def validate(self) -> None:
        super().validate()
        check_estimator(self.estimator, self.M)
        check_positive(per_cell=self.per_cell, repeat=self.repeat, chunk=self.chunk, decode_width=self.decode_width)


def check_estimator(estimator: str, M: int) -> None:
    if estimator not in ESTIMATORS:
        raise UserError(f"unknown --estimator {estimator!r} ({' | '.join(ESTIMATORS)})")
    if M < 2:  # one continuation per branch gives no variance estimate, so no standard error
        raise UserError(f"--M must be >= 2 for a standard error, got {M}")


@dataclass
class ValueSummary(Summary):
    SCHEMA = 1
    estimator: str
    M: int
    per_cell: int
    tokens: int
    skipped_confident: int
    mean_se: float
    cache_hit_rate: float
    value: dict = field(default_factory=dict)  # "<class>_<origin>" -> {"mean", "se", "n"}
    gap: dict = field(default_factory=dict)  # origin -> {"gap", "se", "ci_low", "ci_high"}
    repeat_gaps: list = field(default_factory=list)  # Fig. 11: gap (all origins) after 1..K updates
    seconds: float = 0.0
    prefix_cache_hit_rate: float | None = None  # vLLM continuations: prefix-cache hits / queries; None on torch

    @classmethod
    def from_json(cls, data, where: str = "summary"):
        """Summaries written before ``prefix_cache_hit_rate`` existed read with it None (same schema)."""
        if isinstance(data, dict) and "prefix_cache_hit_rate" not in data:
            data = {**data, "prefix_cache_hit_rate": None}
        return super().from_json(data, where)


def mean_se(values, ses) -> tuple[float, float, int]:
    """Class mean and its SE: sqrt(max(s^2, mean se_i^2) / n) (see the module docstring)."""
    v, s = np.asarray(values, float), np.asarray(ses, float)
    ok = ~np.isnan(v)
    v, s = v[ok], s[ok]
    n = len(v)
    if n < 2:
        return float("nan"), float("nan"), n
    return float(v.mean()), float(np.sqrt(max(v.var(ddof=1), float(np.mean(s**2))) / n)), n


def gap_stats(df: pd.DataFrame, cls_col: str = "class") -> tuple[dict, dict]:
    """Mean value per class and origin (with SE), and the gaps boosted - suppressed with 95% CIs."""
    values, gaps = {}, {}
    for origin in ORIGINS:
        d = df if origin == "all" else df[df.origin == origin]
        m = {}
        for c in ("boosted", "suppressed"):
            sel = d[d[cls_col] == c]
            m[c] = mean_se(sel.value, sel.se)
            values[f"{c}_{origin}"] = dict(zip(("mean", "se", "n"), m[c]))
        g = m["boosted"][0] - m["suppressed"][0]
        se = float(np.hypot(m["boosted"][1], m["suppressed"][1]))
        gaps[origin] = {"gap": g, "se": se, "ci_low": g - 1.96 * se, "ci_high": g + 1.96 * se}
    return values, gaps


def entropy_deciles(entropy) -> np.ndarray:
    """Decile 0..9 of each token's entropy among all tokens (9 = highest), ties broken by order."""
    ranks = pd.Series(np.asarray(entropy, float)).rank(method="first").to_numpy() - 1
    return np.minimum((ranks * 10 // len(ranks)).astype(int), 9)


def select_candidates(tok: pd.DataFrame, per_cell: int, seed: int, estimator: str) -> tuple[pd.DataFrame, dict]:
    """Equal numbers of tokens per (class x origin) cell, spread evenly over the entropy deciles of all tokens
    (round robin over deciles, random within a decile).  Only eq20 skips p > 1 - 1e-3."""
    tok = tok.assign(decile=entropy_deciles(tok.entropy))
    ok = tok[tok.advantage != 0]
    skipped = 0
    if estimator == "eq20":
        skipped = int((ok.p > SKIP_P).sum())
        ok = ok[ok.p <= SKIP_P]
    counts = {"skipped_confident": skipped, "tokens": len(tok)}
    cells = {(c, o): ok[(ok["class"] == c) & ((ok.advantage > 0) == (o == "pos"))] for c, o in CELLS}
    k = min([per_cell] + [len(v) for v in cells.values()])
    if k == 0:
        raise UserError("some (boosted|suppressed) x (positive|negative) cell has no eligible token; use more prompts")
    rng = np.random.default_rng(seed)
    picked = []
    for (c, o), v in cells.items():
        queues = [list(rng.permutation(np.array(v.index[v.decile == d]))) for d in range(10)]
        take = []
        while len(take) < k:
            for q in queues:
                if q and len(take) < k:
                    take.append(q.pop())
        picked.append(v.loc[take].assign(origin=o))
    counts["per_cell"] = k
    return pd.concat(picked).sort_values(["rollout", "position"]).reset_index(drop=True), counts


def per_token_frame(policy, batch, old_lp, new_lp, entropy, cfg) -> pd.DataFrame:
    """Every response token: class after the update, advantage, entropy, p under the sampling distribution."""
    from .value_estimate import sampling_probs

    m = batch.response_mask.bool()
    rows, pos = m.nonzero(as_tuple=True)
    delta = (new_lp - old_lp)[m].double().numpy()
    df = pd.DataFrame({"rollout": rows.numpy(), "position": pos.numpy(), "token_id": batch.response_ids[m].numpy(),
                       "advantage": batch.advantage[rows].numpy(), "reward": batch.reward[rows].numpy(),
                       "entropy": entropy[m].numpy(), "delta": delta, "class": classify(delta)})
    if cfg.top_p >= 1.0:  # old_lp is log softmax(z / T): the sampling distribution itself
        df["p"] = old_lp[m].exp().double().numpy()
    else:
        df["p"] = sampling_probs(policy, batch, cfg.temperature, cfg.top_p)[m].numpy()
    return df


def run(cfg: ValueConfig, store, resume: str | None = None):
    import time

    cfg.validate()
    t0 = time.perf_counter()
    policy = setup(cfg)
    gen = torch.Generator().manual_seed(cfg.seed)
    with experiment_run(store, "mc-value", cfg, policy, resume=resume) as run:
        if resume:
            cfg = ValueConfig(**run.config)
        if run.has_table("batch"):
            from ..rollout import RolloutBatch

            batch = RolloutBatch.from_frame(run.read_table("batch"), policy.pad_id)
        else:
            batch = batch_for(cfg, policy, store, gen)
            run.write_table("batch", batch.to_frame())
        st = policy.token_stats(batch.prompt_ids, batch.prompt_mask, batch.response_ids, batch.response_mask,
                                temperature=cfg.temperature)
        work = policy.clone()
        upd = Updater(work, OptimConfig(cfg.optimizer, cfg.lr, temperature=cfg.temperature))
        deltas = []
        for _ in range(cfg.repeat):  # Fig. 11: repeated updates on the fixed batch
            upd.step(batch, [list(range(len(batch)))])
            deltas.append(old_logprobs(work, batch, cfg.temperature))
        tok = per_token_frame(policy, batch, st.logprob, deltas[0], st.entropy, cfg)
        cand, counts = select_candidates(tok, cfg.per_cell, cfg.seed, cfg.estimator)
        r_idx, t_idx = torch.tensor(cand.rollout.to_numpy()), torch.tensor(cand.position.to_numpy())
        for k, lp in enumerate(deltas, start=1):  # classes after k updates (cumulative delta from theta_0)
            cand[f"class_after_{k}"] = classify((lp - st.logprob)[r_idx, t_idx].double().numpy())
        vals = token_values(policy, batch, cand, cfg, store, run)
        run.write_table("tokens", tok)
        run.write_table("values_final", vals)
        values, gaps = gap_stats(vals)
        rep = [gap_stats(vals, f"class_after_{k}")[1] for k in range(1, cfg.repeat + 1)]
        if cfg.repeat > 1:  # Fig. 11 table: gap, se, ci per origin after k updates
            run.write_table("repeat", pd.DataFrame([{"updates": k, **{f"gap_{o}" + ("" if c == "gap" else f"_{c}"): v
                                                                    for o, g in gs.items() for c, v in g.items()}}
                                                   for k, gs in enumerate(rep, 1)]))
        summary = ValueSummary(estimator=cfg.estimator, M=cfg.M, per_cell=counts["per_cell"], tokens=counts["tokens"],
                               skipped_confident=counts["skipped_confident"], mean_se=float(vals.se.mean()),
                               cache_hit_rate=float(vals.attrs.get("cache_hit_rate", 0.0)), value=values, gap=gaps,
                               repeat_gaps=[g["all"]["gap"] for g in rep], seconds=time.perf_counter() - t0,
                               prefix_cache_hit_rate=vals.attrs.get("prefix_cache_hit_rate"))
        print_table(f"token value by class and origin ({cfg.estimator} estimator, M={cfg.M})", [
            {"origin": o, "boosted": values[f"boosted_{o}"]["mean"], "suppressed": values[f"suppressed_{o}"]["mean"],
             "gap": gaps[o]["gap"], "se": gaps[o]["se"], "95% CI": f"[{gaps[o]['ci_low']:.3f}, {gaps[o]['ci_high']:.3f}]"}
            for o in ORIGINS])
        run.finish(summary)
    return run, summary
