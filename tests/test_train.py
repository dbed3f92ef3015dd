"""`cancel train --engine torch` on the toy preset."""

import json

import pytest
from typer.testing import CliRunner

from cancel_cli.cli import app
from cancel_cli.store import Store

runner = CliRunner()


def test_toy_preset_raises_held_out_accuracy_by_at_least_015(tmp_path):
    res = runner.invoke(app, ["--results", str(tmp_path), "--quiet", "--json", "train", "--preset", "train_toy"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["summary"]["val_accuracy_gain"] >= 0.15, out["summary"]
    run = Store(tmp_path).get(out["id"])
    met = run.read_table("metrics")
    assert met.groups_split_frac.mean() > 0.8  # verl-default scatters groups over mini-batches
    assert (run.path / "checkpoints" / "step-00020").is_dir()


@pytest.mark.parametrize("flags", [["--qb"], ["--rb", "--tau", "0.25"], ["--qb", "--rb"], ["--sign-partition"],
                                   ["--positive-only"]])
def test_variants_run(tmp_path, flags):
    res = runner.invoke(app, ["--results", str(tmp_path), "--quiet", "--json", "train", "--steps", "2", "--prompts", "8",
                              "--minibatch-prompts", "2", "--val-every", "2", *flags])
    assert res.exit_code == 0, res.output
    run = Store(tmp_path).get(json.loads(res.stdout.strip().splitlines()[-1])["id"])
    met = run.read_table("metrics")
    if "--qb" in flags:
        assert (met.groups_split_frac == 0).all()
    if "--rb" in flags:
        assert {"rb_utilization", "rb_total_waits"} <= set(met.columns)
        assert (met.rollouts == 64).all()
