"""Data for ``--engine verl``: parquet in verl's schema (``data_source``, ``prompt`` as chat messages,
``ability``, ``reward_model.ground_truth``, ``extra_info``) and the chat template that renders it.

The message content is the raw problem; ``chat_template(template)`` is a jinja template that renders
``[{"role": "user", "content": problem}]`` exactly as ``tasks.prompts.render(problem, template)`` (the
toy: the raw problem; Qwen base models: the ``qwen-boxed`` prompt), so both engines train on identical
prompt tokens.  verl gets it as ``actor_rollout_ref.model.custom_chat_template`` (the toy tokenizer has
none, and a base model's own template would add a different system prompt).  Validation rows carry
verl's per-row ``__rollout_n__``: k = 32 for AIME/AMC (avg@32), 1 for the others, as the torch path.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from ..atomic import atomic_write_parquet
from ..evaluation import benchmark_k, benchmark_problems
from ..tasks.data import BENCHMARKS, load_benchmark, load_dapo
from ..tasks.prompts import render

_MARK = "\x00"


def chat_template(template: str) -> str:
    """Jinja chat template equal to ``render(problem, template)`` for one user message (no single quotes,
    so it passes through a quoted hydra override unchanged)."""
    before, after = render(_MARK, template).split(_MARK)
    lit = lambda s: "{{ " + json.dumps(s) + " }}" if s else ""  # noqa: E731
    return lit(before) + "{{ messages[0].content }}" + lit(after)


def to_verl_rows(problems, split: str, rollout_n: int | None = None) -> pd.DataFrame:
    rows = []
    for i, p in enumerate(problems):
        row = {"data_source": p.source, "prompt": [{"role": "user", "content": p.problem}], "ability": "math",
               "reward_model": {"style": "rule", "ground_truth": p.answer},
               "extra_info": {"split": split, "index": i, "id": p.id}}
        if rollout_n is not None:
            row["__rollout_n__"] = rollout_n
        rows.append(row)
    return pd.DataFrame(rows)


def train_problems(cfg, data_dir=None) -> list:
    """The torch trainer's pool (``analysis.common.ProblemSource``): 20000 seeded toy problems, or the file."""
    if cfg.data == "toy":
        from ..tasks.arithmetic import toy_problems

        return toy_problems(20000, cfg.seed, split="train")
    return load_dapo(data_dir, path=None if cfg.data == "dapo17k" else cfg.data)


def val_k(cfg, name: str) -> int:
    return cfg.val_k if cfg.model == "toy" else benchmark_k(name)


def write_run_data(cfg, folder: Path, data_dir=None) -> tuple[Path, Path]:
    """train.parquet and validation.parquet for one run (the same problems the torch engine would use)."""
    folder = Path(folder)
    train = folder / "train.parquet"
    atomic_write_parquet(train, to_verl_rows(train_problems(cfg, data_dir), "train"))
    vals = [to_verl_rows(benchmark_problems(b, cfg.val_prompts or None, seed=cfg.seed, data_dir=data_dir), "test",
                         val_k(cfg, b)) for b in cfg.val_sets]
    val = folder / "validation.parquet"
    atomic_write_parquet(val, pd.concat(vals, ignore_index=True))
    return train, val


def prepare(out: Path, data_dir=None, template: str = "qwen-boxed") -> list[Path]:
    """``cancel data prepare``: DAPO-17k and the six benchmarks as verl parquet (raw problems; use
    ``chat_template(template)`` as verl's ``custom_chat_template``)."""
    out = Path(out)
    paths = []
    # every input is read (and a malformed one refused) before anything is written
    train = to_verl_rows(load_dapo(data_dir), "train")
    bench = {name: to_verl_rows(load_benchmark(name, data_dir), "test", benchmark_k(name)) for name in BENCHMARKS}
    atomic_write_parquet(out / "dapo17k.parquet", train)
    paths.append(out / "dapo17k.parquet")
    vals = []
    for name, df in bench.items():
        atomic_write_parquet(out / f"{name}.parquet", df)
        paths.append(out / f"{name}.parquet")
        vals.append(df)
    atomic_write_parquet(out / "validation.parquet", pd.concat(vals, ignore_index=True))
    paths.append(out / "validation.parquet")
    (out / "chat_template.jinja").write_text(chat_template(template))
    paths.append(out / "chat_template.jinja")
    return paths

