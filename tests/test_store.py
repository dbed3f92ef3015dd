import os
import signal
import subprocess
import sys
import textwrap
import time

import pandas as pd
import pytest

from cancel_cli.errors import UserError


def test_run_lifecycle(store):
    run = store.new_run("flip", {"a": 1}, model="toy", model_hash="abc", seed=3)
    assert run.status == "running" and run.meta["config"] == {"a": 1} and run.meta["packages"]["torch"]
    run.write_table("tokens", pd.DataFrame({"x": [1, 2]}))
    run.finish({"k": 1.0})
    assert store.latest("flip").id == run.id
    assert store.get_done(run.id).read_table("tokens").x.tolist() == [1, 2]
    store.rm(run.id)
    assert store.latest("flip") is None


def test_failed_body_marks_run_failed(store):
    with pytest.raises(RuntimeError):
        with store.running("coupling", {}) as run:
            raise RuntimeError("boom")
    assert run.status == "failed" and "boom" in run.meta["error"]
    assert store.latest("coupling") is None
    with pytest.raises(UserError):
        store.get_done(run.id)


def test_interrupted_table_write_leaves_no_partial_file(store, monkeypatch):
    run = store.new_run("mc-value", {})

    def broken(self, path, **kw):
        with open(path, "wb") as f:
            f.write(b"PAR1 half")
        raise OSError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_parquet", broken)
    with pytest.raises(OSError):
        run.write_table("values", pd.DataFrame({"x": [1]}))
    assert list(run.path.glob("values*")) == [] and not list(run.path.glob(".*tmp"))


def test_killed_process_leaves_no_done_run_and_no_partial_table(tmp_path):
    script = textwrap.dedent(f"""
        import time, pandas as pd
        from cancel_cli.store import Store
        run = Store({str(tmp_path)!r}).new_run("train", {{}})
        for i in range(10_000):
            run.write_part("metrics", i, pd.DataFrame({{"x": list(range(20000))}}))
    """)
    p = subprocess.Popen([sys.executable, "-c", script])
    from cancel_cli.store import Store

    store = Store(tmp_path)
    deadline = time.time() + 60
    while time.time() < deadline:
        runs = store.runs("train")
        if runs and len(runs[0].parts("metrics")) >= 3:
            break
        time.sleep(0.05)
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    run = store.runs("train")[0]
    assert run.status == "running" and store.latest("train") is None
    for part in run.parts("metrics"):  # every visible part is complete
        assert len(pd.read_parquet(part)) == 20000


def test_unwritable_results_dir(tmp_path):
    from cancel_cli.store import Store

    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    if os.access(ro, os.W_OK):  # running as root: permissions are not enforced
        target = tmp_path / "file"
        target.write_text("")
        bad = Store(target / "results")
    else:
        bad = Store(ro / "results")
    with pytest.raises(UserError, match="not writable"):
        bad.new_run("flip", {})
