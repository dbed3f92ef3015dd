"""verl custom reward function: math-verify, binary (``reward.custom_reward_function``).

verl calls it in executor threads, where math-verify's ``signal.alarm`` timeouts cannot run; a
pathological answer would then hang its group.  Off the main thread, the slow path (anything but a
boxed integer) runs in the project's spawn process pool -- where math-verify's own per-call timeouts
work -- and is cut off after ``WALL_S`` seconds in any case (scored 0, the pool rebuilt).
"""

from __future__ import annotations

import threading

from cancel_cli.tasks import reward as _rw

WALL_S = 4 * _rw.TIMEOUT_S + 5  # parse(gold) + parse(answer) + verify, each capped at TIMEOUT_S, plus start-up


def run_guarded(fn, *args, wall_s: float = WALL_S):
    """``fn(*args)`` in the spawn pool, or None if it does not return within ``wall_s`` seconds."""
    from concurrent.futures import TimeoutError as FutureTimeout

    fut = _rw._get_pool(2).submit(fn, *args)
    try:
        return fut.result(timeout=wall_s)
    except FutureTimeout:
        _rw._drop_pool(kill=True)  # a wedged worker: kill the pool, the next call starts a new one
        return None


def compute_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs):
    if isinstance(ground_truth, dict):
        ground_truth = ground_truth.get("target", ground_truth.get("ground_truth", ""))
    gold = str(ground_truth)
    s = _rw._fast(solution_str, gold)
    if s is None:
        if threading.current_thread() is threading.main_thread():
            s = _rw.score(solution_str, gold)
        else:
            res = run_guarded(_rw._verify_chunk, [(solution_str, gold)])  # -> (scores, timeouts) or None
            s = res[0][0] if res else 0.0
    return {"score": s, "acc": s}
