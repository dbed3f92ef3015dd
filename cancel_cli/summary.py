"""Typed run summaries: one dataclass per experiment, stored in run.json with a schema version.

Every experiment module defines ``@dataclass class XSummary(Summary)`` with ``SCHEMA = N`` (bump N when a
field changes meaning) and finishes its run with ``run.finish(summary)``.  Readers (report, plots) call
``XSummary.of(run)`` and use attributes, never string keys: a renamed or missing field raises
``SummaryError`` at read time, and the verdict-rule tests construct summaries directly, so a rename fails
in tests, not in a user's REPORT.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, TypeVar

from .errors import UserError

T = TypeVar("T", bound="Summary")


class SummaryError(UserError):
    """A stored summary that does not match the reader's dataclass (older schema, other experiment)."""


@dataclasses.dataclass
class Summary:
    SCHEMA: ClassVar[int] = 1

    @classmethod
    def kind(cls) -> str:
        return f"{cls.__name__}/v{cls.SCHEMA}"

    def to_json(self) -> dict[str, Any]:
        return {"schema": self.kind(), **dataclasses.asdict(self)}

    @classmethod
    def from_json(cls: type[T], data: dict[str, Any] | None, where: str = "summary") -> T:
        if not isinstance(data, dict) or data.get("schema") != cls.kind():
            got = data.get("schema") if isinstance(data, dict) else type(data).__name__
            raise SummaryError(f"{where}: expected a {cls.kind()} summary, found {got!r} "
                               f"(rerun the experiment with this version of cancel)")
        names = [f.name for f in dataclasses.fields(cls)]
        missing = [n for n in names if n not in data]
        if missing:
            raise SummaryError(f"{where}: {cls.kind()} summary lacks {', '.join(missing)}")
        return cls(**{n: data[n] for n in names})

    @classmethod
    def of(cls: type[T], run) -> T:
        """The summary of a store Run (its run.json ``summary``)."""
        return cls.from_json(run.meta.get("summary"), where=f"run {run.id}")
