"""Figures and tables, one function per figure, reading only the results store.

``render(name, store, out, run_id)`` writes ``out/NAME.png`` and ``.pdf`` (tables also ``.md``).  Each
figure takes the latest done run of the command that produces it (or ``--run``); a missing run is a
clear error naming the command to run.  Every figure carries a footnote naming each run it read (id,
model, seed), flagged when they mix models or seeds; ``cancel reproduce`` renders from a store view
restricted to its model and seeds.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import UserError

FIGURES = ["fig1", "fig2", "fig3", "fig4", "fig5", "fig6", "fig7", "fig8", "fig9", "fig10", "fig11", "table1",
           "table2", "table4"]


def _registry():
    from . import coupling, flip, training, value

    return {"fig1": flip.fig1, "fig9": flip.fig9, "fig4": flip.fig4, "fig2": coupling.fig2, "fig3": coupling.fig3,
            "table1": coupling.table1, "fig5": value.fig5, "fig6": value.fig6, "fig11": value.fig11,
            "fig7": training.fig7, "fig8": training.fig8, "fig10": training.fig10, "table2": training.table2,
            "table4": training.table4}


def render(name: str, store, out: Path, run_id: str | None = None) -> list[Path]:
    if name == "all":
        paths, missing = [], []
        for n in FIGURES:
            try:
                paths += render(n, store, out, None)
            except UserError as e:
                missing.append(f"{n}: {e}")
        if missing and not paths:
            raise UserError("nothing to plot; " + "; ".join(missing))
        return paths
    if name not in FIGURES:
        raise UserError(f"unknown figure {name!r} ({', '.join(FIGURES)}, all)")
    import matplotlib

    matplotlib.use("Agg")
    from ..scope import RecordingStore
    from .style import runs_footnote, save

    rec = RecordingStore(store)
    fig, md = _registry()[name](rec, run_id)
    used = list(rec.read.values())
    ids = {r.id for r in used}
    used += [r for r in getattr(fig, "_cancel_runs", []) if r.id not in ids]
    note = runs_footnote(fig, used)
    return save(fig, md if md is None else f"{md}\n{note}\n", Path(out), name)
