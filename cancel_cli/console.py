"""Shared console output: rich tables and progress bars that ``--quiet`` silences and ``--json`` moves
to stderr (stdout then carries exactly one JSON object)."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table


@dataclass
class Settings:
    quiet: bool = False
    json: bool = False


SETTINGS = Settings()


def console() -> Console:
    return Console(stderr=SETTINGS.json, quiet=SETTINGS.quiet)


def print_table(title: str, rows: list[dict], floatfmt: str = "{:.4f}") -> None:
    if not rows or SETTINGS.quiet:
        return
    t = Table(title=title)
    for k in rows[0]:
        t.add_column(str(k))
    for r in rows:
        t.add_row(*[floatfmt.format(v) if isinstance(v, float) else str(v) for v in r.values()])
    console().print(t)


def info(msg: str) -> None:
    console().print(msg)


@contextmanager
def progress(description: str, total: int | None):
    """A progress bar; yields ``advance(n=1)``."""
    p = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                 TimeRemainingColumn(), console=console(), disable=SETTINGS.quiet, transient=False)
    with p:
        task = p.add_task(description, total=total)
        yield lambda n=1: p.advance(task, n)
