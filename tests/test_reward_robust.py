"""Issue 17, reward: any answer scores 0 or 1 and never raises; a batch is time-bounded; a pool whose
worker dies is rebuilt and the batch still gets the right scores."""

import os
import signal
import time

import pytest

from cancel_cli.tasks import reward


@pytest.fixture()
def fresh_pool():
    reward._drop_pool(kill=True)
    yield
    reward._drop_pool(kill=True)


def test_5000_digit_boxed_integer_scores_without_raising():
    big = "7" * 5000
    assert reward.score(f"\\boxed{{{big}}}", big) == 1.0
    assert reward.score(f"\\boxed{{{big}}}", big[:-1] + "8") == 0.0
    assert reward.score(f"\\boxed{{-00{big}}}", f"-{big}") == 1.0
    assert reward.score_batch([f"\\boxed{{{big}}}", "\\boxed{-0}"], [big, "0"]) == [1.0, 1.0]


def test_integer_fast_path_matches_int_semantics():
    for a, g in [("007", "7"), ("-0", "0"), ("-3", "3"), ("12", "012"), ("1 ", " 1")]:
        assert reward._fast(f"\\boxed{{{a}}}", g) == float(int(a) == int(g))


def _pairs():
    """80 slow-path checks (fractions vs decimals), half right; reference scores from the in-process path."""
    rs, gs = [], []
    for i in range(80):
        rs.append(f"so \\boxed{{\\frac{{{i + 1}}}{{{2 * (i + 1)}}}}}")
        gs.append("0.5" if i % 2 == 0 else "0.25")
    return rs, gs


def test_killed_pool_worker_mid_batch_is_rebuilt_and_rescored(fresh_pool, monkeypatch):
    rs, gs = _pairs()
    expected = [1.0 if i % 2 == 0 else 0.0 for i in range(80)]
    killed = []
    real_submit = reward._submit

    def submit_then_kill(pool, pairs):
        fut = real_submit(pool, pairs)
        if not killed:  # the batch is in flight: kill one worker of the pool
            proc = next(iter(pool._processes.values()))
            os.kill(proc.pid, signal.SIGKILL)
            proc.join(10)
            killed.append(proc.pid)
        return fut

    monkeypatch.setattr(reward, "_submit", submit_then_kill)
    before = reward.STATS.snapshot()
    got = reward.score_batch(rs, gs, workers=2, chunk=16)
    assert killed and got == expected
    assert reward.STATS.since(before)["reward_pool_rebuilds"] >= 1


def test_pool_start_up_does_not_count_against_the_batch_budget(fresh_pool, monkeypatch):
    """A 1 s budget for 80 slow-path checks, and a pool that takes 2 s to start (on top of spawning workers that
    import math-verify): the checks themselves take well under 1 s, so every answer must score right; a
    deadline that counted the start-up would score them 0 as timeouts."""
    rs, gs = _pairs()
    real_get = reward._get_pool

    def slow_start(workers):
        if reward._pool is None:
            time.sleep(2.0)
        return real_get(workers)

    monkeypatch.setattr(reward, "_get_pool", slow_start)
    before = reward.STATS.snapshot()
    assert reward.score_batch(rs, gs, workers=2, chunk=16, budget_s=1.0) == [1.0 if i % 2 == 0 else 0.0 for i in range(80)]
    assert reward.STATS.since(before)["reward_timeouts"] == 0


def _stuck(*a, **k):
    time.sleep(60)  # a check that never finishes by itself (interrupted by the timer)


def test_batch_time_is_bounded_and_timeouts_counted(monkeypatch):
    monkeypatch.setattr(reward, "_math_verify", lambda: (_stuck, _stuck))
    before = reward.STATS.snapshot()
    t = time.time()
    got = reward.score_batch(["\\boxed{x+1}"] * 6, ["x+2"] * 6, budget_s=1.0)
    assert got == [0.0] * 6 and time.time() - t < 20  # unbounded: 6 x 5 s
    assert reward.STATS.since(before) == {"reward_checks": 6, "reward_timeouts": 6, "reward_pool_rebuilds": 0}


def test_run_summary_reports_reward_timeouts(store, monkeypatch):
    with store.running("mc-value", {}) as run:
        assert reward.score("\\boxed{\\frac{1}{2}}", "0.5") == 1.0
        monkeypatch.setattr(reward, "_math_verify", lambda: (_stuck, _stuck))
        assert reward.score("\\boxed{x+1}", "x+2", timeout=0.5) == 0.0
        run.finish({"gap": 1.0})
    s = run.meta["summary"]
    assert s["reward_timeouts"] == 1 and s["reward_checks"] == 2 and s["gap"] == 1.0
