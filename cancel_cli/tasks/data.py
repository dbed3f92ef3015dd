"""Loaders for the math data: the six evaluation benchmarks and DAPO-17k.

Benchmarks use one JSONL schema: ``{"id", "problem", "answer", "meta"}`` (see ``cancel data download``).
DAPO-17k is read from that schema or from verl's parquet/JSONL schema (``prompt`` as chat messages or a
string, ``reward_model.ground_truth``, ``data_source``).  Files are looked up in ``--data-dir``, then
``$CANCEL_DATA``, then ``~/.cache/cancel/data``, then the folders ``cancel data download --out`` wrote;
nothing is downloaded here.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..errors import UserError
from . import Problem

BENCHMARKS = {  # name -> (file stem, metric, k)
    "aime24": ("aime24", "avg@k", 32),
    "aime25": ("aime25", "avg@k", 32),
    "amc23": ("amc23", "avg@k", 32),
    "math500": ("math500", "pass@1", 1),
    "minerva": ("minerva", "pass@1", 1),
    "olympiadbench": ("olympiadbench", "pass@1", 1),
}
HUB_SOURCES = {  # what `cancel data download` fetches (HF dataset id, split, problem field, answer field)
    "aime24": ("HuggingFaceH4/aime_2024", "train", "problem", "answer"),
    "aime25": ("math-ai/aime25", "test", "problem", "answer"),
    "amc23": ("math-ai/amc23", "test", "question", "answer"),
    "math500": ("HuggingFaceH4/MATH-500", "test", "problem", "answer"),
    "minerva": ("math-ai/minervamath", "test", "question", "answer"),
    "olympiadbench": ("math-ai/olympiadbench", "test", "question", "final_answer"),
    "dapo17k": ("open-r1/DAPO-Math-17k-Processed", "train", "prompt", "solution"),
}


def default_data_dir() -> Path:
    return Path.home() / ".cache" / "cancel" / "data"


def downloads_record() -> Path:
    """Folders ``cancel data download --out`` wrote into, one a line."""
    return Path.home() / ".cache" / "cancel" / "downloaded.txt"


def data_dirs(data_dir: str | Path | None = None) -> list[Path]:
    """--data-dir, then $CANCEL_DATA, then ~/.cache/cancel/data, then what `cancel data download` wrote."""
    dirs = [Path(data_dir)] if data_dir else []
    if os.environ.get("CANCEL_DATA"):
        dirs.append(Path(os.environ["CANCEL_DATA"]))
    dirs.append(default_data_dir())
    rec = downloads_record()
    if rec.is_file():
        dirs += [Path(line) for line in rec.read_text().splitlines() if line.strip() and Path(line) not in dirs]
    return dirs


def find_file(stem: str, data_dir=None) -> Path:
    for d in data_dirs(data_dir):
        for ext in (".jsonl", ".parquet"):
            if (d / f"{stem}{ext}").exists():
                return d / f"{stem}{ext}"
    raise UserError(f"data file {stem}.jsonl not found in {', '.join(map(str, data_dirs(data_dir)))}; "
                    f"run `cancel data download {stem}` (or pass --data-dir)")


def _rows(path: Path) -> list[dict]:
    """Rows of a JSONL or parquet data file; anything else is one clear error naming the file."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"data file {path} is a directory (expected a .jsonl or .parquet file)")
    if not path.exists():
        raise UserError(f"data file {path} does not exist")
    if path.suffix == ".parquet":
        import pandas as pd

        try:
            return pd.read_parquet(path).to_dict("records")
        except (OSError, ValueError) as e:
            raise UserError(f"data file {path} is not a readable parquet file ({str(e).splitlines()[0]})") from None
    if path.suffix not in (".jsonl", ".json"):
        raise UserError(f"data file {path}: unsupported format {path.suffix or '(no suffix)'} (use .jsonl or .parquet)")
    rows = []
    try:
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, start=1):
                if line.strip():
                    row = json.loads(line)
                    if not isinstance(row, dict):
                        raise UserError(f"data file {path} line {n}: expected a JSON object, got {type(row).__name__}")
                    rows.append(row)
    except json.JSONDecodeError as e:
        raise UserError(f"data file {path} line {n} is not valid JSON ({e.msg})") from None
    except UnicodeDecodeError:
        raise UserError(f"data file {path} is not UTF-8 text (expected JSONL)") from None
    return rows


