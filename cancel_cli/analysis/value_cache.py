"""Store-wide cache of Monte-Carlo token values.

Key: (model weights hash, prefix token ids, token, M, sampling params, seed, estimator) -> sha1.  The
estimator is part of the key, so a direct run is never served an eq20 value (nor the reverse).  Entries live in
``<results>/_cache/mc_value/part-*.parquet`` (atomic part files, so a killed job loses at most the part
being written and never leaves a partial one).  Every command that needs token values goes through
``ValueCache`` (``get`` a key, ``put`` computed rows; ``analysis.value_estimate.token_values``).
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time

import pandas as pd

from ..atomic import atomic_write_parquet
from ..atomic import read_or_quarantine

COLUMNS = ("key", "q_a", "k_a", "m_a", "q_b", "k_b", "m_b", "p_sampling", "estimator")


def value_key(model_hash: str, prefix: list[int], token: int, M: int, temperature: float, top_p: float,
              max_new_tokens: int, seed: int, estimator: str) -> str:
    blob = json.dumps([model_hash, list(map(int, prefix)), int(token), int(M), float(temperature), float(top_p),
                       int(max_new_tokens), int(seed), str(estimator)])
    return hashlib.sha1(blob.encode()).hexdigest()


class ValueCache:
    def __init__(self, store):
        self.dir = store.root / "_cache" / "mc_value"
        self.entries: dict[str, dict] = {}
        self.hits = self.misses = 0
        if self.dir.exists():
            for p in sorted(self.dir.glob("part-*.parquet")):
                df = read_or_quarantine(p, columns=COLUMNS)  # unreadable or older layout: moved aside, recomputed
                for row in ([] if df is None else df.to_dict("records")):
                    self.entries[row["key"]] = row

    def get(self, key: str) -> dict | None:
        row = self.entries.get(key)
        if row is None:
            self.misses += 1
        else:
            self.hits += 1
        return row

    def put(self, rows: list[dict]) -> None:
        if not rows:
            return
        name = f"part-{time.strftime('%Y%m%d%H%M%S')}-{secrets.token_hex(4)}.parquet"
        atomic_write_parquet(self.dir / name, pd.DataFrame(rows))
        for r in rows:
            self.entries[r["key"]] = r

    @property
    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0
