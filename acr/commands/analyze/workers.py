"""Worker processes for an analysis: batches of clips mapped over a pool (features), and
independent jobs (plots) run beside the main process. Workers are forked where the platform
can (they start at once, with everything the parent imported), each with one BLAS / FFT thread.
Every function given to them must be a module-level function, its arguments picklable."""
from __future__ import annotations

import functools
import math
import multiprocessing
import os
import signal
import sys
from contextlib import contextmanager
from typing import Any, Callable, Iterator


def default_workers() -> int:
    """The CPUs this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


KEEP_FREED_BYTES = 256 * 2**20  # what a process's malloc keeps for reuse rather than unmaps
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # <malloc.h>


@functools.cache
def _glibc():
    """The process's glibc (for mallopt, malloc_trim), or None: not Linux, or another libc."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        libc = ctypes.CDLL(None)  # the process's own symbols: glibc's, if any
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
    except (OSError, AttributeError):  # musl and others: no mallopt
        return None
    return libc


def keep_freed_memory() -> None:
    """Make glibc's malloc (Linux) keep freed blocks for reuse instead of returning them to
    the system, for the rest of the process. A clip's features allocate tens of MB of temporary
    arrays; by default malloc may hand large blocks back and fault them in again for the next
    clip, which can cost as much system time as the features take (measured: 10-20 ms a clip
    once a long-lived allocation sits above them). Elsewhere, or without glibc, nothing
    changes. (glibc's own adaptive threshold is off from then on: mallopt cannot turn it back
    on.)"""
    libc = _glibc()
    if libc is not None:
        libc.mallopt(M_MMAP_THRESHOLD, KEEP_FREED_BYTES // 8)  # below 32 MB: from the heap
        libc.mallopt(M_TRIM_THRESHOLD, KEEP_FREED_BYTES)


@contextmanager
def freed_memory_kept() -> Iterator[None]:
    """keep_freed_memory in this process (the features computed here, with one worker:
    measured, 7.0 s instead of 10.1 s for 400 clips), and what malloc holds free at the end of
    the block handed back to the system. The process keeps up to KEEP_FREED_BYTES of freed
    memory for reuse from then on."""
    keep_freed_memory()
    try:
        yield
    finally:
        libc = _glibc()
        if libc is not None:
            libc.malloc_trim(0)


def one_thread_each(prepare: Callable[[], Any] | None = None) -> None:
    """A worker's start: one BLAS / FFT thread (the workers share the CPUs), freed memory
    kept for the next clip, and SIGTERM's default action back: a pool ends its workers with
    SIGTERM, and a forked worker inherits its parent's handlers (`acr experiment`'s raises
    KeyboardInterrupt, which Python swallows where it lands in a finaliser: once, in the
    suite, a worker then waited for work forever, and the pool joining it hung). Then
    `prepare`, if given (e.g. the imports the work needs, in a spawned worker, which inherits
    nothing)."""
    from threadpoolctl import threadpool_limits

    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    threadpool_limits(1)
    keep_freed_memory()
    if prepare is not None:
        prepare()


FORKED = sys.platform.startswith("linux")  # workers are forked (else spawned: they inherit nothing)


def pool(workers: int, prepare: Callable[[], Any] | None = None):
    """A process pool of `workers` (fork on Linux, spawn elsewhere), each starting with
    one_thread_each(prepare)."""
    method = "fork" if FORKED else "spawn"
    return multiprocessing.get_context(method).Pool(workers, initializer=one_thread_each,
                                                    initargs=(prepare,))


def in_batches(function: Callable[[list[Any]], list], items: list[Any],
               workers: int | None = None, meanwhile: Callable[[], Any] | None = None,
               prepare: Callable[[int], Any] | None = None
               ) -> Iterator[tuple[list[int], list]]:
    """(indices, function(those items)) for batches of `items` as they finish, in order:
    `workers` processes (default: one per CPU) each take a batch at a time; with one worker,
    this process does the work. `meanwhile`: what this process does while the workers work
    (e.g. imports that later workers then inherit): called once in any case (first, when
    there are no workers). `prepare(items per worker)`: what the workers need done first, e.g.
    the imports `function` needs for that many items: done here, before the workers are forked
    (they inherit it: one import, not one per worker; measured, an analysis of 40 clips 8% and
    of 400 clips 4% faster), or at each spawned worker's start where workers are spawned."""
    workers = min(workers or default_workers(), len(items))
    if workers <= 1 and meanwhile is not None:
        meanwhile()
    if workers <= 1 and prepare is not None and items:
        prepare(len(items))
    if not items:
        return
    size = max(1, min(8, math.ceil(len(items) / (4 * workers))))  # several batches a worker
    batches = [list(range(start, min(start + size, len(items))))
               for start in range(0, len(items), size)]
    if workers <= 1:
        from threadpoolctl import threadpool_limits

        with threadpool_limits(1), freed_memory_kept():  # (small matrices: BLAS threads
            for batch in batches:  # only spin)
                yield batch, function([items[i] for i in batch])
        return
    each = functools.partial(prepare, math.ceil(len(items) / workers)) if prepare else None
    if each is not None and FORKED:
        each()
        each = None
    with pool(workers, each) as processes:
        finished = processes.imap(function, [[items[i] for i in batch] for batch in batches])
        if meanwhile is not None:
            meanwhile()
        for batch, results in zip(batches, finished):
            yield batch, results


@contextmanager
def started(jobs: list[tuple[Callable, tuple]], workers: int | None = None
            ) -> Iterator[Callable[[], list[Any]]]:
    """Start each (function, arguments) job in up to `workers` processes; yields a function
    that waits for them and returns their results in order (with one worker, or one job, the
    jobs run when it is called, here). Leaving the block stops any job still running."""
    workers = min(workers or default_workers(), len(jobs))
    if workers <= 1:
        yield lambda: [function(*arguments) for function, arguments in jobs]
        return
    processes = pool(workers)
    try:
        pending = [processes.apply_async(function, arguments) for function, arguments in jobs]
        yield lambda: [job.get() for job in pending]
    finally:
        processes.terminate()
        processes.join()
