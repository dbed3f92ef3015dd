"""REPORT.md frame and the training / evaluation claims: rules on synthetic per-seed estimates and on a
synthetic store of runs from several seeds; `cancel reproduce` bad input."""

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from cancel_cli import report_stats as rs
from cancel_cli import report_train as rt
from cancel_cli.analysis.evaluate import EvalSummary
from cancel_cli.cli import app
from cancel_cli.report import Section
from cancel_cli.scope import per_seed, scoped


def E(values, se=0.01):
    return [rs.Estimate(i, v, se, 400) for i, v in enumerate(values)]


# -- pure rules on synthetic per-seed estimates --------------------------------------------------------
@pytest.mark.parametrize("treated,expected", [
    ([0.60, 0.62, 0.61], "supported"), ([0.40, 0.41, 0.39], "not supported"), ([0.55, 0.45, 0.50], "inconclusive"),
    ([0.50, 0.50, 0.50], "inconclusive"),  # no difference at all
])
def test_rule_improves_and_hurts(treated, expected):
    base = E([0.50, 0.50, 0.50])
    assert rt.rule_improves(E(treated), base)[0] == expected
    mirrored = {"supported": "not supported", "not supported": "supported"}.get(expected, expected)
    assert rt.rule_hurts(E(treated), base)[0] == mirrored


def test_rule_improves_is_paired_by_seed():
    # the seeds differ a lot, the treatment adds +0.05 in every seed: paired -> supported
    base, treated = E([0.2, 0.5, 0.8], se=0.001), E([0.25, 0.55, 0.85], se=0.001)
    verdict, iv = rt.rule_improves(treated, base)
    assert verdict == "supported" and iv.mean == pytest.approx(0.05)
    # seeds missing on one side are not paired
    assert rt.rule_improves(treated[:1], base[1:])[1].k == 0


@pytest.mark.parametrize("values,expected", [([0.71, 0.70, 0.72], "supported"), ([0.30, 0.32, 0.31], "not supported"),
                                             ([0.45, 0.55, 0.50], "inconclusive")])
def test_rule_proxy(values, expected):
    assert rt.rule_proxy(E(values))[0] == expected


def test_rule_proxy_boundary_one_seed():
    # one seed: the within-seed CI decides; an interval reaching 0.5 is inconclusive
    h = rs.Z975 * 0.05
    assert rt.rule_proxy([rs.Estimate(0, 0.5 + h - 1e-9, 0.05)])[0] == "inconclusive"
    assert rt.rule_proxy([rs.Estimate(0, 0.5 + h + 1e-9, 0.05)])[0] == "supported"


@pytest.mark.parametrize("diffs,expected", [([0.0, 0.01, -0.01], "supported"), ([-0.2, -0.21, -0.19], "not supported"),
                                            ([-0.05, -0.06, -0.04], "inconclusive")])
def test_rule_sampling(diffs, expected):
    assert rt.rule_sampling(E(diffs, se=0.001))[0] == expected


def test_accuracy_estimate_is_the_mean_over_benchmarks_with_its_se():
    e = rt.accuracy_estimate(2, {"a": 0.5, "b": 0.9}, {"a": 100, "b": 400})
    assert (e.seed, e.value, e.n) == (2, pytest.approx(0.7), 500)
    assert e.se == pytest.approx(np.sqrt(0.25 / 100 + 0.09 / 400) / 2)
    assert np.isnan(rt.accuracy_estimate(0, {"a": 0.5}, {}).se)


# -- a synthetic store of train / eval runs over three seeds (and a second model that must not leak in) -----
VARIANTS = {"baseline": dict(plan="verl-default", rb=False), "QB+RB": dict(plan="query-preserved", rb=True),
            "sign-partitioned": dict(plan="sign-partitioned", rb=False)}


def fake_train(store, seed, label, final_acc, model="toy", proxy=None):
    r = store.new_run("train", {"model": model, "positive_only": False, **VARIANTS[label]}, model=model, seed=seed)
    r.write_table("validation", pd.DataFrame({"step": [0, 0, 10, 10], "benchmark": ["a", "b", "a", "b"], "k": 1,
                                              "accuracy": [0.3, 0.3, final_acc, final_acc], "problems": 256}))
    r.write_table("metrics", pd.DataFrame({"step": [1], "groups_split_frac": [0.0]}))
    if proxy is not None:
        r.write_table("proxy", pd.DataFrame({"step": [0, 5, 10], "sign_agreement": proxy}))
    r.finish()
    return r


