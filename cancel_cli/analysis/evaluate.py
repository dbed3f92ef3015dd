"""``cancel eval`` (Table 2, Table 4): the six math benchmarks, or the toy's held-out sets.

Evaluates a model, or every checkpoint of a train run (``--run``).  avg@32 for AIME24/25 and AMC,
pass@1 for MATH-500, Minerva and OlympiadBench; temperature 0.6 / top-p 0.95 by default;
``--sweep-sampling`` adds Table 4's four (temperature, top-p) settings.  Every sample is stored (part
per target x setting x benchmark), so ``--resume`` continues where a killed job stopped.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch

from ..config import TOYS, load_policy
from ..console import print_table, progress
from ..errors import UserError
from ..evaluation import (PAPER_SETS, TABLE4_SAMPLING, TOY_BENCHMARKS, benchmark_k, benchmark_problems, metric_name,
                          sample_and_score, score_frame)
from ..sampling import make_sampler
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
    device: str = "cpu"


def targets(cfg: EvalConfig, store) -> list[tuple[str, int, str]]:
    """(label, step, model path or name) to evaluate."""
    if not cfg.run:
        return [(cfg.model, -1, cfg.model)]
    src = store.get_done(cfg.run)
    if src.meta.get("command") != "train":
        raise UserError(f"--run needs a train run, {cfg.run} is a {src.meta.get('command')} run")
    ckpts = sorted((src.path / "checkpoints").glob("step-*"))
    if not ckpts:
        raise UserError(f"train run {cfg.run} has no checkpoints")
    return [(f"{cfg.run}@{p.name}", int(p.name.split("-")[1]), str(p)) for p in ckpts]


def run(cfg: EvalConfig, store, resume: str | None = None):
    if cfg.limit < 0 or cfg.k < 0 or cfg.max_new_tokens < 0:
        raise UserError("--limit, --k and --max-new-tokens must be >= 1")
    tg = targets(cfg, store)
    base_model = store.get_done(cfg.run).config.get("model", cfg.model) if cfg.run else cfg.model
    toy = base_model in TOYS
    names = [b.strip() for b in cfg.benchmarks.split(",") if b.strip()] or (list(TOY_BENCHMARKS) if toy else PAPER_SETS)
    settings = TABLE4_SAMPLING if cfg.sweep_sampling else [(cfg.temperature, cfg.top_p)]
    max_new = cfg.max_new_tokens or (96 if toy else 8192)
    template = default_template(base_model)
    problems = {b: benchmark_problems(b, cfg.limit or None, cfg.seed, cfg.data_dir or None) for b in names}
    config = {**vars(cfg), "benchmarks": names, "max_new_tokens": max_new, "base_model": base_model}
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
                    loaded.clear()
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
        scores = r.read_table("scores")
        r.write_table("results", scores)
        last = scores[scores.step == scores.step.max()]
        summary = {f"{row.benchmark}@T{row.temperature}/p{row.top_p}": float(row.score) for row in last.itertuples()}
        summary["average"] = float(last.groupby(["temperature", "top_p"]).score.mean().iloc[-1])
        print_table("evaluation", scores.drop(columns=["target"]).to_dict("records"))
        r.finish(summary)
    return r, summary
