"""A tracking sink in a child process of its own: its library's imports and work run beside the
run, not on the run's interpreter.

Why: a sink on a thread shares the run's Python (one interpreter lock). Measured here on a
Python-bound loop of a tiny model: W&B starting and logging on a thread made the loop 1.8x as
long; the same W&B work in a child process left it unchanged. The child is spawned (a new
interpreter: nothing of the run's state is copied, no lock another thread held at a fork).

Calls go to the child over a pipe, in order, and are not answered (the SinkWorker thread that
sends them never waits for the child's work); the child answers opening (the step to replay
from), closing, and a call that failed (reported at the next call or at closing, as a
ChildSinkError carrying the child's own error). When the run's process dies (a kill), the pipe
ends and the child ends at once, writing nothing more, as a sink on a thread would.
"""
from __future__ import annotations

import atexit
import multiprocessing
import os
import sys
from typing import Any, Callable


CHILD_NICENESS = 10  # added to the child's niceness: a lower scheduling priority than the run


class ChildSinkError(Exception):
    """A failure in the child: `str()` is the child's "ExceptionType: message"."""


def describe(exc: BaseException) -> str:
    """"ExceptionType: message" of an error, a child's as the child described it."""
    return str(exc) if isinstance(exc, ChildSinkError) else f"{type(exc).__name__}: {exc}"


class ChildSink:
    """The run's side of a sink that `opener(*arguments)` makes in a child process (a
    module-level function returning (sink, the step to replay the journal from)). The
    constructor returns once the child has opened the sink (or raises its failure).

    A child whose sink closed cleanly waits for the next one of the same name, taken only
    while this process's environment, sys.path and folder are what the child started with: a
    process that runs several tracked runs (a notebook, a script calling run_experiment)
    starts the tracker's child, its imports and its service once, not per run."""

    def __init__(self, name: str, opener: Callable[..., tuple[Any, int]], *arguments: Any):
        idle = _IDLE.pop(name, None)
        self.started_in = _surroundings()
        if idle is not None and idle[1].is_alive() and idle[2] == self.started_in:
            self.connection, self.process, _ = idle
        else:
            if idle is not None:
                _end(*idle[:2])
            context = multiprocessing.get_context("spawn")
            self.connection, child_end = context.Pipe()
            self.process = context.Process(target=serve, args=(child_end,),
                                           name=f"acr-tracking-{name}", daemon=True)
            self.process.start()
            child_end.close()
        self.name, self.failed = name, False
        try:
            self.connection.send(("open", opener, arguments))
            self.first = self._answer()
        except BaseException:
            self.failed = True
            self._end()
            raise

    def _answer(self) -> Any:
        try:
            kind, value = self.connection.recv()
        except (EOFError, OSError):
            self.failed = True
            raise ChildSinkError(f"ChildProcessError: its process ended (exit code "
                                 f"{self.process.exitcode})") from None
        if kind == "failed":
            self.failed = True
            raise ChildSinkError(value)
        return value

    def _send(self, *message: Any) -> None:
        if self.connection.poll():  # the child only speaks unasked to say a call failed
            self._answer()
        self.connection.send(message)

    def config(self, config: dict) -> None:
        self._send("config", config)

    def scalars(self, step: int, values: dict[str, float]) -> None:
        self._send("scalars", step, values)

    def clips(self, step: int, clips: list) -> None:
        self._send("clips", step, clips)

    def images(self, step: int, images: dict) -> None:
        self._send("images", step, images)

    def text(self, step: int, values: dict[str, str]) -> None:
        self._send("text", step, values)

    def close(self) -> None:
        """Every call sent handled and the sink closed in the child; the child then waits for
        the next sink of its name (a failed one ends)."""
        try:
            if not self.failed:
                self._send("close")
                self._answer()
        finally:
            if self.failed:
                self._end()
            else:
                _IDLE[self.name] = (self.connection, self.process, self.started_in)

    def _end(self) -> None:
        _end(self.connection, self.process)


def _end(connection: Any, process: Any) -> None:
    """A child ended: its pipe closed (it ends at once, as after a kill of the run)."""
    connection.close()
    process.join(timeout=10)
    if process.is_alive():
        process.terminate()
        process.join()


def _surroundings() -> tuple:
    """What a child takes from this process when it starts: the environment, sys.path and
    the working folder (a child is reused only while they are unchanged)."""
    return tuple(sorted(os.environ.items())), tuple(sys.path), os.getcwd()


_IDLE: dict[str, tuple[Any, Any, tuple]] = {}  # name -> (pipe, process, _surroundings())


def end_idle_children() -> None:
    """End the children waiting for a next sink (at this process's exit)."""
    for connection, process, _ in _IDLE.values():
        _end(connection, process)
    _IDLE.clear()


atexit.register(end_idle_children)


def serve(connection: Any) -> None:
    """The child: for each ("open", opener, arguments): open the sink, answer the step to
    replay from, then send it every call until "close" (answered once closed); after a
    failure, the later calls are dropped and the child ends at "close". When the pipe ends
    (the run's process closed it, or died), the child ends at once, writing nothing more.
    It runs at a lower priority than the run (and so do the processes it starts, W&B's
    service): where the CPUs are all busy, the run goes first."""
    if hasattr(os, "nice"):
        os.nice(CHILD_NICENESS)
    while True:
        try:
            _, opener, arguments = connection.recv()
            sink, first = opener(*arguments)
        except (EOFError, OSError):
            os._exit(0)
        except Exception as exc:
            connection.send(("failed", describe(exc)))
            return
        connection.send(("opened", first))
        if not _serve_one(connection, sink):
            return


def _serve_one(connection: Any, sink: Any) -> bool:
    """One sink's calls until "close"; True when it closed cleanly (the child may serve
    another)."""
    failed = False
    while True:
        try:
            kind, *values = connection.recv()
        except (EOFError, OSError):  # the run's process is gone: end as it did
            os._exit(0)
        if kind == "close":
            break
        if failed:
            continue
        try:
            getattr(sink, kind)(*values)
        except Exception as exc:
            failed = True
            connection.send(("failed", describe(exc)))
    if failed:
        connection.send(("closed", None))
        return False
    try:
        sink.close()
    except Exception as exc:
        connection.send(("failed", describe(exc)))
        return False
    connection.send(("closed", None))
    return True