def test_training_claims_on_a_synthetic_store(store):
    for seed, (b, q, sp) in enumerate([(0.40, 0.50, 0.20), (0.45, 0.52, 0.25), (0.42, 0.49, 0.22)]):
        fake_train(store, seed, "baseline", b, proxy=[0.68, 0.70, 0.72])
        fake_train(store, seed, "QB+RB", q)
        fake_train(store, seed, "sign-partitioned", sp)
        fake_train(store, seed, "QB+RB", 0.0, model="other")  # another model, newer: must not be read
    view = scoped(store, "toy", [0, 1, 2])
    sec = rt.claim_training(view)
    assert sec.verdict == "supported", sec.why
    row = next(r for r in sec.rows if r[0].startswith("QB+RB minus"))
    assert row[3] == "s0: 10.0; s1: 7.0; s2: 7.0"  # per-seed differences in points
    assert rt.claim_sign_partition(view).verdict == "supported"
    proxy = rt.claim_proxy(view)
    assert proxy.verdict == "supported" and proxy.rows[0][3].startswith("s0: 0.700±")
    # seed 0 only: a one-seed interval from the binomial SE of 512 samples per set
    one = rt.claim_training(scoped(store, "toy", [0]))
    assert one.verdict == "supported" and "1 seed" in one.why
    md = sec.md()
    assert md.index("*Rule") < md.index("**Verdict") < md.index("| quantity | ours | paper | per seed |")


def test_training_claim_without_runs_names_the_command(store):
    sec = rt.claim_training(scoped(store, "toy", [0]))
    assert sec.verdict == "inconclusive" and "cancel train" in sec.why


def test_table4_claim_reads_typed_eval_summaries(store):
    for seed, best_other in enumerate([0.52, 0.50, 0.51]):
        r = store.new_run("eval", {"sweep_sampling": True}, model="toy", seed=seed)
        scores = {"T0.6/p0.95": {"a": 0.5, "b": 0.5}, "T1/p0.7": {"a": best_other, "b": best_other},
                  "T1/p0.95": {"a": 0.3, "b": 0.3}}
        r.finish(EvalSummary(base_model="toy", run="", final_step=-1, setting="T0.6/p0.95", average=0.5, scores=scores,
                             samples={"a": 1024, "b": 1024}, metrics={"a": "avg@4", "b": "avg@4"}))
    sec = rt.claim_sampling(scoped(store, "toy", [0, 1, 2]))
    assert sec.verdict == "supported", sec.why
    assert any(r[0] == "mean accuracy at T1/p0.7" and r[3].startswith("s0: 0.520") for r in sec.rows)


def test_per_seed_picks_the_latest_done_run_of_each_seed(store):
    old = fake_train(store, 0, "baseline", 0.1)
    old.update(start="2000-01-01T00:00:00")  # the store orders runs by start time (1 s resolution)
    new = fake_train(store, 0, "baseline", 0.2)
    store.new_run("train", {"model": "toy"}, model="toy", seed=0)  # running: ignored
    fake_train(store, 3, "baseline", 0.2)
    got = per_seed(scoped(store, "toy", [0, 1, 2]), "train")
    assert list(got) == [0] and got[0].id == new.id != old.id


def test_section_without_per_seed_rows_keeps_three_columns():
    s = Section("t", None, "rule")
    s.rows = [("q", "1", "2")]
    assert "| q | 1 | 2 |" in s.md() and "per seed" not in s.md()


def test_entropy_profile_from_a_per_token_table():
    from cancel_cli.report_header import entropy_profile

    t = pd.DataFrame({"entropy": [0.1, 0.7, 1.0, 0.0], "old_logprob": np.log([0.995, 0.5, 0.2, 0.999])})
    p = entropy_profile(t)
    assert (p["high_entropy"], p["confident"], p["tokens"]) == (0.5, 0.5, 4)


# -- reproduce: bad input -------------------------------------------------------------------------------
@pytest.mark.parametrize("args,msg", [(["--seeds", "0"], "--seeds"), (["--seeds", "-1"], "--seeds"),
                                      (["--preset", "nope"], "unknown preset")])
