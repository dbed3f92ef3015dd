"""``cancel eval`` (Table 2, Table 4): the six math benchmarks, or the toy's held-out sets.

Evaluates a model, or every checkpoint of a train run (``--run``).  avg@32 for AIME24/25 and AMC,
pass@1 for MATH-500, Minerva and OlympiadBench; temperature 0.6 / top-p 0.95 by default;
``--sweep-sampling`` adds Table 4's four (temperature, top-p) settings.  Every sample is stored (part
per target x setting x benchmark), so ``--resume`` continues where a killed job stopped.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import pandas as pd
import torch

from ..config import load_policy, to_dict
from ..console import print_table, progress
from ..errors import UserError
from ..evaluation import (PAPER_SETS, TABLE4_SAMPLING, TOY_BENCHMARKS, benchmark_k, benchmark_problems, metric_name,
                          sample_and_score, score_frame)
from ..sampling import make_sampler
from ..summary import Summary
from ..tasks.prompts import default_template


@dataclass
class EvalConfig:
    model: str = "toy"
    run: str = ""
    benchmarks: str = ""
    limit: int = 0
    k: int = 0
    temperature: float = 0.6
    top_p: float = 0.95
    max_new_tokens: int = 0
    sweep_sampling: bool = False
    engine: str = "auto"
    data_dir: str = ""
    seed: int = 0
    device: str = "auto"


def setting_label(temperature: float, top_p: float) -> str:
    return f"T{temperature:g}/p{top_p:g}"


@dataclass
class EvalSummary(Summary):
    """Scores of the last evaluated target (the final checkpoint with ``--run``), per benchmark and sampling
    setting; ``average`` is the mean over benchmarks at the configured (temperature, top-p)."""

    SCHEMA = 1
    base_model: str
    run: str  # the train run whose checkpoints were evaluated ("" = the model itself)
    final_step: int  # checkpoint step of the scores (-1 = the model itself)
    setting: str  # the configured sampling setting, e.g. T0.6/p0.95
    average: float
    scores: dict = field(default_factory=dict)  # "<setting>" -> {benchmark: score}
    samples: dict = field(default_factory=dict)  # benchmark -> problems x k (scored samples per setting)
    metrics: dict = field(default_factory=dict)  # benchmark -> "avg@k" | "pass@1"


def eval_summary(scores: pd.DataFrame, cfg: "EvalConfig", base_model: str) -> EvalSummary:
    last = scores[scores.step == scores.step.max()]
    by = {setting_label(t, p): {r.benchmark: float(r.score) for r in g.itertuples()}
          for (t, p), g in last.groupby(["temperature", "top_p"])}
    own = setting_label(cfg.temperature, cfg.top_p)
    key = own if own in by else next(iter(by))
    return EvalSummary(base_model=base_model, run=cfg.run, final_step=int(last.step.max()), setting=key,
                       average=float(pd.Series(by[key]).mean()), scores=by,
                       samples={r.benchmark: int(r.problems * r.k) for r in last.itertuples()},
                       metrics={r.benchmark: str(r.metric) for r in last.itertuples()})


def targets(cfg: EvalConfig, store) -> list[tuple[str, int, str]]:
    """(label, step, model path or name) to evaluate."""
    if not cfg.run:
        return [(cfg.model, -1, cfg.model)]
    src = store.get_done(cfg.run)
    if src.meta.get("command") != "train":
        raise UserError(f"--run needs a train run, {cfg.run} is a {src.meta.get('command')} run")
    from ..verl_ext.checkpoints import verl_checkpoints

    ckpts = [(p.name, int(p.name.split("-")[1]), p) for p in sorted((src.path / "checkpoints").glob("step-*"))]
    ckpts += verl_checkpoints(src.path)  # --engine verl runs: global_step_N/actor/huggingface
    if not ckpts:
        raise UserError(f"train run {cfg.run} has no checkpoints")
    return [(f"{cfg.run}@{name}", step, str(p)) for name, step, p in ckpts]


def close_samplers(loaded: dict) -> None:
    """Shut down the previous checkpoint's engine (a vLLM engine holds GPU memory until closed)."""
    for _, sampler in loaded.values():
        getattr(sampler, "close", lambda: None)()
    loaded.clear()


def run(cfg: EvalConfig, store, resume: str | None = None):
    if cfg.limit < 0 or cfg.k < 0 or cfg.max_new_tokens < 0:
        raise UserError("--limit, --k and --max-new-tokens must be >= 1")
    tg = targets(cfg, store)
    base_model = store.get_done(cfg.run).config.get("model", cfg.model) if cfg.run else cfg.model
    toy = base_model == "toy"
    names = [b.strip() for b in cfg.benchmarks.split(",") if b.strip()] or (list(TOY_BENCHMARKS) if toy else PAPER_SETS)
    settings = TABLE4_SAMPLING if cfg.sweep_sampling else [(cfg.temperature, cfg.top_p)]
    max_new = cfg.max_new_tokens or (96 if toy else 8192)
    template = default_template(base_model)
    problems = {b: benchmark_problems(b, cfg.limit or None, cfg.seed, cfg.data_dir or None) for b in names}
    cfg = replace(cfg, benchmarks=",".join(names), max_new_tokens=max_new)  # run.json holds the resolved config
    config = to_dict(cfg)
    jobs = [(t, s, b) for t in tg for s in settings for b in names]
    with store.running("eval", config, resume=resume, model=base_model, seed=cfg.seed, device=cfg.device) as r:
        done = r.done_parts("scores")
        loaded = {}
        with progress("eval", len(jobs)) as advance:
            advance(len(done))
            for i, ((label, step, path), (temp, top_p), b) in enumerate(jobs):
                if i in done:
                    continue
                if path not in loaded:
                    close_samplers(loaded)
                    pol = load_policy(path, cfg.device, "float32" if cfg.device == "cpu" else "bfloat16")
                    loaded[path] = (pol, make_sampler(pol, cfg.engine))
                pol, sampler = loaded[path]
                k = benchmark_k(b, cfg.k or None) if not toy else (cfg.k or 4)
                gen = torch.Generator().manual_seed(cfg.seed)
                df = sample_and_score(pol, problems[b], k, temp, top_p, max_new, template, gen, sampler)
                meta = {"target": label, "step": step, "benchmark": b, "temperature": temp, "top_p": top_p}
                r.write_part("samples", i, df.assign(**meta))
                r.write_part("scores", i, pd.DataFrame([{**meta, "k": k, "metric": metric_name(b, k),
                                                          "score": score_frame(df, k), "problems": len(problems[b]),
                                                          "truncated": float(df.truncated.mean())}]))
                advance()
        close_samplers(loaded)
        scores = r.read_table("scores")
        r.write_table("results", scores)
        summary = eval_summary(scores, cfg, base_model)
        print_table("evaluation", scores.drop(columns=["target"]).to_dict("records"))
        r.finish(summary)
    return r, summary
