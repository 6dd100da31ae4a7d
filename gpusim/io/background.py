"""A bounded queue of write jobs and the one thread that runs them, in order (DESIGN.md §4: writing
overlaps compute).

    q = WriteQueue(max_jobs=2)
    q.submit(job)          # returns at once; blocks only while ``max_jobs`` jobs are already waiting
    q.drain()              # waits until every submitted job has run; re-raises the first job's error
    q.stop()               # drain, then end the thread (a later submit starts a new one)

Jobs are callables without arguments that own their data (host copies taken by the caller, so the
step loop may overwrite its arrays at once). One thread runs them first in, first out, so a store is
written in the same order as synchronously and a frame's counter is still raised after its data.
With ``max_jobs = 0`` every job runs inside ``submit`` (no thread): the synchronous writer, for
debugging and for comparison in benchmarks.

Errors: the first exception a job raises is kept; the jobs queued after it are dropped (a later frame
must not be committed after a missing one), and ``submit``, ``drain`` and ``stop`` raise it in the
caller's thread. At interpreter exit every live queue is drained, so frames handed over by a script
that never closed its writer still reach the disk.

Hand-written rather than ``concurrent.futures.ThreadPoolExecutor``: the executor's queue is
unbounded (a slow disk would let host copies pile up without limit), and the step loop must block
when the queue is full.
"""

from __future__ import annotations

import atexit
import queue
import threading
import weakref

__all__ = ["WriteQueue"]

_STOP = object()
_live: "weakref.WeakSet[WriteQueue]" = weakref.WeakSet()


class WriteQueue:
    """Runs submitted jobs on one background thread, in order, with at most ``max_jobs`` waiting."""

    def __init__(self, max_jobs: int = 2, name: str = "gpusim-writer"):
        if max_jobs < 0:
            raise ValueError(f"max_jobs = {max_jobs}: must be >= 0 (0: write synchronously)")
        self.max_jobs = int(max_jobs)
        self.name = name
        self._queue: queue.Queue | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self.waited_s = 0.0  # seconds the caller spent blocked on a full queue (perf, never compared)
        _live.add(self)

    # -- the caller's side -----------------------------------------------------------------------
    def submit(self, job) -> None:
        """Queue ``job`` (or run it now when ``max_jobs`` is 0); raises a previous job's error."""
        self._raise()
        if self.max_jobs == 0:
            job()
            return
        if self._thread is None:
            self._start()
        if self._queue.full():
            import time

            t0 = time.perf_counter()
            self._queue.put(job)
            self.waited_s += time.perf_counter() - t0
        else:
            self._queue.put(job)

    def drain(self) -> None:
        """Wait until every submitted job has run; raise the first error one of them raised."""
        if self._queue is not None:
            self._queue.join()
        self._raise()

    def stop(self) -> None:
        """Drain and end the thread (errors as in :meth:`drain`)."""
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join()
            self._thread = None
            self._queue = None
        self._raise()

    @property
    def error(self) -> BaseException | None:
        return self._error

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    # -- the thread's side -----------------------------------------------------------------------
    def _start(self) -> None:
        self._queue = queue.Queue(maxsize=self.max_jobs)
        # daemon: a crash of the main program must not hang on this thread; the atexit hook drains
        self._thread = threading.Thread(target=self._work, args=(self._queue,), name=self.name, daemon=True)
        self._thread.start()

    def _work(self, q: queue.Queue) -> None:
        while True:
            job = q.get()
            try:
                if job is _STOP:
                    return
                if self._error is None:  # after a failure the rest is dropped, never written out of order
                    job()
            except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
                self._error = exc
            finally:
                q.task_done()


@atexit.register
def _drain_all() -> None:
    for q in list(_live):
        try:
            q.stop()
        except BaseException:  # noqa: BLE001 - at exit the error was already reported or has no reader
            pass
