"""Issue 17, run integrity: per-run lock (rm / concurrent resume refused, stale runs), SIGTERM, write
failures, leftover temp files, removed run folders, no orphan reward processes after kill -9."""

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from cancel_cli.cli import app
from cancel_cli.errors import UserError
from cancel_cli.store import Store

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def test_rm_of_a_live_run_is_refused(store):
    with store.running("mc-value", {}) as run:
        res = runner.invoke(app, ["--results", str(store.root), "results", "rm", run.id])
        assert res.exit_code == 2 and "running" in res.output and run.path.is_dir()
        assert runner.invoke(app, ["--results", str(store.root), "--json", "results", "ls"]).output.count('"running"') == 1
        run.finish({})
    assert runner.invoke(app, ["--results", str(store.root), "results", "rm", run.id]).exit_code == 0


def test_concurrent_resume_is_refused(store):
    with pytest.raises(RuntimeError):
        with store.running("mc-value", {"M": 2}) as run:
            raise RuntimeError("boom")
    assert run.status == "failed"
    with store.running("mc-value", {"M": 2}, resume=run.id):  # this process resumes it ...
        with pytest.raises(UserError, match="in use by a running process"):  # ... a second one may not
            with store.running("mc-value", {"M": 2}, resume=run.id):
                pass
        res = runner.invoke(app, ["--results", str(store.root), "mc-value", "--resume", run.id])
        assert res.exit_code == 2 and "in use" in res.output
    assert store.get(run.id).state == "stale"  # the first resumer ended without finishing


def test_finished_run_clears_old_error_and_resume_removes_temp_files(store):
    with pytest.raises(KeyboardInterrupt):
        with store.running("train", {}) as run:
            run.write_part("metrics", 0, pd.DataFrame({"x": [1]}))
            (run.path / "metrics.parts" / ".part-000001.parquet.abc123.tmp").write_bytes(b"half")
            raise KeyboardInterrupt
    assert run.status == "failed" and "interrupted" in run.meta["error"]
    with store.running("train", {}, resume=run.id) as r2:
        assert not list(r2.path.rglob("*.tmp"))
        r2.finish({"steps": 1})
    assert r2.status == "done" and r2.meta.get("error") is None


def test_write_failure_is_one_line_and_leaves_the_run_resumable(store):
    with pytest.raises(UserError) as e:
        with store.running("mc-value", {}) as run:
            raise OSError(errno.ENOSPC, "No space left on device", str(run.path / "values.parts"))
    msg = str(e.value)
    assert "\n" not in msg and "resumable" in msg and "--resume " + run.id in msg and e.value.__cause__ is None
    assert run.status == "failed"
    with store.running("mc-value", {}, resume=run.id) as r2:
        r2.finish({})
    assert r2.status == "done"


def test_unwritable_run_json_leaves_a_stale_running_run(store, monkeypatch):
    import cancel_cli.store as st

    with pytest.raises(UserError, match="resumable"):
        with store.running("mc-value", {}) as run:
            def full(*a, **k):
                raise OSError(errno.EROFS, "Read-only file system", str(run.path / "run.json"))

            monkeypatch.setattr(st, "atomic_write_json", full)
            run.update(note="x")  # run.json cannot be written
    monkeypatch.undo()
    assert run.status == "running" and run.state == "stale"


def test_running_process_never_recreates_a_removed_run_folder(store):
    with pytest.raises(UserError, match="removed"):
        with store.running("mc-value", {}) as run:
            shutil.rmtree(run.path)  # removed behind the process's back (rm refuses a live run)
            run.write_part("values", 0, pd.DataFrame({"x": [1]}))
    assert not run.path.exists()


def _descendants(pid: int) -> list[int]:
    kids: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                stat = Path(f"/proc/{d}/stat").read_text()
            except OSError:
                continue
            kids.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(d))
    out, todo = [], [pid]
    while todo:
        for c in kids.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc")
def test_kill_9_of_a_run_leaves_no_reward_processes_and_a_stale_run(tmp_path):
    script = textwrap.dedent(f"""
        import time
        from cancel_cli.store import Store
        from cancel_cli.tasks import reward
        with Store({str(tmp_path)!r}).running("train", {{}}) as run:
            rs = ["so \\\\boxed{{\\\\frac{{%d}}{{%d}}}}" % (i + 1, 2 * i + 2) for i in range(80)]
            assert reward.score_batch(rs, ["0.5"] * 80) == [1.0] * 80  # through the process pool
            print("ready", flush=True)
            time.sleep(300)
    """)
    p = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "ready"
        kids = _descendants(p.pid)
        assert len(kids) >= 2  # the pool's workers
        run = Store(tmp_path).runs("train")[0]
        assert run.state == "running"
        p.kill()
        p.wait()
        deadline = time.time() + 30
        while time.time() < deadline and any(_alive(k) for k in kids):
            time.sleep(0.2)
        assert not [k for k in kids if _alive(k)]
        assert run.state == "stale"
        res = runner.invoke(app, ["--results", str(tmp_path), "--json", "results", "ls"])
        assert json.loads(res.output)[0]["status"] == "stale"
    finally:
        if p.poll() is None:
            p.kill()


def test_sigterm_marks_the_run_failed_and_resumable(tmp_path):
    args = ["--results", str(tmp_path), "eval", "--benchmarks", "toy-2digit,toy-3digit,toy-4digit", "--sweep-sampling",
            "--limit", "16", "--k", "2", "--engine", "torch"]  # 12 small parts
    p = subprocess.Popen([sys.executable, "-m", "cancel_cli", *args], cwd=ROOT, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and p.poll() is None and not list(tmp_path.glob("eval/*/scores.parts/part-*")):
            time.sleep(0.02)
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 128 + signal.SIGTERM, err
    assert "Traceback" not in err and "interrupted (SIGTERM)" in err
    run = Store(tmp_path).runs("eval")[0]
    assert run.status == "failed" and "SIGTERM" in run.meta["error"] and run.state == "failed"
    assert 1 <= len(run.parts("scores")) < 12
    res = runner.invoke(app, [*args, "--resume", run.id])
    assert res.exit_code == 0, res.output
    run = Store(tmp_path).get(run.id)
    assert run.status == "done" and run.meta.get("error") is None and len(run.read_table("results")) == 12
