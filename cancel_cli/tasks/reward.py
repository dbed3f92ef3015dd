"""Binary reward by math-verify, with per-check timeouts, batched through a process pool.

math-verify times out with ``signal.alarm``, which only works in a main thread: checks run in the
caller's main thread for small batches and in a spawn-started process pool for large ones.  Pure
integer answers in ``\\boxed{}`` (every toy rollout, every DAPO gold) take an exact fast path that
math-verify itself would agree with (tested); everything else goes to math-verify.
"""

from __future__ import annotations

import multiprocessing as mp
import re
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

TIMEOUT_S = 5  # per parse / verify call
POOL_MIN = 64  # below this many slow-path checks, stay in-process
_INT = re.compile(r"^\s*-?\d+\s*$")
_pool: ProcessPoolExecutor | None = None


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


def _fast(response: str, gold: str) -> float | None:
    box = last_boxed(response)
    if box is not None and _INT.match(box) and _INT.match(gold):
        return float(int(box) == int(gold))
    return None


def score(response: str, gold: str, timeout: int | None = TIMEOUT_S) -> float:
    """1.0 if math-verify judges the response's final answer equal to the gold answer, else 0.0."""
    fast = _fast(response, gold)
    if fast is not None:
        return fast
    return _verify(response, gold, timeout)


def _verify(response: str, gold: str, timeout: int | None = TIMEOUT_S) -> float:
    import threading

    from math_verify import parse, verify

    if threading.current_thread() is not threading.main_thread():
        timeout = None  # signal.alarm only works in the main thread (e.g. verl reward workers' threads)

    try:
        g = parse(f"${gold}$", parsing_timeout=timeout)
        p = parse(response, parsing_timeout=timeout)
        return float(bool(g) and bool(p) and verify(g, p, timeout_seconds=timeout))
    except Exception:  # a pathological expression scores 0, never crashes a run
        return 0.0


def _verify_chunk(pairs):
    return [_verify(r, g) for r, g in pairs]


def _get_pool(workers: int) -> ProcessPoolExecutor:
    global _pool
    if _pool is None:
        _pool = ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"))
    return _pool


def score_batch(responses: list[str], golds: list[str], workers: int = 2, chunk: int = 32) -> list[float]:
    """Scores for many (response, gold) pairs; slow-path checks fan out to a process pool."""
    global _pool
    out: list[float | None] = [_fast(r, g) for r, g in zip(responses, golds)]
    slow = [i for i, v in enumerate(out) if v is None]
    if len(slow) < POOL_MIN or workers <= 1:
        for i in slow:
            out[i] = _verify(responses[i], golds[i])
        return out
    pool = _get_pool(workers)
    chunks = [slow[s : s + chunk] for s in range(0, len(slow), chunk)]
    futs = [pool.submit(_verify_chunk, [(responses[i], golds[i]) for i in c]) for c in chunks]
    for c, f in zip(chunks, futs):
        try:
            vals = f.result(timeout=4 * TIMEOUT_S * len(c) + 60)
        except (FutureTimeout, Exception):  # a wedged worker: give 0 and rebuild the pool
            vals = [0.0] * len(c)
            _pool.shutdown(wait=False, cancel_futures=True)
            _pool = None
        for i, v in zip(c, vals):
            out[i] = v
    return out


def shutdown_pool() -> None:
    """Stop the worker pool (the CLI calls this after every command, so nothing outlives an invocation)."""
    global _pool
    if _pool is not None:
        _pool.shutdown(wait=True, cancel_futures=True)
        _pool = None
