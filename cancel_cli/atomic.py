"""Atomic writes (a temp file in the same folder, then ``os.replace``: a reader sees the old file or the
new one, never half of one) and safe reads (an unreadable file is moved aside, never trusted)."""

from __future__ import annotations

import json
import os
import secrets
import tempfile
import time
from pathlib import Path

import pandas as pd


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_bytes(path, json.dumps(obj, indent=2, default=str).encode())


def atomic_write_parquet(path: Path, df: pd.DataFrame, metadata: dict | None = None) -> None:
    """``metadata``: extra key-value pairs in the parquet schema (e.g. the run's config hash)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        if metadata:
            import pyarrow as pa
            import pyarrow.parquet as pq

            table = pa.Table.from_pandas(df, preserve_index=False)
            extra = {k.encode(): str(v).encode() for k, v in metadata.items()}
            pq.write_table(table.replace_schema_metadata({**(table.schema.metadata or {}), **extra}), tmp)
        else:
            df.to_parquet(tmp, index=False)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def warn(msg: str) -> None:
    import sys

    print(f"warning: {msg}", file=sys.stderr)


def parquet_ok(path: Path) -> bool:
    """The file is a parquet file with a readable footer (catches empty, truncated and garbage files)."""
    import pyarrow.parquet as pq

    try:
        pq.read_metadata(path)
        return True
    except (OSError, ValueError):
        return False


def quarantine(path: Path, why: str) -> Path:
    """Move an unreadable store file aside (``<name>.corrupt-<time>``, ignored by every reader), say so in
    one line, and return the new path; callers recompute what it held."""
    dest = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%d%H%M%S')}-{secrets.token_hex(2)}")
    os.replace(path, dest)
    warn(f"{path} is unreadable ({why}); moved to {dest.name}, its rows will be recomputed")
    return dest


def read_or_quarantine(path: Path, columns: tuple = (), footer_only: bool = False) -> pd.DataFrame | None:
    """A parquet file's rows, or None after quarantining it when it is empty, truncated, garbage or lacks
    one of ``columns``.  ``footer_only`` checks readability without loading the rows (returns an empty frame)."""
    try:
        if footer_only:
            import pyarrow.parquet as pq

            pq.read_metadata(path)
            return pd.DataFrame()
        df = pd.read_parquet(path)
    except (OSError, ValueError) as e:
        quarantine(path, str(e).splitlines()[0] if str(e) else type(e).__name__)
        return None
    missing = [c for c in columns if c not in df.columns]
    if missing:
        quarantine(path, f"no column {', '.join(missing)}")
        return None
    return df
