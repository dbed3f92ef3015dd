"""The results store: ``results/<command>/<run_id>/`` with ``run.json`` and parquet tables.

Every write is atomic (temp file in the same folder + ``os.replace``).  A run is ``done`` only after all
its tables are written; a crashed run stays ``failed`` or ``running`` and never feeds a plot.  Long jobs
write numbered chunk files (``<table>.parts/part-000012.parquet``) so ``--resume`` continues without
losing or duplicating rows.
"""

from __future__ import annotations

import json
import os
import platform
import secrets
import shutil
import time
from contextlib import contextmanager
from pathlib import Path

import pandas as pd

from . import __version__, runguard
from .atomic import warn, atomic_write_json, atomic_write_parquet, parquet_ok, read_or_quarantine
from .config import config_hash
from .errors import UserError

HASH_KEY = "cancel.config_hash"  # parquet schema key on every resumable part


def package_versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("torch", "transformers", "math-verify", "pandas", "verl", "vllm"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


class Run:
    def __init__(self, path: Path):
        self.path = Path(path)

    @property
    def id(self) -> str:
        return self.path.name

    @property
    def meta(self) -> dict:
        """run.json; an unreadable one is an error (never replaced: a later write would destroy the config)."""
        try:
            meta = json.loads((self.path / "run.json").read_text())
            if not isinstance(meta, dict):
                raise ValueError("not a JSON object")
            return meta
        except (OSError, ValueError) as e:
            raise UserError(f"run {self.id}: run.json is unreadable ({type(e).__name__}); the run cannot be used "
                            f"or resumed (remove it with `cancel results rm {self.id}`)") from None

    @property
    def listing(self) -> dict:
        """run.json for listings only (never written back): an unreadable one shows as ``damaged``."""
        try:
            return self.meta
        except UserError:
            return {"id": self.id, "command": self.path.parent.name, "status": "damaged"}

    @property
    def status(self) -> str:
        return self.listing.get("status", "failed")

    @property
    def config(self) -> dict:
        return self.meta.get("config", {})

    def update(self, **fields) -> None:
        self._check_exists()
        meta = self.meta
        meta.update(fields)
        atomic_write_json(self.path / "run.json", meta)

    def _check_exists(self) -> None:
        """A running process never recreates a run folder that was removed under it."""
        if not self.path.is_dir():
            raise UserError(f"run {self.id} was removed while it was running; stopped")

    @property
    def state(self) -> str:
        """The status for display: ``stale`` for a ``running`` run no live process holds, ``damaged`` for a
        ``done`` run with an unreadable table."""
        st = self.status
        if st == "running" and not runguard.is_locked(self.path):
            return "stale"
        if st == "done" and self.damaged():
            return "damaged"
        return st

    def damaged(self) -> list[str]:
        """Tables of this run whose parquet files cannot be read (footer check)."""
        bad = []
        for p in sorted(self.path.glob("*.parquet")):
            if not parquet_ok(p):
                bad.append(p.stem)
        for d in sorted(self.path.glob("*.parts")):
            if any(not parquet_ok(x) for x in d.glob("part-*.parquet")):
                bad.append(d.stem)
        return bad

    # -- tables ---------------------------------------------------------------------------------
    def write_table(self, name: str, df: pd.DataFrame) -> Path:
        self._check_exists()
        p = self.path / f"{name}.parquet"
        atomic_write_parquet(p, df)
        return p

    def has_table(self, name: str) -> bool:
        return (self.path / f"{name}.parquet").exists() or (self.path / f"{name}.parts").is_dir()

    def read_table(self, name: str) -> pd.DataFrame:
        p = self.path / f"{name}.parquet"
        try:
            if p.exists():
                return pd.read_parquet(p)
            parts = self.check_parts(name)
            if parts:
                return pd.concat([pd.read_parquet(x) for x in parts], ignore_index=True)
        except (OSError, ValueError) as e:  # pyarrow's ArrowInvalid is a ValueError
            raise UserError(f"run {self.id} is damaged: table {name!r} cannot be read ({str(e).splitlines()[0]})") from None
        raise UserError(f"run {self.id} has no table {name!r}")

    def write_part(self, name: str, index: int, df: pd.DataFrame) -> None:
        """One chunk of a resumable table; a chunk file exists only when fully written.  It carries the
        run's config hash, so a table can never mix rows of two configs."""
        self._check_exists()
        atomic_write_parquet(self.path / f"{name}.parts" / f"part-{index:06d}.parquet", df,
                             metadata={HASH_KEY: self.config_hash})

    @property
    def config_hash(self) -> str:
        meta = self.meta
        return meta.get("config_hash") or config_hash(meta.get("config") or {})

    def check_parts(self, name: str) -> list[Path]:
        """The parts of a table, each checked to carry this run's config hash."""
        import pyarrow.parquet as pq

        want, parts = self.config_hash, self.parts(name)
        for p in parts:
            got = (pq.read_schema(p).metadata or {}).get(HASH_KEY.encode(), b"").decode()
            if got and got != want:  # (parts written before hashes existed carry none)
                raise UserError(f"run {self.id}: {name}.parts/{p.name} was written under config {got}, the run's "
                                f"config is {want}; refusing to mix two configs in one table")
        return parts

    def parts(self, name: str) -> list[Path]:
        d = self.path / f"{name}.parts"
        return sorted(d.glob("part-*.parquet")) if d.is_dir() else []

    def read_table_part(self, name: str, index: int) -> pd.DataFrame:
        return pd.read_parquet(self.path / f"{name}.parts" / f"part-{index:06d}.parquet")

    def done_parts(self, name: str) -> set[int]:
        """Indices of the finished chunks; an unreadable chunk is quarantined (so it is recomputed)."""
        return {int(p.stem.split("-")[1]) for p in self.parts(name) if read_or_quarantine(p, footer_only=True) is not None}

    def finish(self, summary=None) -> None:
        """Mark done; ``summary`` is a ``summary.Summary`` dataclass (stored with its schema) or a plain dict."""
        if summary is not None and hasattr(summary, "to_json"):
            summary = summary.to_json()
        summary = {**(summary or {}), **self._reward_counts()}
        self.update(status="done", end=time.strftime("%Y-%m-%dT%H:%M:%S"), summary=summary, error=None)
        self.release()

    def release(self) -> None:
        """Drop this process's lock on the run (see ``runguard``)."""
        lock = getattr(self, "_lock", None)
        if lock is not None:
            lock.release()

    def _reward_counts(self) -> dict:
        """Reward checks of this process since the run started, and how many hit the time limit."""
        from .tasks import reward

        start = getattr(self, "_reward_start", None)
        return reward.STATS.since(start) if start is not None else {}

    def fail(self, error: str) -> None:
        self.update(status="failed", end=time.strftime("%Y-%m-%dT%H:%M:%S"), error=error)
        self.release()


class Store:
    def __init__(self, root: str | Path | None = None):
        self.root = Path(root or os.environ.get("CANCEL_RESULTS") or "results").expanduser()
        if self.root.exists() and not self.root.is_dir():
            raise UserError(f"results store {self.root} is not a directory")

    def check_writable(self, command: str | None = None) -> None:
        """The store (and the command's folder in it, if it exists) accepts new files."""
        for d in [self.root] + ([self.root / command] if command and (self.root / command).exists() else []):
            try:
                d.mkdir(parents=True, exist_ok=True)
                probe = d / f".write-probe-{os.getpid()}"
                probe.write_text("")
                probe.unlink()
            except OSError as e:
                raise UserError(f"results directory {d} is not writable ({e.strerror or e})") from None

    def new_run(self, command: str, config: dict, *, model: str = "", model_hash: str = "", seed: int | None = None,
                device: str = "cpu") -> Run:
        self.check_writable(command)
        run_id = f"{command}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"
        run = Run(self.root / command / run_id)
        run.path.mkdir(parents=True)
        run._lock = runguard.RunLock(run.path).acquire()  # held before run.json exists: never seen as stale
        atomic_write_json(run.path / "run.json", {
            "id": run_id, "command": command, "status": "running", "config": config,
            "config_hash": config_hash(config), "model": model,
            "model_hash": model_hash, "seed": seed, "version": __version__, "packages": package_versions(),
            "device": device, "host": platform.node(), "start": time.strftime("%Y-%m-%dT%H:%M:%S"), "end": None,
        })
        return run

    @contextmanager
    def running(self, command: str, config: dict, resume: str | None = None, **meta):
        """A run that is marked failed if the body raises; ``resume`` reopens an unfinished run."""
        if resume:
            run = self.get(resume)
            if run.meta.get("command") != command:
                raise UserError(f"run {resume} is a {run.meta.get('command')} run, not {command}")
            if run.status == "done":
                raise UserError(f"run {resume} is already done; nothing to resume")
            if config_hash(config) != run.config_hash:
                raise UserError(f"run {resume} was started with another config (hash {run.config_hash}, now "
                                f"{config_hash(config)}); resume it without changing its settings")
            run._lock = runguard.RunLock(run.path).acquire()  # refuses a run another process is running
            runguard.clean_tmp(run.path)
            run.update(status="running", resumed=time.strftime("%Y-%m-%dT%H:%M:%S"), config=config)
        else:
            run = self.new_run(command, config, **meta)
        with runguard.guarded(run, self.root, run._lock):
            yield run

    def runs(self, command: str | None = None) -> list[Run]:
        if not self.root.exists():
            return []
        dirs = [self.root / command] if command else [d for d in self.root.iterdir() if d.is_dir()]
        out = [Run(p) for d in dirs if d.is_dir() for p in d.iterdir() if (p / "run.json").exists()]
        return sorted(out, key=lambda r: (r.listing.get("start") or "", r.id))

    def get(self, run_id: str) -> Run:
        for r in self.runs():
            if r.id == run_id:
                return r
        raise UserError(f"no run {run_id!r} in {self.root} (see `cancel results ls`)")

    def get_done(self, run_id: str) -> Run:
        run = self.get(run_id)
        if run.status != "done":
            raise UserError(f"run {run_id} is {run.status}, not done; it cannot be used")
        bad = run.damaged()
        if bad:
            raise UserError(f"run {run_id} is damaged (unreadable table {', '.join(bad)}); it cannot be used")
        return run

    def latest(self, command: str, where=None, **config_match) -> Run | None:
        """The most recent done, undamaged run of ``command`` whose config matches the given items and, if
        given, for which ``where(run)`` is true."""
        for r in reversed(self.runs(command)):
            if (r.status == "done" and all(r.config.get(k) == v for k, v in config_match.items())
                    and (where is None or where(r))):
                bad = r.damaged()
                if bad:
                    warn(f"skipping damaged run {r.id} (unreadable table {', '.join(bad)})")
                    continue
                return r
        return None

    def rm(self, run_id: str) -> None:
        run = self.get(run_id)
        if runguard.is_locked(run.path):
            pid = runguard.owner_pid(run.path)
            raise UserError(f"run {run_id} is running (pid {pid}); stop it before removing it")
        shutil.rmtree(run.path)
