"""Issue 17, bad input: one line on stderr naming the bad value, exit 2, no traceback, before any work and
before a run folder exists."""

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cancel_cli.cli import app

runner = CliRunner()


def _files(tmp: Path) -> dict:
    """Broken inputs: data files, a model folder, benchmark folders, a DAPO folder."""
    d = {}
    (tmp / "bad.jsonl").write_text('{"problem": "1+1", "answer": "2"}\n{"problem": "2+2", "ans\n')
    (tmp / "data.csv").write_text("problem,answer\n1+1,2\n")
    (tmp / "adir").mkdir()
    (tmp / "garbage.parquet").write_bytes(b"PAR1 this is not parquet")
    (tmp / "schema.jsonl").write_text('{"question": "1+1", "solution": "2"}\n')
    model = tmp / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    for name, content in (("malformed", '{"problem": "x", "answer": '), ("empty", ""), ("garbage", None)):
        b = tmp / f"bench-{name}"
        b.mkdir()
        if content is None:
            (b / "math500.parquet").write_bytes(os.urandom(64))
        else:
            (b / "math500.jsonl").write_text(content)
    dapo = tmp / "dapo-bad"
    dapo.mkdir()
    (dapo / "dapo17k.jsonl").write_text('{"problem": "1+1", "answer": "2"}\nnot json\n')
    (tmp / "afile").write_text("")
    return d


CASES = [  # (args, text the one-line message must contain)
    (["mc-value", "--top-p", "0"], "--top-p"),
    (["mc-value", "--top-p", "2"], "--top-p"),
    (["mc-value", "--temperature", "-1"], "--temperature"),
    (["eval", "--top-p", "0"], "--top-p"),
    (["eval", "--top-p", "2"], "--top-p"),
    (["eval", "--temperature", "-1"], "--temperature"),
    (["eval", "--engine", "foo"], "foo"),
    (["eval", "--engine", "vllm"], "vllm"),
    (["--device", "foo", "mc-value"], "foo"),
    (["--device", "cuda:1", "eval"], "cuda:1"),
    (["train", "--val-every", "0"], "--val-every"),
    (["train", "--lr", "-1"], "--lr"),
    (["train", "--optimizer", "foo"], "foo"),
    (["train", "--engine", "foo"], "foo"),
    (["mc-value", "--optimizer", "foo"], "foo"),
    (["--seed", "-1", "train"], "--seed"),
    (["--seed", "99999999999999999999", "train"], "--seed"),
    (["train", "--probe-proxy", "-1"], "--probe-proxy"),
    (["positive-only", "--steps", "0"], "--steps"),
    (["mc-value", "--model", "{tmp}/model"], "model_type"),
    (["train", "--data", "{tmp}/bad.jsonl"], "bad.jsonl"),
    (["train", "--data", "{tmp}/data.csv"], "data.csv"),
    (["train", "--data", "{tmp}/adir"], "adir"),
    (["train", "--data", "{tmp}/garbage.parquet"], "garbage.parquet"),
    (["mc-value", "--data", "{tmp}/schema.jsonl"], "schema.jsonl"),
    (["eval", "--data-dir", "{tmp}/bench-malformed", "--benchmarks", "math500"], "math500.jsonl"),
    (["eval", "--data-dir", "{tmp}/bench-empty", "--benchmarks", "math500"], "math500.jsonl"),
    (["eval", "--data-dir", "{tmp}/bench-garbage", "--benchmarks", "math500"], "math500.parquet"),
    (["data", "prepare", "--data-dir", "{tmp}/dapo-bad", "--out", "{tmp}/verl-out"], "dapo17k.jsonl"),
    (["--results", "{tmp}/afile", "train"], "afile"),
    (["--results", "/dev/null", "mc-value"], "/dev/null"),
    (["--results", "/dev/null", "results", "ls"], "/dev/null"),
    (["--results", "{results}", "results", "rm", "no-such-run"], "no-such-run"),
]


def _assert_one_line(res, needle):
    err = res.stderr if hasattr(res, "stderr") else res.output
    assert res.exit_code == 2, (res.exit_code, res.output, res.exception)
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    assert needle in lines[0], lines[0]
    assert "Traceback" not in res.output


def _no_runs(root: Path) -> None:
    assert not list(root.rglob("run.json")) if root.is_dir() else True


@pytest.mark.parametrize("args,needle", CASES, ids=[" ".join(a) for a, _ in CASES])
def test_bad_input_one_line_exit_2_no_run(args, needle, tmp_path):
    _files(tmp_path)
    results = tmp_path / "results"
    args = [a.format(tmp=tmp_path, results=results) for a in args]
    if args[0] != "--results":
        args = ["--results", str(results), *args]
    res = runner.invoke(app, args)
    _assert_one_line(res, needle.format(tmp=tmp_path))
    _no_runs(results)
    assert not (tmp_path / "verl-out").exists()  # data prepare wrote nothing


def test_cancel_results_env_naming_a_file(tmp_path):
    f = tmp_path / "afile"
    f.write_text("")
    res = runner.invoke(app, ["mc-value", "--M", "2"], env={"CANCEL_RESULTS": str(f)})
    _assert_one_line(res, "afile")


def test_empty_cancel_results_means_results_folder(monkeypatch, tmp_path):
    from cancel_cli.store import Store

    monkeypatch.setenv("CANCEL_RESULTS", "")
    assert Store().root == Path("results")
    monkeypatch.delenv("CANCEL_RESULTS")
    assert Store().root == Path("results")


def test_unwritable_command_folder_inside_writable_store(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    (results / "mc-value").write_text("")  # the command's folder cannot hold runs (root ignores chmod)
    res = runner.invoke(app, ["--results", str(results), "mc-value", "--M", "2"])
    _assert_one_line(res, "mc-value")
    _no_runs(results)


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_read_only_command_folder_inside_writable_store(tmp_path):
    results = tmp_path / "results"
    (results / "mc-value").mkdir(parents=True)
    (results / "mc-value").chmod(0o500)
    try:
        res = runner.invoke(app, ["--results", str(results), "mc-value", "--M", "2"])
        _assert_one_line(res, "mc-value")
    finally:
        (results / "mc-value").chmod(0o700)


def test_bad_dapo_json_names_line(tmp_path):
    from cancel_cli.errors import UserError
    from cancel_cli.tasks.data import load_dapo

    _files(tmp_path)
    with pytest.raises(UserError, match="line 2"):
        load_dapo(path=tmp_path / "dapo-bad" / "dapo17k.jsonl")

