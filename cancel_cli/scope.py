"""Views of the results store that never mix runs silently.

``ScopedStore`` shows only the runs of one model and a set of seeds (``cancel reproduce --seeds K`` runs
every stage of seed s against ``scoped(store, model, [s])``, so a stage that reads "the latest mc-value run"
reads its own seed's; REPORT reads ``scoped(store, model, seeds)`` and ``per_seed``).  ``RecordingStore``
records every run whose tables a figure read, so each figure can list them.
"""

from __future__ import annotations

from .store import Run, Store


def run_model(run: Run) -> str:
    meta = run.meta
    return meta.get("model") or meta.get("config", {}).get("model") or ""


def run_seed(run: Run):
    meta = run.meta
    s = meta.get("seed")
    return s if s is not None else meta.get("config", {}).get("seed")


class ScopedStore(Store):
    """The same store, with ``runs``/``latest`` restricted to ``model`` (None = any) and ``seeds`` (None = any).
    ``get``/``get_done`` are not restricted (a run named by id is always found)."""

    def __init__(self, base: Store, model: str | None = None, seeds=None):
        super().__init__(base.root)
        self.base, self.model = base, model
        self.seeds = None if seeds is None else [int(s) for s in seeds]

    def in_scope(self, run: Run) -> bool:
        if self.model is not None and run_model(run) != self.model and run.config.get("model") != self.model:
            return False
        return self.seeds is None or run_seed(run) in self.seeds

    def runs(self, command: str | None = None) -> list[Run]:
        return [r for r in self.base.runs(command) if self.in_scope(r)]

    def get(self, run_id: str) -> Run:
        return self.base.get(run_id)

    def per_seed(self, command: str, **match) -> dict[int, Run]:
        """seed -> the latest done run of ``command`` with that seed (and matching config items)."""
        out: dict[int, Run] = {}
        for r in reversed(self.runs(command)):
            s = run_seed(r)
            if s is None or s in out or r.status != "done":
                continue
            if all(r.config.get(k) == v for k, v in match.items()):
                out[int(s)] = r
        return dict(sorted(out.items()))


def scoped(store: Store, model: str | None = None, seeds=None) -> ScopedStore:
    base = store.base if isinstance(store, ScopedStore) else store
    return ScopedStore(base, model, seeds)


def per_seed(store: Store, command: str, **match) -> dict[int, Run]:
    """seed -> latest done run of ``command`` per seed, within ``store``'s scope if it has one."""
    view = store if isinstance(store, ScopedStore) else ScopedStore(store)
    return view.per_seed(command, **match)


class _RecordingRun(Run):
    def __init__(self, path, log: dict):
        super().__init__(path)
        self._log = log

    def read_table(self, name: str):
        self._log.setdefault(self.id, self)
        return super().read_table(name)

    def read_json(self, name: str):
        self._log.setdefault(self.id, self)
        return super().read_json(name)


class RecordingStore(ScopedStore):
    """A (possibly scoped) store that remembers which runs' tables were read, in order."""

    def __init__(self, base: Store):
        inner = base.base if isinstance(base, ScopedStore) else base
        super().__init__(inner, getattr(base, "model", None), getattr(base, "seeds", None))
        self.read: dict[str, Run] = {}

    def runs(self, command: str | None = None) -> list[Run]:
        return [_RecordingRun(r.path, self.read) for r in super().runs(command)]

    def get(self, run_id: str) -> Run:
        return _RecordingRun(self.base.get(run_id).path, self.read)

    def note(self, *runs: Run) -> None:
        for r in runs:
            self.read.setdefault(r.id, r)


def describe(runs) -> str:
    """``id (model, seed s)`` for each run, for figure footnotes and REPORT tables."""
    return ", ".join(f"{r.id} ({run_model(r)}, seed {run_seed(r)})" for r in runs)
