"""Issue 17, store poisoning: an unreadable value-cache entry or run part is reported in one line,
quarantined and recomputed (final table identical to a clean run); a done run with an unreadable table is
shown as damaged and skipped by plots with a message naming it."""

import json
import shutil

import pandas as pd
import pytest
from typer.testing import CliRunner

from cancel_cli.analysis import value, value_estimate
from cancel_cli.cli import app
from cancel_cli.store import Store

runner = CliRunner()
COLS = ["rollout", "position", "p", "q_a", "q_b", "value", "se"]
CFG = value.ValueConfig(M=4, chunk=4, seed=3)  # the toy_batch's sampling settings (T 1, top-p 1, 96 tokens)


def _tokens(batch) -> pd.DataFrame:
    """8 tokens near the ends of 8 rollouts (short continuations keep the test cheap): two chunks of 4."""
    lengths = batch.response_mask.sum(1).tolist()
    rows = [r for r in range(len(batch)) if lengths[r] >= 4][:8]
    return pd.DataFrame({"rollout": rows, "position": [int(lengths[r]) - 3 for r in rows], "p": 0.5})


@pytest.fixture(scope="module")
def clean(toy, toy_batch, tmp_path_factory):
    """Values of the 8 tokens in a clean store: the store and the table."""
    store = Store(tmp_path_factory.mktemp("clean") / "results")
    return store, value_estimate.token_values(toy, toy_batch, _tokens(toy_batch), CFG, store)


def _same(a: pd.DataFrame, b: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(a[COLS].reset_index(drop=True), b[COLS].reset_index(drop=True))


def test_garbage_value_cache_entry_is_quarantined_and_recomputed(clean, toy, toy_batch, tmp_path, capsys):
    src, table = clean
    store = Store(tmp_path / "results")
    shutil.copytree(src.root / "_cache", store.root / "_cache")
    parts = sorted((store.root / "_cache" / "mc_value").glob("part-*.parquet"))
    assert len(parts) == 2  # one per chunk of 4 tokens
    parts[0].write_bytes(b"garbage, not parquet")
    capsys.readouterr()
    vals = value_estimate.token_values(toy, toy_batch, _tokens(toy_batch), CFG, store)
    err = capsys.readouterr().err
    assert parts[0].name in err and "unreadable" in err and len(err.strip().splitlines()) == 1
    assert not parts[0].exists() and list(parts[0].parent.glob(parts[0].name + ".corrupt-*"))
    _same(vals, table)
    assert vals.cached.sum() == 4  # the quarantined chunk was recomputed, the other one came from the cache


def test_truncated_part_is_quarantined_and_recomputed_on_resume(clean, toy, toy_batch, tmp_path, monkeypatch, capsys):
    _, table = clean
    store = Store(tmp_path / "results")
    real, calls = value_estimate._value_chunk, []

    def dies_on_second_chunk(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(value_estimate, "_value_chunk", dies_on_second_chunk)
    with pytest.raises(KeyboardInterrupt):
        with store.running("mc-value", {}) as run:
            value_estimate.token_values(toy, toy_batch, _tokens(toy_batch), CFG, store, run)
    monkeypatch.undo()
    part = run.parts("values")[0]
    part.write_bytes(part.read_bytes()[: part.stat().st_size // 2])  # truncated
    shutil.rmtree(store.root / "_cache")  # the chunk must really be recomputed
    capsys.readouterr()
    with store.running("mc-value", {}, resume=run.id) as run:
        vals = value_estimate.token_values(toy, toy_batch, _tokens(toy_batch), CFG, store, run)
        run.finish({})
    assert part.name in capsys.readouterr().err
    assert len(run.parts("values")) == 2 and not vals.cached.any()
    _same(vals, table)


def test_done_run_with_unreadable_table_is_damaged_and_skipped_by_plots(tmp_path):
    store = Store(tmp_path / "results")
    good = store.new_run("budget-sweep", {"axis": "batch-size"})
    good.write_table("sweep", pd.DataFrame({"value": [16], "subset": [25], "gap": [0.1]}))
    good.finish({})
    bad = store.new_run("budget-sweep", {"axis": "batch-size"})
    bad.write_table("sweep", pd.DataFrame({"value": [16], "subset": [25], "gap": [0.2]}))
    bad.finish({})
    (bad.path / "sweep.parquet").write_bytes(b"PAR1")  # emptied by a full disk
    res = runner.invoke(app, ["--results", str(store.root), "--json", "results", "ls"])
    states = {r["id"]: r["status"] for r in json.loads(res.output)}
    assert states == {good.id: "done", bad.id: "damaged"}
    res = runner.invoke(app, ["--results", str(store.root), "results", "show", bad.id])
    shown = json.loads(res.output)
    assert shown["state"] == "damaged" and shown["damaged_tables"] == ["sweep"]
    assert store.latest("budget-sweep", axis="batch-size").id == good.id  # the damaged newer one is skipped
    res = runner.invoke(app, ["--results", str(store.root), "plot", "fig6", "--run", bad.id, "--out", str(tmp_path)])
    assert res.exit_code == 2 and bad.id in res.output and "damaged" in res.output
