"""Figures state the runs they read, flag mixed models/seeds, name the command for a missing run; Fig. 3a's
symlog tick labels do not overlap."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from cancel_cli.errors import UserError  # noqa: E402
from cancel_cli.plots import render, style  # noqa: E402
from cancel_cli.report_stats import ratio_text  # noqa: E402
from cancel_cli.scope import scoped  # noqa: E402


def fake_train(store, seed, model, plan="verl-default", rb=False):
    r = store.new_run("train", {"model": model, "plan": plan, "rb": rb, "positive_only": False}, model=model, seed=seed)
    r.write_table("validation", pd.DataFrame({"step": [0, 5], "benchmark": "toy-2digit", "k": 1, "accuracy": [0.3, 0.4],
                                              "problems": 64}))
    r.write_table("proxy", pd.DataFrame({"step": [0, 5], "sign_agreement": [0.7, 0.72]}))
    r.finish()
    return r


@pytest.fixture()
def captured(monkeypatch):
    figs = {}

    def save(fig, md, out, name):
        figs[name] = ([t.get_text() for t in fig.texts], md)
        plt.close(fig)
        return []

    monkeypatch.setattr(style, "save", save)
    return figs


def test_figure_footnote_lists_the_runs_read_and_flags_mixing(store, tmp_path, captured):
    a = fake_train(store, 0, "toy")
    b = fake_train(store, 1, "toy", plan="query-preserved")
    render("fig8", store, tmp_path)
    note = next(t for t in captured["fig8"][0] if t.startswith("runs read:"))
    assert a.id in note and b.id in note and "seed 0" in note and "seed 1" in note and "mixes" in note
    render("fig8", scoped(store, "toy", [1]), tmp_path)  # what reproduce does: one model, its seeds
    note = next(t for t in captured["fig8"][0] if t.startswith("runs read:"))
    assert b.id in note and a.id not in note and "mixes" not in note


def test_table_markdown_names_its_runs(store, tmp_path, captured):
    tr = fake_train(store, 0, "toy")
    render("table2", store, tmp_path)
    assert f"runs read: {tr.id} (toy, seed 0)" in captured["table2"][1]


def test_missing_run_names_the_command(store, tmp_path):
    with pytest.raises(UserError, match="cancel train"):
        render("fig8", store, tmp_path)
    with pytest.raises(UserError, match="cancel mask-effect"):
        render("fig3", store, tmp_path)


@pytest.mark.parametrize("thr,lim", [(1e-12, 1e-8), (1e-9, 1e-2), (3e-7, 3e-3), (1e-5, 2e-5)])
def test_symlog_tick_labels_do_not_overlap(thr, lim):
    fig, ax = plt.subplots(figsize=(17 / 3, 4.4))
    ax.set_xscale("symlog", linthresh=thr)
    ax.set_xlim(-lim, lim)
    ticks = style.symlog_ticks(ax, thr, lim)
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    boxes = sorted((lab.get_window_extent(r) for lab in ax.get_xticklabels() if lab.get_text()), key=lambda b: b.x0)
    assert len(boxes) == len(ticks) <= 5 and 0.0 in ticks
    assert all(b1.x0 > b0.x1 for b0, b1 in zip(boxes, boxes[1:])), [(b.x0, b.x1) for b in boxes]
    plt.close(fig)


def test_ratio_shown_with_its_means():
    assert ratio_text(3.2e-3, 3.0e-12) == "1.07e+09 (0.0032 / 3e-12)"
