"""Run integrity: one live process per run, clean ends on signals and write failures.

- **Lock**: the process running a run holds ``flock(LOCK_EX)`` on ``<run>/run.lock`` (which also carries its
  pid).  The kernel drops the lock when the process dies, kill -9 included, so a lock that can be taken
  means nobody runs the run.  ``results rm`` and ``--resume`` refuse a locked run; ``results ls`` shows a
  ``running`` run whose lock is free as ``stale``.
- **SIGTERM** is handled like Ctrl-C: the run is marked ``failed`` (error ``interrupted (SIGTERM)``), stays
  resumable, and the command exits non-zero without a traceback.
- **Write failures** (full disk, read-only folder) end the command with one line and leave the run
  resumable.  Leftover ``.*.tmp`` files of a killed process are removed when the run is resumed.
"""

from __future__ import annotations

import errno
import fcntl
import os
import signal
import threading
from contextlib import contextmanager
from pathlib import Path

from .errors import UserError

LOCK = "run.lock"
WRITE_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EIO}


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread so the run ends like a Ctrl-C'd one."""

    signal_name = "SIGTERM"
    exit_code = 128 + signal.SIGTERM


class RunLocked(UserError):
    pass


class RunLock:
    """An exclusive flock on ``<run>/run.lock`` held for the life of the running process (the file object
    closes, and the kernel drops the lock, on release, on garbage collection and on any kind of death)."""

    def __init__(self, run_path: Path):
        self.path = Path(run_path) / LOCK
        self.fh = None

    def acquire(self) -> "RunLock":
        fh = open(self.path, "a+b")  # not inherited by child processes (PEP 446)
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.close()
            pid = owner_pid(self.path.parent)
            raise RunLocked(f"run {self.path.parent.name} is in use by a running process"
                            f"{f' (pid {pid})' if pid else ''}; wait for it or stop it first") from None
        fh.truncate(0)
        fh.write(str(os.getpid()).encode())
        fh.flush()
        self.fh = fh
        return self

    def release(self) -> None:
        if self.fh is not None:
            self.fh.close()
            self.fh = None


def is_locked(run_path: Path) -> bool:
    """True while a live process holds the run's lock."""
    try:
        fd = os.open(Path(run_path) / LOCK, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def owner_pid(run_path: Path) -> int | None:
    try:
        return int((Path(run_path) / LOCK).read_text().strip() or 0) or None
    except (OSError, ValueError):
        return None


def clean_tmp(run_path: Path) -> list[Path]:
    """Remove the temporary files a killed writer left in the run folder (``.<name>.<rand>.tmp``)."""
    gone = []
    for p in Path(run_path).rglob(".*.tmp"):
        if p.is_file():
            p.unlink(missing_ok=True)
            gone.append(p)
    return gone


def is_write_failure(e: BaseException, root: Path) -> bool:
    """An OSError from writing into the store (full disk, read-only or vanished folder)."""
    if not isinstance(e, OSError):
        return False
    if e.errno in WRITE_ERRNOS:
        return True
    name = getattr(e, "filename", None)
    return bool(name) and str(Path(name).resolve()).startswith(str(Path(root).resolve()))


@contextmanager
def sigterm_as_interrupt():
    """Within the block (main thread only), SIGTERM raises ``Terminated`` instead of killing the process."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise Terminated()

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


@contextmanager
def guarded(run, store_root: Path, lock: RunLock):
    """The body of a run: marks it failed (resumable) on any error, turns write failures into one line."""
    from .tasks import reward

    start = reward.STATS.snapshot()
    run._reward_start = start
    try:
        with sigterm_as_interrupt():
            yield run
    except Terminated:
        _try_fail(run, "interrupted (SIGTERM)")
        raise
    except KeyboardInterrupt:
        _try_fail(run, "interrupted (Ctrl-C)")
        raise
    except BaseException as e:
        if not run.path.is_dir():
            raise UserError(f"run {run.id} was removed while it was running; stopped") from None
        if is_write_failure(e, store_root):
            _try_fail(run, f"write failed: {e}")
            raise UserError(f"cannot write run {run.id} ({e.strerror or e}: {e.filename or run.path}); the run is "
                            f"left resumable: fix the disk, then `cancel {run.path.parent.name} --resume {run.id}`") from None
        _try_fail(run, f"{type(e).__name__}: {e}")
        raise
    finally:
        lock.release()


def _try_fail(run, error: str) -> None:
    """Mark the run failed; if even that cannot be written it stays ``running`` and shows as ``stale``."""
    if not run.path.is_dir():
        return  # removed: never recreate it
    try:
        run.fail(error)
    except OSError:
        pass
