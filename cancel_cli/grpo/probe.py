"""The per-token flip probe of Alg. 1 (Fig. 1a-c, Fig. 9), recorded by the trainer at every step.

Per token: delta = log pi_theta'(o_t | s_t) - log pi_theta(o_t | s_t) (Eq. 16), both from training-path
forwards on the same batch; boosted if delta > eps, suppressed if delta < -eps, stable otherwise, with
eps = 1e-6 (App. C).  Ratios are reported for A > 0, A < 0 and all rollouts, with mean |delta| per sign.
The four signed shares (A>0 boosted / suppressed, A<0 boosted / suppressed) are always reported
separately: "A>0 suppressed" and "A<0 boosted" are the flips, and under positive-only updates only the
first is a flip against a loss (A<0 tokens then carry none; whatever moves them is coupling).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import pandas as pd
import torch

EPS = 1e-6
CLASSES = ("boosted", "suppressed", "stable")
SIGNS = ("pos", "neg", "all")


@dataclass
class FlipShares:
    """Output of ``flip_summary`` (one step), or its mean over steps."""

    pos_boosted: float
    pos_suppressed: float  # flip of an A>0 token
    pos_stable: float
    neg_boosted: float  # flip of an A<0 token
    neg_suppressed: float
    neg_stable: float
    all_boosted: float
    all_suppressed: float
    all_stable: float
    pos_mean_abs_delta: float
    neg_mean_abs_delta: float
    flip_rate: float  # share of moved tokens against their advantage sign (A != 0)

    @classmethod
    def mean_of(cls, steps: pd.DataFrame) -> "FlipShares":
        return cls(**{f.name: float(steps[f.name].mean()) for f in fields(cls)})

    @classmethod
    def of(cls, delta, advantage, eps: float = EPS) -> "FlipShares":
        s = {**flip_summary(delta, advantage, eps), "flip_rate": flip_rate(delta, advantage, eps)}
        return cls(**{f.name: s[f.name] for f in fields(cls)})

    @classmethod
    def coerce(cls, d) -> "FlipShares":
        return d if isinstance(d, cls) else cls(**d)


def classify(delta, eps: float = EPS) -> np.ndarray:
    """'boosted' | 'suppressed' | 'stable' per token (App. C)."""
    d = np.asarray(delta, dtype=float)
    return np.where(d > eps, "boosted", np.where(d < -eps, "suppressed", "stable"))


def flip_summary(delta, advantage, eps: float = EPS) -> dict:
    """Boosted / suppressed / stable ratios for A>0, A<0 and all tokens, and mean |delta| per sign.

    ``delta`` and ``advantage`` are flat per-token arrays (the rollout's advantage repeated per token)."""
    d, a = np.asarray(delta, dtype=float), np.asarray(advantage, dtype=float)
    out = {}
    for name, sel in zip(SIGNS, (a > 0, a < 0, np.ones_like(a, dtype=bool))):
        ds = d[sel]
        n = max(len(ds), 1)
        out[f"{name}_boosted"] = float((ds > eps).sum() / n)
        out[f"{name}_suppressed"] = float((ds < -eps).sum() / n)
        out[f"{name}_stable"] = float((np.abs(ds) <= eps).sum() / n)
        out[f"{name}_mean_abs_delta"] = float(np.abs(ds).mean()) if len(ds) else float("nan")
        out[f"{name}_tokens"] = int(sel.sum())
    return out


def flip_rate(delta, advantage, eps: float = EPS) -> float:
    """Share of tokens (with A != 0 and |delta| > eps) whose delta sign disagrees with their advantage sign."""
    d, a = np.asarray(delta, dtype=float), np.asarray(advantage, dtype=float)
    sel = (a != 0) & (np.abs(d) > eps)
    return float((np.sign(d[sel]) != np.sign(a[sel])).mean()) if sel.any() else float("nan")


def token_table(batch, old_logprob: torch.Tensor, new_logprob: torch.Tensor, entropy: torch.Tensor | None,
                tokenizer, **extra) -> pd.DataFrame:
    """The per-token long table of DESIGN.md (one row per response token)."""
    m = batch.response_mask.bool()
    rows, pos = m.nonzero(as_tuple=True)
    tok = batch.response_ids[m]
    old, new = old_logprob[m].double(), new_logprob[m].double()
    delta = (new - old).numpy()
    vocab_text = _token_texts(tokenizer, tok.unique().tolist())
    df = pd.DataFrame({
        "rollout": rows.numpy(), "uid": batch.uid[rows.numpy()], "position": pos.numpy(), "token_id": tok.numpy(),
        "token_text": [vocab_text[t] for t in tok.tolist()], "reward": batch.reward[rows].numpy(),
        "advantage": batch.advantage[rows].numpy(), "old_logprob": old.numpy(), "new_logprob": new.numpy(),
        "delta": delta, "entropy": entropy[m].numpy() if entropy is not None else np.nan, "class": classify(delta),
    })
    for k, v in extra.items():
        df[k] = v
    return df


def _token_texts(tokenizer, ids: list[int]) -> dict[int, str]:
    return {i: tokenizer.decode([i], skip_special_tokens=False) for i in ids}
