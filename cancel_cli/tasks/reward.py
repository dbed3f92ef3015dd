"""Binary reward by math-verify, with per-check timeouts and a time bound per batch, batched through a
process pool.

Checks are timed with a ``SIGALRM`` timer, which only works in a main thread: they run in the caller's
main thread for small batches and in a spawn-started process pool for large ones.  Pure
integer answers in ``\\boxed{}`` (every toy rollout, every DAPO gold) take an exact fast path that
math-verify itself would agree with (tested); it compares digit strings, so any length works.
Every answer scores 0 or 1 and scoring never raises: a pathological answer scores 0 when its check hits
``TIMEOUT_S``; a whole batch stops after ``batch_budget(n)`` seconds (the rest score 0); a pool whose
worker died is rebuilt and its unfinished chunks rescored.  ``STATS`` counts checks, timeouts and pool
rebuilds for the run summaries (``store.Run.finish`` adds them).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import re
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass

TIMEOUT_S = 5  # per check (parse of gold and answer + verify)
BATCH_BASE_S = 2 * TIMEOUT_S  # a batch of n slow-path checks gets BATCH_BASE_S + BATCH_PER_CHECK_S * n seconds
BATCH_PER_CHECK_S = 0.1  # ~30x the measured cost of a LaTeX check (~3 ms)
POOL_MIN = 64  # below this many slow-path checks, stay in-process
MAX_REBUILDS = 3  # pool rebuilds per batch before the rest is scored in-process
POOL_START_S = 60  # added to a batch's deadline each time it (re)starts the pool: spawning the workers and
# importing math-verify is not checking time (seconds when idle; on loaded cores a start-up plus a rebuild can
# outlast an 80-check batch's 18 s budget, and its right answers would score 0 as timeouts)
_INT = re.compile(r"^\s*(-?)(\d+)\s*$")
_pool: ProcessPoolExecutor | None = None


@dataclass
class RewardStats:
    """Process-wide counters; ``since(snapshot())`` gives a run's share."""

    checks: int = 0  # slow-path (math-verify) checks
    timeouts: int = 0  # checks that hit the per-check or the batch time limit (scored 0)
    pool_rebuilds: int = 0

    def snapshot(self) -> tuple[int, int, int]:
        return self.checks, self.timeouts, self.pool_rebuilds

    def since(self, start: tuple[int, int, int]) -> dict:
        return {"reward_checks": self.checks - start[0], "reward_timeouts": self.timeouts - start[1],
                "reward_pool_rebuilds": self.pool_rebuilds - start[2]}


STATS = RewardStats()


