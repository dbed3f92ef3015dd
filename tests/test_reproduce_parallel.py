"""``cancel reproduce --workers N``: (stage, seed) tasks on N single-threaded spawned processes, each stage after
the stages of its own seed it depends on, each in its own seed's scope; a failing stage stops the run with its
one-line error."""

import json
import os
import time
from pathlib import Path

import pytest

from cancel_cli.errors import UserError

EVENTS = "CANCEL_TEST_EVENTS"


def _record(name, seed, st, t0):
    import torch

    d = Path(os.environ[EVENTS])
    ev = {"name": name, "seed": seed, "scope": st.seeds, "start": t0, "end": time.time(), "pid": os.getpid(),
          "threads": torch.get_num_threads(), "trains_seen": sorted({r.meta["seed"] for r in st.runs("train")})}
    (d / f"{name}-{seed}.json").write_text(json.dumps(ev))


def fake_stages(model, preset, seed, device):
    """Module level, so spawned workers can import it by name."""
    def train(label):
        def fn(st):
            from test_report import fake_train

            t0 = time.time()
            time.sleep(0.6)  # long enough that an eval not waiting for it would start first
            run = fake_train(st, seed, label, 0.4 + 0.1 * (label == "QB+RB"))
            _record(f"train {label}", seed, st, t0)
            return (run,)
        return fn

    def other(name):
        def fn(st):
            t0 = time.time()
            if name == "coupling":  # a stage that leaves math-verify's process pool running, as real stages do
                from cancel_cli.tasks import reward

                reward._get_pool(1).submit(int, 1).result()
            if name == "eval (Table 2)" and os.environ.get("CANCEL_TEST_FAIL") == str(seed):
                raise UserError(f"eval failed for seed {seed}")
            _record(name, seed, st, t0)
        return fn

    return [("coupling", other("coupling")), ("eval (Table 2)", other("eval (Table 2)")),
            ("train baseline", train("baseline")), ("train QB+RB", train("QB+RB"))]


@pytest.fixture()
def events(tmp_path, monkeypatch):
    d = tmp_path / "events"
    d.mkdir()
    monkeypatch.setenv(EVENTS, str(d))
    return d


@pytest.fixture()
def deadline():
    """A hung worker join fails the test after 180 s instead of hanging the suite."""
    import signal

    def boom(*_):
        raise TimeoutError("reproduce did not return within 180 s (a worker or its children never exited?)")

    old = signal.signal(signal.SIGALRM, boom)
    signal.alarm(180)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


def test_parallel_stages_respect_dependencies_scopes_and_threads(tmp_path, events, monkeypatch, deadline):
    from cancel_cli import reproduce as R
    from cancel_cli.store import Store

    monkeypatch.setattr(R, "stages", fake_stages)
    out = R.reproduce("toy", "toy", Store(tmp_path / "r"), tmp_path / "f", seed=0, seeds=2, workers=3)
    ev = {p.stem: json.loads(p.read_text()) for p in events.glob("*.json")}
    assert sorted(ev) == sorted(f"{n}-{s}" for n in ("coupling", "eval (Table 2)", "train baseline", "train QB+RB")
                                for s in (0, 1))
    assert all(e["scope"] == [e["seed"]] for e in ev.values())  # each task sees its own seed only
    assert len({e["pid"] for e in ev.values()}) >= 2 and {e["threads"] for e in ev.values()} == {1}
    for s in (0, 1):  # eval of seed s starts after both trainings of seed s ended, and sees only them
        e = ev[f"eval (Table 2)-{s}"]
        assert e["start"] >= max(ev[f"train {lab}-{s}"]["end"] for lab in ("baseline", "QB+RB"))
        assert e["trains_seen"] == [s]
    assert out["workers"] == 3 and out["stage_seconds"]["train baseline"][0] >= 0.6
    assert set(out["runs"]) == {f"train {lab} seed {s}" for lab in ("baseline", "QB+RB") for s in (0, 1)}
    text = (tmp_path / "f" / "REPORT.md").read_text()
    assert "3 single-threaded worker processes" in text and "seeds 0, 1" in text


