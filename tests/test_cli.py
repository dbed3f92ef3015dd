import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from cancel_cli.cli import app

runner = CliRunner()
SUBCOMMANDS = ["flip", "positive-only", "coupling", "mask-effect", "mc-value", "entropy-gap", "budget-sweep", "train",
               "eval", "plot", "reproduce", "results", "data", "toy"]


def test_help_lists_every_subcommand():
    res = runner.invoke(app, ["--help"])
    assert res.exit_code == 0
    for c in SUBCOMMANDS:
        assert c in res.output


def test_help_imports_no_heavy_module():
    """`cancel --help` stays instant: no torch / transformers / pandas / verl import (checked, not timed)."""
    code = ("import sys; from typer.testing import CliRunner; from cancel_cli.cli import app; "
            "assert CliRunner().invoke(app, ['--help']).exit_code == 0; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'transformers', 'pandas', 'verl'}))")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert out.strip() == "[]"


def _one_line_error(res):
    assert res.exit_code == 2, res.output
    lines = [l for l in res.output.strip().splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), res.output
    assert "Traceback" not in res.output


@pytest.mark.parametrize("args", [
    ["flip", "--model", "nonexistent-model"],
    ["coupling", "--model", "./no/such/folder"],
    ["mask-effect", "--candidates", "-3"],
    ["mc-value", "--M", "0"],
    ["train", "--prompts", "-1"],
    ["train", "--rb", "--tau", "0.7"],
    ["train", "--n", "1"],
    ["train", "--minibatch-prompts", "64", "--prompts", "8"],
    ["plot", "fig99"],
    ["results", "show", "no-such-run"],
])
def test_bad_inputs_one_line_exit_2(args, tmp_path):
    _one_line_error(runner.invoke(app, ["--results", str(tmp_path), *args]))


def test_unwritable_results_dir_is_one_line(tmp_path):
    f = tmp_path / "file"
    f.write_text("")
    _one_line_error(runner.invoke(app, ["--results", str(f / "sub"), "train", "--steps", "1"]))


def test_results_ls_show_rm(tmp_path):
    from cancel_cli.store import Store

    run = Store(tmp_path).new_run("flip", {"x": 1})
    run.finish({"a": 1})
    res = runner.invoke(app, ["--results", str(tmp_path), "--json", "results", "ls"])
    assert json.loads(res.output)[0]["id"] == run.id
    res = runner.invoke(app, ["--results", str(tmp_path), "results", "show", run.id])
    assert res.exit_code == 0 and json.loads(res.output)["config"] == {"x": 1}
    assert runner.invoke(app, ["--results", str(tmp_path), "results", "rm", run.id]).exit_code == 0
    assert runner.invoke(app, ["--results", str(tmp_path), "results", "ls"]).output.strip() == "no runs"