def _from_row(row: dict, source: str, i: int) -> Problem:
    try:
        return _parse_row(row, source, i)
    except (KeyError, IndexError, TypeError, AttributeError) as e:
        raise UserError(f"{source}: row {i} is malformed ({type(e).__name__}: {e}; fields {sorted(row)})") from None


def _parse_row(row: dict, source: str, i: int) -> Problem:
    if "problem" in row and "answer" in row:
        if not isinstance(row["problem"], str) or not row["problem"].strip():
            raise UserError(f"{source}: row {i} has no problem text")
        return Problem(str(row.get("id", f"{source}-{i}")), row["problem"], str(row["answer"]), source,
                       row.get("meta") or {})
    if "prompt" in row and "reward_model" in row:  # verl schema
        prompt = row["prompt"]
        if not isinstance(prompt, str):
            prompt = list(prompt)[-1]["content"]
        gt = row["reward_model"]["ground_truth"]
        if isinstance(gt, dict):
            gt = gt.get("target", gt)
        return Problem(str(row.get("extra_info", {}).get("index", f"{source}-{i}") if isinstance(row.get("extra_info"), dict)
                           else f"{source}-{i}"), prompt, str(gt), row.get("data_source", source), {})
    raise UserError(f"{source}: unrecognised row schema (fields {sorted(row)})")


def load_benchmark(name: str, data_dir=None, limit: int | None = None) -> list[Problem]:
    if name not in BENCHMARKS:
        raise UserError(f"unknown benchmark {name!r} ({', '.join(BENCHMARKS)})")
    path = find_file(BENCHMARKS[name][0], data_dir)
    probs = [_from_row(r, name, i) for i, r in enumerate(_rows(path))]
    if not probs:
        raise UserError(f"benchmark file {path} has no problems")
    return probs[:limit] if limit else probs


def load_dapo(data_dir=None, path: str | Path | None = None) -> list[Problem]:
    p = Path(path) if path else find_file("dapo17k", data_dir)
    if not p.exists():
        raise UserError(f"DAPO-17k file {p} does not exist")
    probs = [_from_row(r, "dapo17k" if path is None else str(p), i) for i, r in enumerate(_rows(p))]
    if not probs:
        raise UserError(f"data file {p} has no problems")
    return probs


def download(names: list[str], out_dir: Path) -> list[Path]:
    """Fetch datasets from the HF hub into the benchmark JSONL schema (needs network access)."""
    if "1" in (os.environ.get("HF_HUB_OFFLINE"), os.environ.get("HF_DATASETS_OFFLINE")):  # read now, not at import
        raise UserError(f"offline (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE is set): nothing can be downloaded; "
                        f"copy the JSONL files into {out_dir}")
    try:
        from datasets import load_dataset
    except ImportError:
        raise UserError("`cancel data download` needs the `datasets` package (pip install datasets)") from None
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name in names:
        if name not in HUB_SOURCES:
            raise UserError(f"unknown dataset {name!r} ({', '.join(HUB_SOURCES)})")
        hub, split, pf, af = HUB_SOURCES[name]
        try:
            ds = load_dataset(hub, split=split)
        except Exception as e:
            raise UserError(f"could not download {hub} ({type(e).__name__}); check network access or copy "
                            f"{name}.jsonl into {out_dir}") from None
        seen, path = set(), out_dir / f"{name}.jsonl"
        with open(path, "w", encoding="utf-8") as f:
            for i, row in enumerate(ds):
                ans = row[af][0] if isinstance(row[af], list) else row[af]
                if name == "dapo17k":
                    if row[pf] in seen:
                        continue
                    seen.add(row[pf])
                f.write(json.dumps({"id": f"{name}-{i}", "problem": row[pf], "answer": str(ans), "meta": {"hub": hub}},
                                   ensure_ascii=False) + "\n")
        written.append(path)
    if written and out_dir.resolve() != default_data_dir().resolve():
        rec = downloads_record()
        known = rec.read_text().splitlines() if rec.is_file() else []
        if str(out_dir.resolve()) not in known:
            rec.parent.mkdir(parents=True, exist_ok=True)
            rec.write_text("\n".join(known + [str(out_dir.resolve())]) + "\n")
    return written
