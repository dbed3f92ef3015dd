"""Shared plotting style and helpers."""

from __future__ import annotations

import math
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
    """Name runs a figure used (``render`` writes them, with every run whose tables the figure read, as a
    footnote)."""
    fig._cancel_runs = list(getattr(fig, "_cancel_runs", [])) + [r for r in runs if r is not None]


def runs_footnote(fig, runs) -> str:
    """The footnote naming every run a figure read (id, model, seed), flagged when they mix models or seeds."""
    from ..scope import describe, run_model, run_seed

    text = "runs read: " + (describe(runs) if runs else "none")
    models, seeds = {run_model(r) for r in runs}, {run_seed(r) for r in runs}
    if len(models) > 1 or len(seeds) > 1:
        text += f"  [mixes models {sorted(map(str, models))} / seeds {sorted(map(str, seeds))}]"
    import textwrap

    fig.text(0.01, -0.01, "\n".join(textwrap.wrap(text, 160)), ha="left", va="top", fontsize=6, color="gray")
    return text


def symlog_ticks(ax, linthresh: float, lim: float, per_side: int = 2) -> list[float]:
    """At most ``per_side`` labelled decades on each side of 0 on a symlog x axis (labels never overlap)."""
    from matplotlib.ticker import NullLocator

    lo_e, hi_e = math.ceil(math.log10(linthresh)), math.floor(math.log10(lim))
    if hi_e < lo_e:
        hi_e = lo_e
    exps = sorted({int(round(lo_e + (hi_e - lo_e) * i / max(per_side - 1, 1))) for i in range(per_side)})
    pos = [10.0**e for e in exps]
    ticks = [-x for x in reversed(pos)] + [0.0] + pos
    ax.set_xticks(ticks, [("0" if t == 0 else f"{t:.0e}".replace("e-0", "e-").replace("e+0", "e")) for t in ticks],
                  fontsize=7)
    ax.xaxis.set_minor_locator(NullLocator())
    return ticks


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
