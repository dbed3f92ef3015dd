"""Every experiment end to end through the CLI (Typer's runner), on small toy configurations."""

import json

import pytest
from typer.testing import CliRunner

from cancel_cli.cli import app
from cancel_cli.store import Store

runner = CliRunner()


def cli(tmp, *args):
    res = runner.invoke(app, ["--results", str(tmp), "--quiet", "--json", *args])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("results")


def test_flip_two_models_and_plot(store_dir, tmp_path):
    from cancel_cli.config import TOY_DIR

    out = cli(store_dir, "flip", "--model", "toy", "--model", str(TOY_DIR), "--steps", "2", "--prompts", "8")
    assert out["status"] == "done"
    s = out["summary"]
    assert 0 <= s["shares"]["toy"]["pos_boosted"] <= 1 and "neg_boosted" in s["shares"][str(TOY_DIR)]
    run = Store(store_dir).get(out["id"])
    tokens = run.read_table("tokens")
    assert {"token_text", "delta", "class", "entropy", "advantage"} <= set(tokens.columns)
    assert set(tokens["class"]) <= {"boosted", "suppressed", "stable"}
    res = runner.invoke(app, ["--results", str(store_dir), "plot", "fig9", "--out", str(tmp_path)])
    assert res.exit_code == 0 and (tmp_path / "fig9.png").exists()


def test_positive_only_with_all_rewards_zero_leaves_the_model_unchanged(toy, toy_batch):
    from cancel_cli.grpo.update import OptimConfig, grpo_update

    b = toy_batch
    b0 = b.with_advantage(b.advantage)
    zero = b.reward * 0
    a_plus = b.advantage * (zero == 1).float()  # A+ with every reward 0
    new = grpo_update(toy, b0, None, OptimConfig("sgd", 0.1), advantage=a_plus)
    for p0, p1 in zip(toy.model.parameters(), new.model.parameters()):
        assert p0.equal(p1)


def test_flip_classes_on_a_hand_built_two_rollout_case():
    from cancel_cli.grpo.probe import classify, flip_rate, flip_summary

    delta = [2e-6, -3e-6, 5e-7, 0.1, -0.2, 1e-6]  # rollout A (A>0): 3 tokens; rollout B (A<0): 3 tokens
    adv = [1.0, 1.0, 1.0, -1.0, -1.0, -1.0]
    assert list(classify(delta)) == ["boosted", "suppressed", "stable", "boosted", "suppressed", "stable"]
    s = flip_summary(delta, adv)
    assert s["pos_boosted"] == pytest.approx(1 / 3) and s["pos_suppressed"] == pytest.approx(1 / 3)
    assert s["neg_boosted"] == pytest.approx(1 / 3) and s["neg_stable"] == pytest.approx(1 / 3)
    assert s["all_stable"] == pytest.approx(2 / 6)
    assert s["neg_mean_abs_delta"] == pytest.approx((0.1 + 0.2 + 1e-6) / 3)
    assert flip_rate(delta, adv) == pytest.approx(2 / 4)  # moved tokens: -3e-6 (A>0) and 0.1 (A<0) flip


def test_positive_only_command_and_fig4(tmp_path):
    store_dir = tmp_path / "results"  # its own store: fig1 needs a flip run, made here (no other test's run)
    cli(store_dir, "flip", "--steps", "1", "--prompts", "4", "--minibatch-prompts", "2")
    out = cli(store_dir, "positive-only", "--prompts", "8", "--steps", "2")
    s = out["summary"]
    assert 0 <= s["update"]["grpo"]["pos_suppressed"] <= 1 and 0 <= s["format_mass"]["grpo"] <= 1
    run = Store(store_dir).get(out["id"])
    var = run.read_table("variants")
    mass = var[[c for c in var.columns if c.startswith("mass_")]].sum(1)
    assert mass.round(6).tolist() == [1.0, 1.0]
    assert len(run.read_table("top_boosted")) == 40
    for fig in ("fig4", "fig1"):
        assert runner.invoke(app, ["--results", str(store_dir), "plot", fig, "--out", str(tmp_path)]).exit_code == 0


def test_coupling_and_mask_effect_commands(store_dir, tmp_path):
    out = cli(store_dir, "coupling", "--prompts", "4", "--pairs", "5000", "--exact-tokens", "16")
    s = out["summary"]
    assert s["max_abs_head_minus_proxy"] < 1e-3
    assert s["same_mean_hh"] > s["diff_mean_hh"]
    out = cli(store_dir, "mask-effect", "--prompts", "8", "--candidates", "32", "--full-candidates", "4", "--mask-size", "4",
              "--mask-sign", "negative", "--low-conf", "q0.3")
    run = Store(store_dir).get(out["id"])
    t1 = run.read_table("table1")
    assert list(t1.condition) == ["random", "same", "lowconf", "same_lowconf"]
    assert (t1.head_n == 32).all() and (t1.full_n == 4).all()
    # --mask-sign reaches the masks of the run (a run that ignored it would mask tokens of both signs)
    cand = run.read_table("candidates")
    assert (cand.n_positive == 0).all() and (cand.sum_A < 0).all()
    assert (t1.head_p_sum_pos == 0).all() and (t1.full_p_sum_pos == 0).all()
    assert out["summary"]["low_conf"] == "q0.3" and out["summary"]["low_conf_threshold_p"] < 1
    for fig in ("fig2", "fig3", "table1"):
        assert runner.invoke(app, ["--results", str(store_dir), "plot", fig, "--out", str(tmp_path)]).exit_code == 0
    assert "paper" in (tmp_path / "table1.md").read_text()


