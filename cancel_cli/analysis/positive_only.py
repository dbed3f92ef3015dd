"""``cancel positive-only``: Alg. 2 (App. E.1), Fig. 1d and Fig. 4.

From one saved theta_0 and one rollout batch B: a positive-only update (A+ = A * 1[r = 1]) and a joint
GRPO update, both from theta_0 and both measured on the full batch B.  Per variant: flip ratios, the
flip rate (share of moved tokens whose delta sign disagrees with the sign of their rollout's GRPO
advantage), the share of boosted mass (sum of positive deltas) per token category and the top-20
boosted tokens.  Fig. 1d: flip ratios across steps of positive-only training vs GRPO training from
theta_0 (two short trainer runs, same seed, same prompts).  Tokens are classed by the sign of their
rollout's GRPO advantage in both variants; the four signed shares are kept apart because under
positive-only updates the A<0 tokens carry no loss (their movement is coupling alone), so only the A>0
suppressed share is a flip against the token's own loss.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from ..console import print_table
from ..grpo.plans import make_plan
from ..grpo.trainer import Trainer, TrainConfig
from ..grpo.update import OptimConfig, grpo_update
from ..summary import Summary
from .categories import CATEGORIES, classify_tokens
from ..config import to_dict
from ..rollout import ProblemSource, RolloutConfig, experiment_run, sample_batch, setup
from ..grpo.probe import FlipShares, flip_rate, flip_summary, token_table


@dataclass
class PositiveOnlyConfig(RolloutConfig):
    optimizer: str = "sgd"
    lr: float = 0.1
    minibatch_prompts: int = 0  # 0 = the whole batch is one mini-batch (one update)
    train_steps: int = 8  # Fig. 1d
    train_lr: float = 2e-4
    top: int = 20


def categorize(batch, tokenizer) -> np.ndarray:
    """Category of every response token (flattened like the per-token table)."""
    special = set(tokenizer.all_special_tokens)
    out = []
    for ids, m in zip(batch.response_ids, batch.response_mask.bool()):
        pieces = [tokenizer.decode([t], skip_special_tokens=False) for t in ids[m].tolist()]
        out.extend(classify_tokens(pieces, special))
    return np.array(out)


def boosted_mass(df: pd.DataFrame, col: str) -> dict:
    pos = df[col].clip(lower=0)
    total = pos.sum()
    return {c: float(pos[df.category == c].sum() / total) if total > 0 else float("nan") for c in CATEGORIES}


def top_boosted(df: pd.DataFrame, col: str, k: int = 20) -> pd.DataFrame:
    g = df.assign(b=df[col].clip(lower=0)).groupby(["token_text", "category"]).b.agg(["sum", "count"])
    return g.sort_values("sum", ascending=False).head(k).reset_index().rename(columns={"sum": "boosted_mass"})


VARIANTS = ("positive_only", "grpo")


@dataclass
class PositiveOnlySummary(Summary):
    SCHEMA = 1
    update: dict  # variant -> FlipShares of the one update from theta_0 (Alg. 2), measured on the full batch
    training: dict  # variant -> FlipShares, mean over the Fig. 1d training steps
    format_mass: dict  # variant -> share of boosted mass on format tokens (Fig. 4)
    train_steps: int

    def __post_init__(self):
        self.update = {v: FlipShares.coerce(x) for v, x in self.update.items()}
        self.training = {v: FlipShares.coerce(x) for v, x in self.training.items()}


def one_update(policy, batch, plan, opt: OptimConfig, old_logprob, variant: str) -> np.ndarray:
    """Alg. 2, one variant: update theta_0 with A (grpo) or A+ = A * 1[r = 1] (positive_only); per-token
    delta measured on the full batch B (A<0 tokens included, also when they carried no loss)."""
    adv = batch.advantage * (batch.reward == 1).float() if variant == "positive_only" else batch.advantage
    new = grpo_update(policy, batch, plan, opt, advantage=adv, old_logprob=old_logprob)  # from theta_0
    lp = new.token_stats(batch.prompt_ids, batch.prompt_mask, batch.response_ids, batch.response_mask,
                         temperature=opt.temperature, with_entropy=False).logprob
    return (lp - old_logprob)[batch.response_mask.bool()].double().numpy()


def run(cfg: PositiveOnlyConfig, store):
    policy = setup(cfg)
    gen = torch.Generator().manual_seed(cfg.seed)
    with experiment_run(store, "positive-only", cfg, policy) as r:
        batch = sample_batch(policy, ProblemSource(cfg.data, cfg.seed).take(cfg.prompts), cfg, gen)
        r.write_table("batch", batch.to_frame())
        st = policy.token_stats(batch.prompt_ids, batch.prompt_mask, batch.response_ids, batch.response_mask,
                                temperature=cfg.temperature)
        mb = (cfg.minibatch_prompts or cfg.prompts) * cfg.n
        plan = make_plan("verl-default", batch.uid, batch.advantage.numpy(), batch.lengths, mb, seed=cfg.seed).minibatches
        opt = OptimConfig(cfg.optimizer, cfg.lr, temperature=cfg.temperature)
        m = batch.response_mask.bool()
        tok_adv = batch.advantage[:, None].expand_as(st.logprob)[m].numpy()  # classes by the GRPO advantage's sign
        table = token_table(batch, st.logprob, st.logprob, st.entropy, policy.tokenizer).drop(
            columns=["new_logprob", "delta", "class"])
        table["category"] = categorize(batch, policy.tokenizer)
        rows = []
        for variant in VARIANTS:
            delta = one_update(policy, batch, plan, opt, st.logprob, variant)
            table[f"delta_{variant}"] = delta
            rows.append({"variant": variant, **flip_summary(delta, tok_adv), "flip_rate": flip_rate(delta, tok_adv),
                         **{f"mass_{c}": v for c, v in boosted_mass(table, f"delta_{variant}").items()}})
        variants = pd.DataFrame(rows)
        r.write_table("tokens", table)
        r.write_table("variants", variants)
        r.write_table("top_boosted", pd.concat([top_boosted(table, f"delta_{v}", cfg.top).assign(variant=v)
                                                for v in VARIANTS]))
        # Fig. 1d: positive-only training vs GRPO training from theta_0
        for i, pos in enumerate((True, False)):
            base = {k: v for k, v in to_dict(cfg).items() if k in RolloutConfig.__dataclass_fields__}
            tcfg = TrainConfig(**{**base, "steps": cfg.train_steps, "positive_only": pos, "lr": cfg.train_lr,
                                  "optimizer": "adamw", "val_sets": [], "checkpoint_every": 0,
                                  "minibatch_prompts": max(1, cfg.prompts // 4)})
            Trainer(tcfg, policy.clone(), r, tags={"variant": "positive_only" if pos else "grpo"},
                    part_offset=i * 100_000).fit()
        curves = r.read_table("metrics")
        r.write_table("training", curves)
        v = variants.set_index("variant")
        summary = PositiveOnlySummary(
            update={k: FlipShares.mean_of(variants[variants.variant == k]) for k in VARIANTS},
            training={k: FlipShares.mean_of(curves[curves.variant == k]) for k in VARIANTS},
            format_mass={k: float(v.mass_format[k]) for k in VARIANTS}, train_steps=cfg.train_steps)
        print_table("positive-only vs GRPO (one update from theta_0, measured on the full batch)",
                    [{"variant": k, "A>0 boosted": row.pos_boosted, "A>0 suppressed": row.pos_suppressed,
                      "A<0 boosted": row.neg_boosted, "A<0 suppressed": row.neg_suppressed, "flip rate": row.flip_rate,
                      **{f"mass {c}": row[f"mass_{c}"] for c in CATEGORIES}} for k, row in v.iterrows()])
        r.finish(summary)
    return r, summary
