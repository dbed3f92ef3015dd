"""Item 11: verl calls the reward in executor threads, where math-verify's signal timeouts are off."""

import threading
import time

import pytest

pytest.importorskip("verl")


def test_a_hung_check_off_the_main_thread_is_cut_off():
    from cancel_cli.verl_ext.reward import run_guarded

    t0 = time.time()
    assert run_guarded(time.sleep, 60, wall_s=2) is None  # a check that never returns scores as "no answer"
    assert time.time() - t0 < 20


def test_reward_in_a_worker_thread_is_math_verify_and_stays_bounded():
    from cancel_cli.verl_ext.reward import compute_score

    out = {}

    def call():
        out["frac"] = compute_score("math", "so \\boxed{\\frac{1}{2}}", "0.5")["score"]
        out["int"] = compute_score("math", "\\boxed{7}", {"ground_truth": "7"})["score"]
        out["wrong"] = compute_score("math", "\\boxed{x+1}", "2")["score"]

    th = threading.Thread(target=call)
    th.start()
    th.join(120)
    assert out == {"frac": 1.0, "int": 1.0, "wrong": 0.0}
