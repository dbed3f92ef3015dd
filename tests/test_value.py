"""mc-value, entropy-gap and budget-sweep end to end on the toy: resume, the estimator-keyed cache, the
entropy ranking over all tokens, budget-sweep's pool sizes and cache determinism, bad input."""

import json

import numpy as np
import pandas as pd
import pytest

SMALL = dict(prompts=4, n=4, M=4, per_cell=2, chunk=2, seed=11, max_new_tokens=64)


@pytest.mark.parametrize("estimator", ["direct", "eq20"])
def test_killed_and_resumed_equals_uninterrupted(tmp_path, monkeypatch, estimator):
    from cancel_cli.analysis import value, value_estimate
    from cancel_cli.store import Store

    cfg = dict(SMALL, estimator=estimator)
    run_a, _ = value.run(value.ValueConfig(**cfg), Store(tmp_path / "a"))
    full = run_a.read_table("values_final")

    store_b = Store(tmp_path / "b")
    real = value_estimate._value_chunk
    calls = {"n": 0}

    def dying(*a, **kw):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("killed")
        return real(*a, **kw)

    monkeypatch.setattr(value_estimate, "_value_chunk", dying)
    with pytest.raises(KeyboardInterrupt):
        value.run(value.ValueConfig(**cfg), store_b)
    monkeypatch.setattr(value_estimate, "_value_chunk", real)
    (crashed,) = store_b.runs("mc-value")
    assert crashed.status == "failed" and len(crashed.parts("values")) == 2
    run_b, _ = value.run(value.ValueConfig(**cfg), store_b, resume=crashed.id)
    resumed = run_b.read_table("values_final")
    cols = ["rollout", "position", "q_a", "q_b", "value", "se"]
    pd.testing.assert_frame_equal(full[cols].reset_index(drop=True), resumed[cols].reset_index(drop=True))
    assert (resumed.estimator == estimator).all()


def test_cache_never_serves_eq20_to_direct(toy, toy_batch, tmp_path):
    from cancel_cli.analysis.value import ValueConfig
    from cancel_cli.analysis.value_estimate import token_values
    from cancel_cli.store import Store

    toks = pd.DataFrame({"rollout": [0, 1], "position": [2, 3]})
    shared = Store(tmp_path / "shared")
    token_values(toy, toy_batch, toks, ValueConfig(M=6, estimator="eq20"), shared)
    direct = token_values(toy, toy_batch, toks, ValueConfig(M=6, estimator="direct"), shared)
    assert direct.attrs["cache_hit_rate"] == 0 and not direct.cached.any()
    fresh = token_values(toy, toy_batch, toks, ValueConfig(M=6, estimator="direct"), Store(tmp_path / "fresh"))
    pd.testing.assert_frame_equal(direct[["value", "se"]], fresh[["value", "se"]])
    again = token_values(toy, toy_batch, toks, ValueConfig(M=6, estimator="direct"), shared)
    assert again.cached.all()  # and the same estimator is served from the cache


def test_entropy_gap_ranks_all_tokens(tmp_path):
    """Candidates are stratified over the entropy deciles of every response token: confident tokens
    (p > 0.999, the toy's low-entropy majority) are in the top-100% set and not in the top-10% set."""
    from cancel_cli.analysis import entropy_gap, value
    from cancel_cli.store import Store

    store = Store(tmp_path)
    run, _ = value.run(value.ValueConfig(**dict(SMALL, per_cell=10, M=2)), store)
    tokens, vals = run.read_table("tokens"), run.read_table("values_final")
    assert (vals.p > 0.999).any()
    top10 = tokens.entropy.quantile(0.9)
    assert (vals[vals.decile == 9].entropy >= top10 - 1e-9).all()
    _, summary = entropy_gap.run(entropy_gap.EntropyGapConfig(bootstrap=20), store)
    curve = pd.DataFrame(summary.curve).set_index("k")
    assert curve.loc[100, "confident"] > 0 and curve.loc[10, "confident"] == 0
    assert curve.loc[100, "tokens"] == len(vals.dropna(subset=["value"]))


def test_budget_sweep_pool_follows_prompts_and_n_and_is_cache_independent(tmp_path):
    """--prompts/--n set the pool (run.json, table sizes); values do not depend on what the store held."""
    from cancel_cli.analysis import budget
    from cancel_cli.store import Store

    base = dict(prompts=16, n=4, M=2, cand_prompts=4, axis="rollout-n", values="2,4", seed=3, max_new_tokens=64)
    shared = Store(tmp_path / "shared")
    budget.run(budget.BudgetConfig(**base, candidates=8), shared)
    run16, s16 = budget.run(budget.BudgetConfig(**base, candidates=16), shared)
    fresh16, f16 = budget.run(budget.BudgetConfig(**base, candidates=16), Store(tmp_path / "fresh"))
    meta = json.loads((run16.path / "run.json").read_text())
    assert meta["config"]["prompts"] == 16 and meta["config"]["n"] == 4
    assert len(run16.read_table("pool")) == 16 * 2 * 4
    sw = run16.read_table("sweep")
    assert sorted(sw.rollouts.unique()) == [16 * 2, 16 * 4]  # base_prompts = --prompts, k = 2 and 4 rollouts
    assert s16.cache_hit_rate == 0.5 and f16.cache_hit_rate == 0  # 8 of the 16 were cached
    cols = ["value", "subset", "gap", "se", "n_boosted", "n_suppressed"]
    pd.testing.assert_frame_equal(sw[cols], fresh16.read_table("sweep")[cols])
    assert np.isfinite(sw.se).any()


@pytest.mark.parametrize("args", [["--estimator", "foo"], ["--M", "0"], ["--M", "1"]])
def test_bad_estimator_input_is_one_line(tmp_path, args):
    from typer.testing import CliRunner

    from cancel_cli.cli import app

    res = CliRunner().invoke(app, ["--results", str(tmp_path / "r"), "mc-value", *args])
    assert res.exit_code == 2, res.output
    assert len(res.output.strip().splitlines()) == 1 and "Traceback" not in res.output
    assert not (tmp_path / "r" / "mc-value").exists() or not any((tmp_path / "r" / "mc-value").iterdir())