def batch_budget(n: int) -> float:
    return BATCH_BASE_S + BATCH_PER_CHECK_S * n


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` (balanced braces), or None."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    i, depth = start + len("\\boxed{"), 1
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i:j]
    return None


def _int_key(s: str) -> str | None:
    """Canonical digit string of an integer literal ("-007" -> "-7", "-0" -> "0"), without int() and its
    4300-digit limit."""
    m = _INT.match(s)
    if m is None:
        return None
    digits = m.group(2).lstrip("0") or "0"
    return digits if digits == "0" or m.group(1) != "-" else "-" + digits


def _fast(response: str, gold: str) -> float | None:
    box = last_boxed(response)
    if box is None:
        return None
    a, g = _int_key(box), _int_key(gold)
    if a is not None and g is not None:
        return float(a == g)
    return None


def score(response: str, gold: str, timeout: int | None = TIMEOUT_S) -> float:
    """1.0 if math-verify judges the response's final answer equal to the gold answer, else 0.0."""
    fast = _fast(response, gold)
    if fast is not None:
        return fast
    val, timed_out = _verify_timed(response, gold, timeout)
    STATS.checks += 1
    STATS.timeouts += timed_out
    return val


def _verify(response: str, gold: str, timeout: int | None = TIMEOUT_S) -> float:
    return _verify_timed(response, gold, timeout)[0]


def _math_verify():
    """math-verify's parse and verify, with its own timers off: ``_verify_timed`` provides the timeout (so
    its "timeout is disabled" warning does not apply)."""
    import math_verify.grader
    import math_verify.parser
    from math_verify import parse, verify

    math_verify.parser.TIMEOUT_WARNING_SHOWN = math_verify.grader.TIMEOUT_WARNING_SHOWN = True
    return parse, verify


class _CheckTimeout(BaseException):
    """Raised by our alarm; a BaseException so math-verify's ``except Exception`` cannot swallow it."""


def _alarm(signum, frame):
    raise _CheckTimeout()


def _verify_timed(response: str, gold: str, timeout: float | None = TIMEOUT_S) -> tuple[float, bool]:
    """(score, whether the check ran out of time); one alarm bounds the whole check (both parses and the
    comparison).  Never raises."""
    import signal

    if threading.current_thread() is not threading.main_thread():
        timeout = None  # signal timers only work in the main thread (e.g. verl reward workers' threads)
    parse, verify = _math_verify()  # the (slow, first-time) import is not part of the check's time
    old = signal.signal(signal.SIGALRM, _alarm) if timeout else None
    try:
        if timeout:
            signal.setitimer(signal.ITIMER_REAL, timeout)
        g = parse(f"${gold}$", parsing_timeout=None)
        p = parse(response, parsing_timeout=None)
        return float(bool(g) and bool(p) and verify(g, p, timeout_seconds=None)), False
    except _CheckTimeout:
        return 0.0, True
    except Exception:  # a pathological expression scores 0, never crashes a run
        return 0.0, False
    finally:
        if timeout:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old)


def _verify_chunk(pairs) -> tuple[list[float], int]:
    out = [_verify_timed(r, g) for r, g in pairs]
    return [v for v, _ in out], sum(t for _, t in out)


def _watch_parent(parent: int) -> None:
    """Pool-worker initializer: exit as soon as the parent is gone (kill -9 included), so a killed run
    leaves no reward processes behind; import math-verify once, outside any check's time."""
    _math_verify()

    def watch():
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="parent-watchdog").start()


def _get_pool(workers: int) -> ProcessPoolExecutor:
    global _pool
    if _pool is None:
        _pool = ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=_watch_parent,
                                    initargs=(os.getpid(),))
    return _pool


def _drop_pool(kill: bool, wait: bool = False) -> None:
    """Forget the pool; ``kill`` terminates its workers (a wedged or broken pool); ``wait`` returns only when
    its workers have exited."""
    global _pool
    pool, _pool = _pool, None
    if pool is None:
        return
    procs = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=wait and not kill, cancel_futures=True)
    if kill:
        for p in procs:
            if p.is_alive():
                p.kill()


def _submit(pool: ProcessPoolExecutor, pairs):
    return pool.submit(_verify_chunk, pairs)


def score_batch(responses: list[str], golds: list[str], workers: int = 2, chunk: int = 32,
                budget_s: float | None = None) -> list[float]:
    """Scores (0.0 or 1.0) for many (response, gold) pairs within ``budget_s`` seconds (default
    ``batch_budget`` of the slow-path count); slow-path checks fan out to a process pool."""
    out: list[float | None] = [_fast(r, g) for r, g in zip(responses, golds)]
    slow = [i for i, v in enumerate(out) if v is None]
    deadline = time.monotonic() + (batch_budget(len(slow)) if budget_s is None else budget_s)
    if len(slow) >= POOL_MIN and workers > 1:
        slow = _score_in_pool(responses, golds, slow, out, workers, chunk, deadline)
    for i in slow:  # in-process (small batches, or what a failing pool left)
        left = deadline - time.monotonic()
        if left <= 0:
            out[i], timed_out = 0.0, True
        else:
            out[i], timed_out = _verify_timed(responses[i], golds[i], min(TIMEOUT_S, left))
        STATS.checks += 1
        STATS.timeouts += timed_out
    return out


def _score_in_pool(responses, golds, slow, out, workers, chunk, deadline) -> list[int]:
    """Score ``slow`` in the pool; returns the indices still unscored (pool failed too often)."""
    todo = [slow[s : s + chunk] for s in range(0, len(slow), chunk)]
    if not todo:
        return []
    for attempt in range(MAX_REBUILDS + 1):
        broken, futs = False, []
        try:
            if _pool is None:  # a cold (or rebuilt) pool: its start-up does not count against the checks
                deadline += POOL_START_S
            pool = _get_pool(workers)
            for c in todo:  # a chunk not submitted stays unscored and is retried
                futs.append((c, _submit(pool, [(responses[i], golds[i]) for i in c])))
        except BrokenProcessPool:
            broken = True
        for c, f in futs:
            try:
                vals, timeouts = f.result(timeout=max(0.0, deadline - time.monotonic()))
            except BrokenProcessPool:  # a worker died (killed, out of memory): rebuild and rescore
                broken = True
                continue
            except FutureTimeout:  # the batch's time is up: the rest scores 0, the wedged pool goes
                _drop_pool(kill=True)
                rest = [i for cc in todo for i in cc if out[i] is None]
                for i in rest:
                    out[i] = 0.0
                STATS.checks += len(rest)
                STATS.timeouts += len(rest)
                return []
            for i, v in zip(c, vals):
                out[i] = v
            STATS.checks += len(c)
            STATS.timeouts += timeouts
        todo = [c for c in todo if any(out[i] is None for i in c)]
        if not broken or not todo:
            return []
        _drop_pool(kill=True)
        if attempt < MAX_REBUILDS:
            STATS.pool_rebuilds += 1
    return [i for c in todo for i in c if out[i] is None]


def shutdown_pool(wait: bool = False) -> None:
    """Stop the worker pool (the CLI calls this after every command, so nothing outlives an invocation).
    ``wait``: until its workers have exited (a process that is itself exiting must wait: multiprocessing joins
    its children at exit, and workers that never got their stop sentinel would be joined forever)."""
    _drop_pool(kill=False, wait=wait)
