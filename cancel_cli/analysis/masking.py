"""``cancel mask-effect`` (Table 1, Fig. 3): masked updates (Sec. 2.3, App. D.2-D.3).

For candidates c and masked sets M(c) of equal size ``mask_size`` under four conditions (random tokens;
the same token id as c; low-confidence tokens; same token and low confidence), the masking effect of
dropping M(c) from one SGD step (lr 0.1, no momentum) on the LM head (exact closed form) and on all
parameters (exact, per candidate); see ``masked_update`` for the formulas and statistics.

Sign control (``mask_sign``): the masked tokens are drawn only among tokens whose advantage is
``positive`` (A > 0), ``negative`` (A < 0), of the candidate's own sign (``same``; A != 0) or ``any``.
Without it a condition's Boost Rate mostly measures how often sum_M A > 0 (Eq. 9).
Low confidence (``low_conf``): ``p<T`` (absolute: p of the sampled token below T) or ``qF`` (p below the
F-quantile of p over the batch's response tokens).
Candidates are drawn uniformly among tokens with at least ``mask_size`` same-token low-confidence
partners of an allowed sign, so all four masked sets exist for every candidate.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from ..config import check_positive
from ..console import print_table, progress
from ..errors import UserError
from ..grpo.update import OptimConfig, grpo_update
from ..rollout import RolloutConfig, experiment_run, setup
from ..summary import Summary
from .common import batch_for, flat_tokens
from .masked_update import FullPath, boost_stats, head_closed_form, rank_by_coupling, set_coupling

CONDITIONS = ("random", "same", "lowconf", "same_lowconf")
MASK_SIGNS = ("any", "same", "positive", "negative")
PAPER_TABLE1 = {  # condition -> (head BR %, head MB, full BR %, full MB)
    "random": (50.60, -0.0039, 50.21, 0.0048), "same": (66.20, 0.0224, 66.41, 0.0241),
    "lowconf": (44.20, -0.0004, 43.04, -0.0012), "same_lowconf": (74.12, 0.0301, 75.00, 0.0306),
}
TOPK = (1, 2, 4, 8, 16, 32, 64)


@dataclass
class MaskConfig(RolloutConfig):
    prompts: int = 8
    candidates: int = 256
    mask_size: int = 8
    mask_sign: str = "positive"  # any | same | positive | negative (README: why positive)
    low_conf: str = "p<0.5"  # p<T (absolute) | qF (batch quantile) (README: why p<0.5)
    lr: float = 0.1
    full_candidates: int = 64
    full_dtype: str = "float64"  # the full path in fp64: masking effects are ~1e-4..1e-7, below fp32 noise
    from_batch: str = ""


@dataclass
class BoostStats:
    boost_rate: float  # % of candidates with delta > 0 (the paper's Boost Rate)
    mean_boost: float
    n: int
    p_sum_pos: float  # % of candidates with sum_M A > 0
    signed_boost_rate: float  # % with sign(delta) = sign(sum_M A)
    n_signed: int


@dataclass
class MaskSummary(Summary):
    SCHEMA = 1
    candidates: int
    full_candidates: int
    mask_size: int
    mask_sign: str
    low_conf: str
    low_conf_threshold_p: float
    low_conf_share: float  # share of response tokens that count as low confidence
    first_order_sign_agreement: float  # share of head effects whose sign the Eq. 9 first-order term predicts
    head: dict  # condition -> BoostStats (LM-head closed form)
    full: dict  # condition -> BoostStats (full-parameter path)

    def __post_init__(self):
        for path in ("head", "full"):
            setattr(self, path, {k: v if isinstance(v, BoostStats) else BoostStats(**v) for k, v in getattr(self, path).items()})


def parse_low_conf(spec: str) -> tuple[str, float]:
    """'p<0.5' -> ('p', 0.5) absolute threshold in (0, 1]; 'q0.5' -> ('q', 0.5) batch quantile in (0, 1)."""
    m = re.fullmatch(r"\s*(p\s*<|q)\s*([0-9]*\.?[0-9]+(?:e-?[0-9]+)?)\s*", spec or "")
    if not m:
        raise UserError(f"--low-conf must be p<T (absolute) or qF (batch quantile), e.g. p<0.5 or q0.5; got {spec!r}")
    kind, v = ("p" if m.group(1).startswith("p") else "q"), float(m.group(2))
    if kind == "p" and not 0 < v <= 1:
        raise UserError(f"--low-conf p<T needs 0 < T <= 1 (a probability), got {spec!r}")
    if kind == "q" and not 0 < v < 1:
        raise UserError(f"--low-conf qF needs 0 < F < 1 (a quantile), got {spec!r}")
    return kind, v


def validate(cfg: MaskConfig) -> tuple[str, float]:
    check_positive(candidates=cfg.candidates, mask_size=cfg.mask_size)
    if cfg.mask_sign not in MASK_SIGNS:
        raise UserError(f"--mask-sign must be one of {' | '.join(MASK_SIGNS)}, got {cfg.mask_sign!r}")
    if cfg.full_candidates < 0:
        raise UserError(f"--full-candidates must be >= 0, got {cfg.full_candidates}")
    return parse_low_conf(cfg.low_conf)


def sign_pool(A: torch.Tensor, mask_sign: str, cand: torch.Tensor) -> torch.Tensor:
    """[len(cand), N]: token k may be masked for candidate c (k != c, advantage sign allowed by mask_sign)."""
    s = torch.sign(A)
    if mask_sign == "any":
        ok = torch.ones(len(cand), len(A), dtype=torch.bool)
    elif mask_sign == "same":
        ok = (s[None, :] == s[cand][:, None]) & (s[None, :] != 0)
    else:
        ok = (s > 0 if mask_sign == "positive" else s < 0)[None, :].expand(len(cand), -1).clone()
    ok[torch.arange(len(cand)), cand] = False
    return ok


def draw_masks(tok, A, low, cfg: MaskConfig, gen) -> tuple[torch.Tensor, dict]:
    """Candidates and their masked sets [C, m] per condition; refuses a mask size no candidate can fill."""
    N, m = len(tok), cfg.mask_size
    n_partners = torch.zeros(N, dtype=torch.long)
    for s in range(0, N, 512):
        c = torch.arange(s, min(N, s + 512))
        pool = sign_pool(A, cfg.mask_sign, c) & (tok[None, :] == tok[c][:, None]) & low[None, :]
        n_partners[c] = pool.sum(1)
    eligible = (n_partners >= m).nonzero().squeeze(-1)
    if not len(eligible):
        raise UserError(f"--mask-size {m} is larger than every candidate's same-token low-confidence pool (largest: "
                        f"{int(n_partners.max())} tokens with --mask-sign {cfg.mask_sign} --low-conf {cfg.low_conf}); use a "
                        "smaller --mask-size or a larger batch (--prompts)")
    cand = eligible[torch.randperm(len(eligible), generator=gen)[: cfg.candidates]].sort().values
    pool = sign_pool(A, cfg.mask_sign, cand)
    same = tok[None, :] == tok[cand][:, None]
    pools = {"random": pool, "same": pool & same, "lowconf": pool & low[None, :], "same_lowconf": pool & same & low[None, :]}
    masks = {}
    for k, pl in pools.items():
        rows = []
        for i in range(len(cand)):
            idx = pl[i].nonzero().squeeze(-1)
            rows.append(idx[torch.randperm(len(idx), generator=gen)[:m]])
        masks[k] = torch.stack(rows)
    return cand, masks


def run(cfg: MaskConfig, store):
    kind, value = validate(cfg)
    policy = setup(cfg)
    gen = torch.Generator().manual_seed(cfg.seed)
    batch = batch_for(cfg, policy, store, gen)
    ft = flat_tokens(policy, batch, cfg.temperature)
    p = ft.logprob.exp()
    thr = float(torch.quantile(p, value)) if kind == "q" else value
    low = p < thr
    cand, masks = draw_masks(ft.token, ft.advantage, low, cfg, gen)  # bad sizes fail here: no run folder yet
    N = int(batch.response_mask.sum())
    with experiment_run(store, "mask-effect", cfg, policy) as run:
        run.write_table("batch", batch.to_frame())
        W = policy.lm_head.weight.detach().float()

        def probs_rows(idx):
            return torch.softmax((ft.hidden[idx] @ W.T) / cfg.temperature, -1)

        head = grpo_update(policy, batch, None, OptimConfig("sgd", cfg.lr, params="head", temperature=cfg.temperature),
                           old_logprob=None)
        W_new = head.lm_head.weight.detach().float()
        frames = []
        for cond in CONDITIONS:
            M = masks[cond]
            d = head_closed_form(W_new, ft.hidden, ft.token, ft.advantage, probs_rows, cand, M, cfg.lr, N, cfg.temperature)
            cp = set_coupling(W, ft.hidden, ft.token, ft.advantage, cand, M, cfg.lr, N, cfg.temperature)
            frames.append(pd.DataFrame({
                "candidate": cand.numpy(), "token_id": ft.token[cand].numpy(), "p": p[cand].numpy(),
                "advantage": ft.advantage[cand].numpy(), "condition": cond, "sum_A": ft.advantage[M].double().sum(1).numpy(),
                "n_positive": (ft.advantage[M] > 0).sum(1).numpy(), "delta_head": d.numpy(), "delta_full": np.nan,
                "first_order_head": cp["first_order"].numpy(), "coupling_strength": cp["strength"].numpy()}))
        df = pd.concat(frames, ignore_index=True)
        n_full = min(cfg.full_candidates, len(cand))
        if n_full:
            df = full_effects(policy, batch, ft, cand[:n_full], masks, cfg, N, df)
        run.write_table("candidates", df)
        table1 = summarize_effects(df)
        run.write_table("table1", table1)
        run.write_table("topk", topk_effects(W, W_new, ft, cand, cfg, N, probs_rows))
        print_table("Table 1: masked updates (ours vs paper)", [
            {"masked": r.condition, "head BR": r.head_boost_rate, "head P(sumA>0)": r.head_p_sum_pos,
             "head signed BR": r.head_signed_boost_rate, "head MB": r.head_mean_boost, "full BR": r.full_boost_rate,
             "full signed BR": r.full_signed_boost_rate, "full MB": r.full_mean_boost,
             "paper head BR": r.paper_head_boost_rate, "paper full BR": r.paper_full_boost_rate} for r in table1.itertuples()])
        moved = df[(df.delta_head != 0) & (df.first_order_head != 0)]
        summary = MaskSummary(
            candidates=len(cand), full_candidates=n_full, mask_size=cfg.mask_size, mask_sign=cfg.mask_sign,
            low_conf=cfg.low_conf, low_conf_threshold_p=thr, low_conf_share=float(low.double().mean()),
            first_order_sign_agreement=float((np.sign(moved.delta_head) == np.sign(moved.first_order_head)).mean()),
            **{path: {c: boost_stats(df[df.condition == c][f"delta_{path}"], df[df.condition == c].sum_A)
                      for c in CONDITIONS} for path in ("head", "full")})
        run.finish(summary)
    return run, summary


def full_effects(policy, batch, ft, cand, masks, cfg: MaskConfig, N, df) -> pd.DataFrame:
    base = policy
    if cfg.full_dtype == "float64":
        base = policy.clone()
        base.model.double()
    full = grpo_update(base, batch, None, OptimConfig("sgd", cfg.lr, params="full", temperature=cfg.temperature))
    fp = FullPath(base, full, batch, ft, cfg.lr, N, cfg.temperature)
    with progress("full-parameter masked updates", len(cand) * len(CONDITIONS)) as advance:
        for i, c in enumerate(cand.tolist()):
            lp_new = fp.logprob(full, c)
            for cond in CONDITIONS:
                df.loc[(df.candidate == c) & (df.condition == cond), "delta_full"] = fp.effect(c, masks[cond][i], lp_new)
                advance()
    return df


def summarize_effects(df: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for cond in CONDITIONS:
        d = df[df.condition == cond]
        row = {"condition": cond, "same_token": cond in ("same", "same_lowconf"), "low_conf": "lowconf" in cond}
        for path in ("head", "full"):
            row.update({f"{path}_{k}": v for k, v in boost_stats(d[f"delta_{path}"], d.sum_A).items()})
        p = PAPER_TABLE1[cond]
        row.update(paper_head_boost_rate=p[0], paper_head_mean_boost=p[1], paper_full_boost_rate=p[2],
                   paper_full_mean_boost=p[3])
        rows.append(row)
    return pd.DataFrame(rows)


def topk_masks(W, ft, cand, mask_sign: str, temperature: float = 1.0) -> torch.Tensor:
    """Fig. 3c masks: per candidate, its sign-allowed pool ranked by unsigned coupling |<h_c,h_k> phi_ck| [C, kmax]."""
    pool = lambda c: sign_pool(ft.advantage, mask_sign, c)  # noqa: E731
    kmax = min(max(TOPK), int(pool(cand).sum(1).min()))
    return rank_by_coupling(W, ft.hidden, ft.token, cand, pool, kmax, temperature)


def topk_effects(W, W_new, ft, cand, cfg: MaskConfig, N, probs_rows) -> pd.DataFrame:
    """Fig. 3c: mask the top-k tokens of each candidate's sign-allowed pool, ranked by unsigned coupling."""
    top = topk_masks(W, ft, cand, cfg.mask_sign, cfg.temperature)
    rows = []
    for k in (k for k in TOPK if k <= top.shape[1]):
        M = top[:, :k]
        d = head_closed_form(W_new, ft.hidden, ft.token, ft.advantage, probs_rows, cand, M, cfg.lr, N, cfg.temperature)
        rows.append({"k": k, **boost_stats(d.numpy(), ft.advantage[M].double().sum(1).numpy())})
    return pd.DataFrame(rows)
