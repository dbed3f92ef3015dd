"""The wheel ships the presets (experiments/*.yaml), every module and both embedded toys; installed (not editable), `--preset`
and `reproduce` find them from any folder."""

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    res = subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation",
                          "--no-cache-dir", "-q", "-w", str(out)], capture_output=True, text=True)
    if res.returncode != 0 and "No module named pip" in res.stderr:
        pytest.skip("pip is not available in this environment")
    assert res.returncode == 0, res.stderr
    (whl,) = out.glob("cancel-*.whl")
    return whl


def test_wheel_holds_every_preset_and_module(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    presets = sorted((ROOT / "experiments").glob("*.yaml"))
    assert presets
    for p in presets:
        assert f"cancel_cli/experiments/{p.name}" in names, p.name
    for p in (ROOT / "cancel_cli").rglob("*.py"):
        assert p.relative_to(ROOT).as_posix() in names, p  # a subpackage missing from pyproject's list
    assets = [p for p in (ROOT / "cancel_cli" / "assets").rglob("*") if p.is_file()]
    assert {p.parent.name for p in assets} >= {"toy", "toy-plain"}
    for p in assets:  # both embedded toys: weights, tokenizer, card, build record
        assert p.relative_to(ROOT).as_posix() in names, p


def test_installed_wheel_finds_presets_from_another_folder(wheel, tmp_path):
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site), "CANCEL_RESULTS": str(tmp_path / "results")}
    run = lambda *a: subprocess.run([sys.executable, "-m", "cancel_cli", *a], cwd=elsewhere, env=env,  # noqa: E731
                                    capture_output=True, text=True)
    where = subprocess.run([sys.executable, "-c", "import cancel_cli.config as c; print(c.EXPERIMENTS)"], cwd=elsewhere,
                           env=env, capture_output=True, text=True).stdout.strip()
    assert where == str(site / "cancel_cli" / "experiments")  # the installed copy, not the checkout
    res = run("train", "--preset", "train_qwen3-4b", "--prompts", "32", "--engine", "verl", "--dry-run")
    assert res.returncode == 0, res.stderr
    assert "data.train_batch_size=32" in res.stdout and "actor_rollout_ref.actor.optim.lr=1e-06" in res.stdout
    res = run("reproduce", "--dry-run")
    assert res.returncode == 0, res.stderr
    assert len(res.stdout.strip().splitlines()) == 16 and '"stage": "mc-value"' in res.stdout