def test_mc_value_entropy_gap_budget_and_plots(store_dir, tmp_path):
    out = cli(store_dir, "mc-value", "--prompts", "6", "--n", "4", "--M", "8", "--per-cell", "3", "--repeat", "2")
    s = out["summary"]
    assert s["per_cell"] == 3 and s["estimator"] == "direct" and {"pos", "neg", "all"} <= set(s["gap"])
    out2 = cli(store_dir, "entropy-gap", "--bootstrap", "50")
    assert out2["summary"]["from_run"] == out["id"]
    for axis, values in (("batch-size", "16,24"), ("rollout-n", "1,2"), ("reward-mix", "0,4")):
        o = cli(store_dir, "budget-sweep", "--axis", axis, "--M", "4", "--candidates", "8", "--values", values)
        sw = Store(store_dir).get(o["id"]).read_table("sweep")
        assert sorted(sw.value.unique().tolist()) == sorted(int(v) for v in values.split(","))
    sw = Store(store_dir).latest("budget-sweep", axis="rollout-n").read_table("sweep")
    assert sw[sw.value == 1].gap.isna().all()  # n = 1: no advantage, no gap
    assert o["summary"]["cache_hit_rate"] == 1.0  # the shared pool's candidate values come from the cache
    for fig in ("fig5", "fig6", "fig11"):
        assert runner.invoke(app, ["--results", str(store_dir), "plot", fig, "--out", str(tmp_path)]).exit_code == 0


def test_plot_missing_run_names_the_command(tmp_path):
    res = runner.invoke(app, ["--results", str(tmp_path), "plot", "fig2"])
    assert res.exit_code == 2 and "cancel coupling" in res.output


def test_train_resume_continues_without_duplicates(tmp_path, monkeypatch):
    from cancel_cli.grpo import trainer

    args = ["train", "--steps", "4", "--prompts", "4", "--minibatch-prompts", "2", "--val-every", "2"]
    real = trainer.Trainer.train_step

    def dying(self):
        if self.step == 3:
            raise KeyboardInterrupt("killed")
        return real(self)

    monkeypatch.setattr(trainer.Trainer, "train_step", dying)
    monkeypatch.setattr(trainer.TrainConfig, "checkpoint_every", 2)
    res = runner.invoke(app, ["--results", str(tmp_path), "--quiet", *args])
    assert res.exit_code != 0
    (run,) = Store(tmp_path).runs("train")
    assert run.status == "failed"
    monkeypatch.setattr(trainer.Trainer, "train_step", real)
    out = cli(tmp_path, *args, "--resume", run.id)
    assert out["id"] == run.id and out["status"] == "done"
    met = Store(tmp_path).get(run.id).read_table("metrics")
    assert met.step.tolist() == [1, 2, 3, 4]
    val = Store(tmp_path).get(run.id).read_table("validation")
    assert sorted(val.step.unique().tolist()) == [0, 2, 4]


def test_rb_with_no_mixed_groups_stops_with_a_clear_message(tmp_path, monkeypatch):
    import torch

    from cancel_cli import rollout

    real = rollout.sample_batch

    def always_right(*a, **kw):
        b = real(*a, **kw)
        b.reward = torch.ones_like(b.reward)
        b.advantage = torch.zeros_like(b.reward)
        return b

    monkeypatch.setattr("cancel_cli.grpo.trainer.sample_batch", always_right)
    res = runner.invoke(app, ["--results", str(tmp_path), "--quiet", "train", "--rb", "--tau", "0.25", "--steps", "1",
                              "--prompts", "2", "--n", "2", "--minibatch-prompts", "1", "--val-every", "5"])
    assert res.exit_code == 2 and "reward-balanced batching found no batch" in res.output, res.output


def test_flip_from_a_train_run(tmp_path):
    tr = cli(tmp_path, "train", "--steps", "2", "--prompts", "4", "--minibatch-prompts", "2", "--val-every", "5")
    out = cli(tmp_path, "flip", "--from-run", tr["id"])
    assert out["summary"]["steps"] == 2 and 0 <= out["summary"]["shares"]["toy"]["pos_boosted"] <= 1
    res = runner.invoke(app, ["--results", str(tmp_path), "flip", "--from-run", out["id"]])
    assert res.exit_code == 2 and "needs a train run" in res.output
