"""``cancel flip``: Alg. 1 at every step of a short GRPO run, for one or several models (Fig. 1a-c, 9).

The run holds, per model, the per-step summary (``steps``) and the per-token table (``tokens``); the
same probe the trainer records.  ``--from-run`` copies the probe of a finished train run instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import pandas as pd

from ..config import load_policy, to_dict
from ..console import print_table
from ..errors import UserError
from ..grpo.probe import FlipShares
from ..grpo.trainer import Trainer, TrainConfig
from ..summary import Summary


@dataclass
class FlipConfig(TrainConfig):
    """A short GRPO run per model with the per-token probe at every step (no validation, no checkpoints)."""

    models: list = field(default_factory=lambda: ["toy"])  # several -> Fig. 9 rows
    from_run: str = ""  # copy the probe of a finished train run instead
    steps: int = 5
    val_sets: list = field(default_factory=list)
    checkpoint_every: int = 0
    save_tokens: bool = True


@dataclass
class FlipSummary(Summary):
    SCHEMA = 1
    models: list
    steps: int
    shares: dict  # model -> FlipShares, mean over steps

    def __post_init__(self):
        self.shares = {m: FlipShares.coerce(v) for m, v in self.shares.items()}


def summarize(steps: pd.DataFrame) -> FlipSummary:
    models = list(dict.fromkeys(steps.model))
    return FlipSummary(models=models, steps=int(steps.step.max()),
                       shares={m: FlipShares.mean_of(steps[steps.model == m]) for m in models})


def run(cfg0: FlipConfig, store):
    from_run, models = cfg0.from_run, cfg0.models
    if from_run:
        src = store.get_done(from_run)
        if src.meta.get("command") != "train":
            raise UserError(f"--from-run needs a train run, {from_run} is a {src.meta.get('command')} run")
        steps = src.read_table("metrics").assign(model=src.meta.get("model", "?"))
        with store.running("flip", to_dict(cfg0), model=src.meta.get("model", "")) as r:
            r.write_table("steps", steps)
            if src.has_table("tokens"):
                r.write_table("tokens", src.read_table("tokens"))
            summary = summarize(steps)
            r.finish(summary)
        return r, summary
    cfg0.validate()
    policies = [load_policy(m, cfg0.device, cfg0.dtype) for m in models]  # fail fast on a bad model name
    with store.running("flip", to_dict(cfg0), model=",".join(p.name for p in policies),
                       model_hash=",".join(p.weights_hash for p in policies), seed=cfg0.seed, device=cfg0.device) as r:
        for i, (name, policy) in enumerate(zip(models, policies)):
            Trainer(replace(cfg0, model=name), policy, r, tags={"model": name}, part_offset=i * 100_000).fit()
        steps = r.read_table("metrics")
        r.write_table("steps", steps)
        summary = summarize(steps)
        print_table("token flipping (mean over steps)", [
            {"model": m, "A>0 boosted": g.pos_boosted.mean(), "A<0 boosted": g.neg_boosted.mean(),
             "A>0 suppressed": g.pos_suppressed.mean(), "A<0 suppressed": g.neg_suppressed.mean(),
             "|d| A>0": g.pos_mean_abs_delta.mean(), "|d| A<0": g.neg_mean_abs_delta.mean()}
            for m, g in steps.groupby("model")])
        r.finish(summary)
    return r, summary
