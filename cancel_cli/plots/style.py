"""Shared plotting style and helpers."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import seaborn as sns

from ..errors import UserError
from ..atomic import atomic_write_bytes

PALETTE = {"boosted": "#2a9d8f", "suppressed": "#e76f51", "stable": "#adb5bd", "pos": "#2a9d8f", "neg": "#e76f51",
           "positive_only": "#f4a261", "grpo": "#264653", "head": "#e9c46a", "full": "#264653"}
sns.set_theme(style="whitegrid", context="paper", font_scale=1.1)


def need(store, command: str, run_id: str | None, **match):
    """The run to plot: ``run_id`` if given (must be done), else the latest done run of ``command``."""
    if run_id:
        run = store.get_done(run_id)
        if run.meta.get("command") != command:
            raise UserError(f"run {run_id} is a {run.meta.get('command')} run; this figure needs a {command} run")
        return run
    run = store.latest(command, **match)
    if run is None:
        hint = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in match.items())
        raise UserError(f"needs a done `{command}` run; make one with `cancel {command}{(' ' + hint) if hint else ''}`")
    return run


def save(fig, md: str | None, out: Path, name: str) -> list[Path]:
    import io

    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for ext in ("png", "pdf"):
        buf = io.BytesIO()
        fig.savefig(buf, format=ext, dpi=150, bbox_inches="tight")
        atomic_write_bytes(out / f"{name}.{ext}", buf.getvalue())
        paths.append(out / f"{name}.{ext}")
    plt.close(fig)
    if md is not None:
        atomic_write_bytes(out / f"{name}.md", md.encode())
        paths.append(out / f"{name}.md")
    return paths


def source_note(fig, *runs) -> None:
    fig.text(0.99, 0.005, "runs: " + ", ".join(r.id for r in runs), ha="right", va="bottom", fontsize=6, color="gray")


def markdown_table(df) -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(map(str, cols)) + " |", "|" + "---|" * len(cols)]
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join(_fmt(v) for v in row) + " |")
    return "\n".join(lines) + "\n"


def _fmt(v) -> str:
    if isinstance(v, float):
        return "" if v != v else f"{v:.4g}"
    if isinstance(v, bool):
        return "✓" if v else ""
    return str(v)


def table_figure(df, title: str):
    fig, ax = plt.subplots(figsize=(min(2 + 1.3 * len(df.columns), 16), 0.6 + 0.4 * (len(df) + 1)))
    ax.axis("off")
    cells = [[_fmt(v) for v in row] for row in df.itertuples(index=False)]
    t = ax.table(cellText=cells, colLabels=list(df.columns), loc="center", cellLoc="center")
    t.auto_set_font_size(False)
    t.set_fontsize(8)
    t.scale(1, 1.3)
    ax.set_title(title, fontsize=10)
    return fig