def test_reproduce_bad_input_is_one_line_exit_2(tmp_path, args, msg):
    res = CliRunner().invoke(app, ["--results", str(tmp_path / "r"), "reproduce", "--out", str(tmp_path / "f"), *args])
    assert res.exit_code == 2 and res.output.startswith("error:") and msg in res.output, res.output
    assert len(res.output.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists() or not any((tmp_path / "r").rglob("run.json"))


def test_seed_list_defaults():
    from cancel_cli.reproduce import seed_list

    assert seed_list("toy", None, 5) == [5, 6, 7]
    assert seed_list("paper", None, 0) == [0]
    assert seed_list("toy", 2, 0) == [0, 1]


def test_cheapest_first_keeps_requirements():
    from cancel_cli.reproduce import cheapest_first

    names = ["flip", "positive-only", "coupling", "mask-effect", "mc-value", "entropy-gap", "budget-sweep batch-size",
             "train baseline", "train QB", "eval (Table 2)", "eval --sweep-sampling (Table 4)", "something new"]
    out = cheapest_first(names)
    assert sorted(out) == sorted(names) and out[0] == "coupling" and out[-1] == "something new"
    assert out.index("entropy-gap") == out.index("mc-value") + 1
    assert out.index("eval (Table 2)") > out.index("train QB") > out.index("train baseline")


def test_reproduce_runs_every_stage_per_seed_in_its_own_scope(tmp_path, monkeypatch):
    from cancel_cli import reproduce as R
    from cancel_cli.store import Store

    seen = []

    def stages(model, preset, seed, device):
        def train_stage(label):
            def fn(st):
                seen.append((label, seed, st.seeds, st.model))
                return (fake_train(st, seed, label, 0.4 + 0.1 * (label == "QB+RB") + 0.01 * seed),)
            return fn

        def eval_stage(st):  # reads "the latest train run": must be its own seed's
            seen.append(("eval", seed, sorted({r.meta["seed"] for r in st.runs("train")}), st.model))

        return [("eval (Table 2)", eval_stage), ("train baseline", train_stage("baseline")),
                ("train QB+RB", train_stage("QB+RB"))]

    monkeypatch.setattr(R, "stages", stages)
    out = R.reproduce("toy", "toy", Store(tmp_path / "r"), tmp_path / "f", seed=4, seeds=2, workers=1)
    assert out["seeds"] == [4, 5] and set(out["stage_seconds"]) == {"eval (Table 2)", "train baseline", "train QB+RB"}
    assert [s[:3] for s in seen] == [("baseline", 4, [4]), ("baseline", 5, [5]), ("QB+RB", 4, [4]), ("QB+RB", 5, [5]),
                                     ("eval", 4, [4]), ("eval", 5, [5])]
    text = (tmp_path / "f" / "REPORT.md").read_text()
    assert "seeds 4, 5" in text and "| QB+RB minus baseline (points) |" in text and "s4: 10.0; s5: 10.0" in text
    assert "| train baseline |" in text and "Packages: python" in text


def test_rb_interventions_are_counted_and_a_no_op_rb_is_named(store):
    """RB that never held back, dropped or waited trained on the baseline's batches: claim 8 says so."""
    for seed, buffered in ((0, [0, 0]), (1, [0, 64])):
        r = store.new_run("train", {"model": "toy", "rb": True, "plan": "verl-default"}, model="toy", seed=seed)
        r.write_table("metrics", pd.DataFrame({"step": [1, 2], "rollouts": 256, "rb_buffered": buffered,
                                               "rb_dropped": 0, "rb_rollouts_sampled_this_step": 256}))
        r.write_table("validation", pd.DataFrame({"step": [2], "benchmark": ["a"], "k": 1, "accuracy": [0.4],
                                                  "problems": 256}))
        r.finish()
    assert rt.rb_interventions(scoped(store, "toy", [0, 1])) == {0: (0, 2), 1: (1, 2)}
    for seed in (0, 1):
        fake_train(store, seed, "baseline", 0.4)
        fake_train(store, seed, "QB+RB", 0.45)
    sec = rt.claim_training(scoped(store, "toy", [0]))
    assert any("RB never acted" in n for n in sec.notes)
    assert not any("RB never acted" in n for n in rt.claim_training(scoped(store, "toy", [0, 1])).notes)
