"""``cancel data prepare``: DAPO-17k and the validation benchmarks as parquet in verl's schema
(``data_source``, ``prompt`` as chat messages, ``ability``, ``reward_model.ground_truth``,
``extra_info``).  The prompt text is rendered with the chosen template's instruction (the chat
template itself is applied by verl's tokenizer)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..atomic import atomic_write_parquet
from ..tasks.data import BENCHMARKS, load_benchmark, load_dapo
from ..tasks.prompts import INSTRUCTION


def to_verl_rows(problems, split: str, template: str) -> pd.DataFrame:
    rows = []
    for i, p in enumerate(problems):
        content = p.problem if template == "none" else f"{p.problem}\n{INSTRUCTION}"
        rows.append({"data_source": p.source, "prompt": [{"role": "user", "content": content}], "ability": "math",
                     "reward_model": {"style": "rule", "ground_truth": p.answer},
                     "extra_info": {"split": split, "index": i, "id": p.id}})
    return pd.DataFrame(rows)


def prepare(out: Path, data_dir=None, template: str = "qwen-boxed") -> list[Path]:
    out = Path(out)
    paths = []
    train = to_verl_rows(load_dapo(data_dir), "train", template)
    # every input is read (and a malformed one refused) before anything is written
    bench = {name: to_verl_rows(load_benchmark(name, data_dir), "test", template) for name in BENCHMARKS}
    atomic_write_parquet(out / "dapo17k.parquet", train)
    paths.append(out / "dapo17k.parquet")
    vals = []
    for name, df in bench.items():
        atomic_write_parquet(out / f"{name}.parquet", df)
        paths.append(out / f"{name}.parquet")
        vals.append(df)
    atomic_write_parquet(out / "validation.parquet", pd.concat(vals, ignore_index=True))
    paths.append(out / "validation.parquet")
    return paths
