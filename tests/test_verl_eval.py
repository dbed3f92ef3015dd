"""``cancel eval --run`` on a verl run: checkpoints in verl's layout under the run folder, engines closed."""

import shutil

from typer.testing import CliRunner

from cancel_cli.cli import app
from cancel_cli.config import MODELS
from cancel_cli.store import Store


def test_eval_reads_a_verl_runs_checkpoints_and_closes_each_engine(tmp_path, monkeypatch):
    from cancel_cli.analysis import evaluate

    run = Store(tmp_path).new_run("train", {"model": "toy", "engine": "verl"}, model="toy")
    for step in (2, 4):
        d = run.path / "checkpoints" / f"global_step_{step}"
        shutil.copytree(MODELS["toy"], d / "actor" / "huggingface")
        (d / "actor" / "model_world_size_1_rank_0.pt").write_bytes(b"")  # verl's sharded state beside it
    (run.path / "checkpoints" / "global_step_6" / "actor" / "huggingface").mkdir(parents=True)  # save in progress
    (run.path / "checkpoints" / "latest_checkpointed_iteration.txt").write_text("4")
    run.finish({})
    closed = []
    real = evaluate.make_sampler

    def tracked(pol, engine):
        s = real(pol, engine)
        s.close = lambda: closed.append(pol)
        return s

    monkeypatch.setattr(evaluate, "make_sampler", tracked)
    res = CliRunner().invoke(app, ["--results", str(tmp_path), "--json", "eval", "--run", run.id, "--benchmarks",
                                   "toy-2digit", "--limit", "3", "--k", "1", "--engine", "torch"])
    assert res.exit_code == 0, res.output
    ev = [r for r in Store(tmp_path).runs("eval")][-1]
    scores = ev.read_table("scores")
    assert sorted(scores.step) == [2, 4] and set(scores.target) == {f"{run.id}@global_step_2", f"{run.id}@global_step_4"}
    assert len(closed) == 2  # each checkpoint's engine shut down (vLLM holds GPU memory until closed)
