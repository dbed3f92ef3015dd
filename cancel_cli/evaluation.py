"""Evaluation on the math benchmarks (Table 2, Table 4) and the toy's held-out arithmetic sets.

AIME24/25 and AMC: avg@32 (mean correctness over 32 samples per problem, averaged over problems);
MATH-500, Minerva, OlympiadBench: pass@1 (one sample per problem).  Temperature 0.6, top-p 0.95 by
default (App. B).  On the toy the benchmarks are held-out column additions with 2-, 3- and 4-digit
operands (4 digits is out of the training distribution).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from .errors import UserError
from .tasks import Problem
from .tasks.data import BENCHMARKS, load_benchmark

TOY_BENCHMARKS = {"toy-2digit": (2,), "toy-3digit": (3,), "toy-4digit": (4,)}
PAPER_SETS = list(BENCHMARKS)
TABLE4_SAMPLING = [(1.0, 0.7), (0.6, 0.7), (1.0, 0.95), (0.6, 0.95)]


def benchmark_k(name: str, k_override: int | None = None) -> int:
    if k_override:
        return k_override
    return BENCHMARKS[name][2] if name in BENCHMARKS else 1


def metric_name(name: str, k: int) -> str:
    return f"avg@{k}" if k > 1 else "pass@1"


def benchmark_problems(name: str, limit: int | None = None, seed: int = 0, data_dir=None) -> list[Problem]:
    if name in TOY_BENCHMARKS:
        from .tasks.arithmetic import toy_problems

        return toy_problems(limit or 256, seed=10_000 + seed, digits=TOY_BENCHMARKS[name], split="eval")
    if name in BENCHMARKS:
        return load_benchmark(name, data_dir, limit)
    raise UserError(f"unknown benchmark {name!r} ({', '.join(list(TOY_BENCHMARKS) + PAPER_SETS)})")


def avg_at_k(correct: np.ndarray) -> float:
    """Mean over problems of the mean correctness of their k samples; correct is [problems, k]."""
    correct = np.asarray(correct, dtype=float)
    if correct.ndim != 2 or correct.size == 0:
        raise ValueError("correct must be a non-empty [problems, k] array")
    return float(correct.mean(1).mean())


def pass_at_1(correct: np.ndarray) -> float:
    """pass@1 from one sample per problem (first column when more were drawn)."""
    correct = np.asarray(correct, dtype=float)
    return float(correct[:, 0].mean())


def sample_and_score(policy, problems: list[Problem], k: int, temperature: float, top_p: float, max_new_tokens: int,
                     template: str, generator: torch.Generator, sampler=None) -> pd.DataFrame:
    """k samples per problem, scored by math-verify: one row per sample."""
    from .sampling import SamplingParams, make_sampler
    from .tasks.prompts import render
    from .tasks.reward import score_batch

    sampler = sampler or make_sampler(policy, "torch")
    prompts = [policy.encode(render(p.problem, template)) for p in problems]
    outs = sampler.rollouts(prompts, k, SamplingParams(temperature, top_p, max_new_tokens), generator)
    rows = []
    for p, grp in zip(problems, outs):
        for j, resp in enumerate(grp):
            rows.append({"problem_id": p.id, "sample": j, "answer": p.answer, "response": policy.decode(resp),
                         "length": len(resp), "truncated": not resp or resp[-1] != policy.eos_id})
    df = pd.DataFrame(rows)
    df["correct"] = score_batch(df.response.tolist(), df.answer.tolist())
    return df


def score_frame(df: pd.DataFrame, k: int) -> float:
    mat = df.sort_values(["problem_id", "sample"]).pivot(index="problem_id", columns="sample", values="correct").to_numpy()
    return avg_at_k(mat) if k > 1 else pass_at_1(mat)