def test_a_failing_stage_stops_the_parallel_run_with_its_error(tmp_path, events, monkeypatch, deadline):
    from cancel_cli import reproduce as R
    from cancel_cli.store import Store

    monkeypatch.setattr(R, "stages", fake_stages)
    monkeypatch.setenv("CANCEL_TEST_FAIL", "0")
    with pytest.raises(UserError, match="eval failed for seed 0"):
        R.reproduce("toy", "toy", Store(tmp_path / "r"), tmp_path / "f", seed=0, seeds=1, workers=2)
    assert not (tmp_path / "f" / "REPORT.md").exists()


def test_stage_dependencies_and_default_workers(monkeypatch):
    from cancel_cli import reproduce as R

    names = R.cheapest_first(["mc-value", "entropy-gap", "budget-sweep batch-size", "budget-sweep rollout-n",
                              "train baseline", "train QB", "eval (Table 2)", "coupling"])
    deps = R.stage_deps(names)
    assert deps["entropy-gap"] == ["mc-value"] and deps["coupling"] == [] and deps["budget-sweep batch-size"] == []
    assert deps["budget-sweep rollout-n"] == ["budget-sweep batch-size"]  # the axes share one pool's values
    assert sorted(deps["eval (Table 2)"]) == ["train QB", "train baseline"]
    monkeypatch.setattr(R.os, "cpu_count", lambda: 2)
    assert R.default_workers("toy", "cpu") == 2 and R.default_workers("toy-plain", "cpu") == 2
    assert R.default_workers("toy", "cuda") == 1 and R.default_workers("qwen3-4b", "cpu") == 1
    with pytest.raises(UserError, match="--workers"):
        R.check_workers(0)


def test_stage_overrides_reach_the_stage_configs_and_the_report_lists_them():
    """reproduce_toy's reductions apply inside reproduce only: train and eval stages get them, the command presets
    keep their own values, and the REPORT lines name both."""
    from cancel_cli import reproduce as R
    from cancel_cli.config import load_preset

    plan = {s.name: s.config for s in R.stage_plan("toy", "toy", 0, "cpu")}
    over = load_preset("reproduce_toy")["stage_overrides"]
    for name, cfg in plan.items():
        command = name.split()[0]
        for k, v in over.get(command, {}).items():
            assert cfg[k] == v, (name, k)
    assert load_preset("train_toy")["steps"] != over["train"]["steps"]
    assert any(line.startswith("train: steps 10 (`train_toy`: 20)") for line in R.overrides_text("toy", "toy"))
    assert R.overrides_text("toy", "paper") == []


def test_toy_plain_trains_with_its_own_preset_and_every_other_model_with_train_toy():
    """reproduce_toy maps toy-plain to train_toy-plain (tau 0.5: at 0.25 RB never acts on it); every other model
    keeps train_toy (tau 0.25: at 0.5 RB is infeasible once GRPO saturates the toy's reward), and the two presets
    differ in model and tau only."""
    from cancel_cli import reproduce as R
    from cancel_cli.config import load_preset

    plain, toy = load_preset("train_toy-plain"), load_preset("train_toy")
    assert {k for k in {**toy, **plain} if toy.get(k) != plain.get(k)} == {"model", "tau"}
    assert (toy["tau"], plain["tau"]) == (0.25, 0.5)
    for model, tau in (("toy-plain", 0.5), ("toy", 0.25), ("qwen3-4b", 0.25)):
        plan = {s.name: s.config for s in R.stage_plan(model, "toy", 0, "cpu")}
        trains = [c for name, c in plan.items() if name.startswith("train ")]
        assert len(trains) == 5 and {c["tau"] for c in trains} == {tau} and {c["model"] for c in trains} == {model}
    assert any("(`train_toy-plain`: 20)" in line for line in R.overrides_text("toy-plain", "toy"))
