"""A tracking sink in a child process of its own: its library's imports and work run beside the
run, not on the run's interpreter.

Why: a sink on a thread shares the run's Python (one interpreter lock). Measured here on a
Python-bound loop of a tiny model: W&B starting and logging on a thread made the loop 1.8x as
long; the same W&B work in a child process left it unchanged.

The child is a new interpreter (`python -m acr.core.child_sink FD FOLDER`: nothing of the run's
state is copied, no script of the caller's is run again; FOLDER takes its temporary files and
goes with it), in a process group of its own (a Ctrl-C at the terminal is the run's to handle;
SIGINT and SIGTERM sent to the child itself are ignored), at a lower scheduling priority than
the run (CHILD_NICENESS; on Linux also the SCHED_IDLE policy: it works in the CPU time the run
leaves, and waking up it does not preempt a thread of the run, which a torch step would wait
for: idle_policy). It stays in the run's session: Linux's autogroup scheduling shares the CPU
between sessions first, so a child in a session of its own got as much CPU as the run whatever
its niceness (measured here: a whole-process experiment's loop 15% longer with TensorBoard's
child in its own session, none in the run's). W&B starts its service in a session of its own
(giving that session's autogroup the lowest share, niceness 19, did not shorten a fine-tune's
loop: README, Tracking). Calls go to it over a socket, in order (a few times a second: the
SinkWorker thread that sends them gathers them), and are not answered (that thread never waits
for the child's work); the child answers opening (the step to replay the journal from),
closing, and a call that failed (reported at the next call or at closing, as a ChildSinkError
carrying the child's own error). When the run's process dies, the child ends within
PARENT_CHECK_SECONDS, writing nothing more, as a sink on a thread would have.
"""
from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from multiprocessing.connection import Connection
from typing import Any, Callable, NamedTuple, NoReturn

CHILD_NICENESS = 10  # added to the child's niceness: a lower scheduling priority than the run
# and on Linux the idle policy: the child works in the CPU time the run leaves (idle_policy)
PARENT_CHECK_SECONDS = 0.1  # how often the child looks whether the run's process is alive
END_WAIT_SECONDS = 10  # how long ending a child waits before it is killed


# a process group of its own from the start (Python 3.11's Popen); on 3.10 the child makes one
# itself as it starts (main)
OWN_PROCESS_GROUP = {"process_group": 0} if sys.version_info >= (3, 11) else {}


class ChildSinkError(Exception):
    """A failure in the child: `str()` is the child's "ExceptionType: message"."""


def describe(exc: BaseException) -> str:
    """"ExceptionType: message" of an error, a child's as the child described it."""
    return str(exc) if isinstance(exc, ChildSinkError) else f"{type(exc).__name__}: {exc}"


class Child(NamedTuple):
    """A running child: its socket, its process, what it started with (_surroundings), and
    the temporary folder it was given (_temporary_folder; None: there was none to make)."""
    connection: Connection
    process: subprocess.Popen
    surroundings: tuple
    temporary: str | None


# what a command's imports and model loading set in os.environ for themselves, and no tracker
# reads (torch's compiler cache, OpenMP after a fork (joblib), Hugging Face's offline mode): a
# command starts its trackers' children before those (start_early)
SET_BY_THE_COMMAND = frozenset({"TORCHINDUCTOR_CACHE_DIR", "KMP_INIT_AT_FORK",
                                "KMP_DUPLICATE_LIB_OK", "TOKENIZERS_PARALLELISM",
                                "HF_HUB_OFFLINE"})


def _surroundings() -> tuple:
    """What a child takes from this process when it starts: the environment (but
    SET_BY_THE_COMMAND), sys.path and the working folder (a child is reused only while they
    are unchanged)."""
    return (tuple(sorted((k, v) for k, v in os.environ.items() if k not in SET_BY_THE_COMMAND)),
            tuple(sys.path), os.getcwd())


def _temporary_folder() -> str | None:
    """A folder for a child's temporary files (its tracker library's), removed when the child
    ends, by the child (_exit) or by _end: wandb makes two temporary folders as it is imported
    (wandb-media, wandb-artifacts) and removes them only in a normal interpreter exit, which a
    child that ends at once skips: each tracked run left them in the system's temporary
    folder. None where no folder can be made (the child then uses the system's)."""
    try:
        return tempfile.mkdtemp(prefix="acr-tracker-")
    except OSError:
        return None


def _start() -> Child:
    ours, theirs = socket.socketpair()
    temporary = _temporary_folder()
    try:
        process = subprocess.Popen([sys.executable, "-m", "acr.core.child_sink",
                                    str(theirs.fileno()), *([temporary] if temporary else [])],
                                   pass_fds=[theirs.fileno()], **OWN_PROCESS_GROUP)
    except BaseException:
        ours.close()
        if temporary is not None:
            shutil.rmtree(temporary, ignore_errors=True)
        raise
    finally:
        theirs.close()
    return Child(Connection(ours.detach()), process, _surroundings(), temporary)


def _end(child: Child) -> None:
    """End a child: its socket closed (it ends at once), killed if it does not; then its
    temporary folder removed."""
    child.connection.close()
    try:
        child.process.wait(timeout=END_WAIT_SECONDS)
    except subprocess.TimeoutExpired:
        child.process.kill()
        child.process.wait()
    if child.temporary is not None:
        shutil.rmtree(child.temporary, ignore_errors=True)


_IDLE: dict[str, Child] = {}  # a sink's name -> its child, between two sinks of that name
_IDLE_LOCK = threading.Lock()


class ChildSink:
    """The run's side of a sink that `opener(*arguments)` makes in a child process (a
    module-level function returning (sink, the step to replay the journal from)). The
    constructor returns once the child has opened the sink (or raises its failure).

    `first`: that step; `failed`: whether the sink failed (its child is then ended at close).
    A child whose sink closed cleanly waits for the next sink of the same name, taken only
    while this process's environment, sys.path and folder are what the child started with: a
    process that runs several tracked runs (a notebook, a script calling run_experiment)
    starts the tracker's child, its imports and its service once, not per run."""

    def __init__(self, name: str, opener: Callable[..., tuple[Any, int]], *arguments: Any):
        with _IDLE_LOCK:
            idle = _IDLE.pop(name, None)
        if idle is not None and (idle.process.poll() is not None
                                 or idle.surroundings != _surroundings()):
            _end(idle)
            idle = None
        self.name, self.failed = name, False
        self.child = idle or _start()
        try:
            self.child.connection.send(("path", list(sys.path)))
            self.child.connection.send(("open", opener, arguments))
            self.first = self._answer()
        except BaseException:
            self.failed = True
            _end(self.child)
            raise

    def _answer(self) -> Any:
        try:
            kind, value = self.child.connection.recv()
        except (EOFError, OSError):
            self.failed = True
            try:
                code = self.child.process.wait(timeout=1)
            except subprocess.TimeoutExpired:
                code = None
            raise ChildSinkError(f"ChildProcessError: its process ended (exit code {code})"
                                 ) from None
        if kind == "failed":
            self.failed = True
            raise ChildSinkError(value)
        return value

    def _send(self, *message: Any) -> None:
        if self.child.connection.poll():  # the child speaks unasked only to say a call failed
            self._answer()
        self.child.connection.send(message)

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

    def kill(self) -> None:
        """End the child at once, whatever it is doing (a call stuck in its library): what this
        side waits on from it then fails, and close() then ends it here (its socket, its
        temporary folder)."""
        self.failed = True
        try:
            self.child.process.kill()
        except OSError:
            pass

    def close(self) -> None:
        """Every call sent handled and the sink closed in the child (after a failure too, as
        far as it can be); a child that closed cleanly waits for the next sink of its name,
        any other is ended."""
        try:
            self.child.connection.send(("close",))
            if self.failed:  # (the failure was said; the child answers "closed" anyway)
                self.child.connection.poll(END_WAIT_SECONDS)
            else:
                self._answer()
        except BaseException:
            self.failed = True
            raise
        finally:
            with _IDLE_LOCK:
                if self.failed or self.name in _IDLE:
                    _end(self.child)
                else:
                    _IDLE[self.name] = self.child


def start_early(name: str, warm: Callable[[], Any]) -> None:
    """Start sink `name`'s child now and have it run `warm()` (a module-level function: the
    tracker's imports, its service), unless a child of that name waits already: a sink opened
    later in this process takes it ready, as it takes a child that served a sink before (while
    this process's environment, sys.path and folder are what the child started with). A
    command calls this before it imports torch and loads its model, so that its trackers
    start beside that rather than beside the run's first steps. A child no sink takes is
    ended at this process's exit."""
    with _IDLE_LOCK:
        if name in _IDLE:
            return
    try:
        child = _start()
    except OSError:  # (no process to be had: a sink opened later tries again, and says so)
        return
    try:
        child.connection.send(("path", list(sys.path)))
        child.connection.send(("warm", warm))
    except OSError:  # (the child died at once: a sink opened later starts another)
        _end(child)
        return
    with _IDLE_LOCK:
        if _IDLE.setdefault(name, child) is child:
            return
    _end(child)  # another thread started one meanwhile


def end_idle_children() -> None:
    """End the children waiting for a next sink (at this process's exit)."""
    with _IDLE_LOCK:
        children = list(_IDLE.values())
        _IDLE.clear()
    for child in children:
        _end(child)


atexit.register(end_idle_children)


# ---- the child ---------------------------------------------------------------------------------

def _given_folder() -> str | None:
    """The temporary folder the run's process gave this child (_temporary_folder), if any."""
    return sys.argv[2] if len(sys.argv) > 2 else None


def _exit() -> NoReturn:
    """End the child at once, without the interpreter's teardown (a library's exit handlers
    could block or write after the run is done), its temporary folder removed (the run's
    process may be gone: _end would not)."""
    folder = _given_folder()
    if folder is not None:
        shutil.rmtree(folder, ignore_errors=True)
    os._exit(0)


def _end_with_parent(parent: int) -> None:
    """A thread of the child: end it at once when the run's process is gone (the child is
    then another process's)."""
    while os.getppid() == parent:
        time.sleep(PARENT_CHECK_SECONDS)
    _exit()


def serve(connection: Connection) -> None:
    """The child: for each sink asked for ("path", then "open"; after the first "path", a
    "warm" when the child was started early): open it, answer the step to replay from, send
    it every call until "close" (answered once closed); after a failure, the later calls are
    dropped, the sink is closed as far as it can be, and the child ends.
    When the socket ends (the run's process closed it, or died), the child ends at once."""
    warming = None
    while True:
        try:
            kind, *values = connection.recv()
        except (EOFError, OSError):  # (a warm-up still at work included: the run is done)
            _exit()
        if kind == "path":  # (where the opener's module is found)
            sys.path[:] = values[0]
            continue
        if kind == "warm":  # a start before any sink (start_early), on a thread: the end of
            warming = threading.Thread(target=_warm, args=values, daemon=True)  # the socket
            warming.start()  # still ends the child at once
            continue
        if kind != "open":
            raise ValueError(f"a tracker's child got {kind!r} where it waits for a sink")
        if warming is not None:
            warming.join()
            warming = None
        opener, arguments = values
        try:
            sink, first = opener(*arguments)
        except Exception as exc:
            connection.send(("failed", describe(exc)))
            return
        connection.send(("opened", first))
        if not _serve_one(connection, sink):
            return


def _warm(warm: Callable[[], Any]) -> None:
    """A child's warm-up (start_early); what fails here, the opening of the sink says."""
    try:
        warm()
    except Exception:
        pass


def _serve_one(connection: Connection, sink: Any) -> bool:
    """One sink's calls until "close"; True when it closed cleanly (the child may serve
    another)."""
    failed = False
    while True:
        try:
            kind, *values = connection.recv()
        except (EOFError, OSError):  # the run's process is gone: end as it did
            _exit()
        if kind == "close":
            break
        if failed:
            continue
        try:
            getattr(sink, kind)(*values)
        except Exception as exc:
            failed = True
            connection.send(("failed", describe(exc)))
    try:
        sink.close()
    except Exception as exc:
        if not failed:
            connection.send(("failed", describe(exc)))
        return False
    connection.send(("closed", None))
    return not failed


def idle_policy() -> None:
    """The idle scheduling policy for this process (its threads, and the processes it starts,
    W&B's service among them, inherit it), where the run has the normal one (Linux): it gets
    the CPU that the run's threads leave, waking up preempts none of them (a torch step waits
    for its slowest thread), and what it has to do waits for the run's pauses (its end at the
    latest: closing a sink waits for its work). Measured against SCHED_BATCH (two-minute
    interleaved runs of the tracking benchmark, TensorBoard + W&B): a tiny model's fine-tune
    step 0.6% slower on average over seven runs, against +4.3% and +3.1% in two runs the same
    hour (README, Tracking). The policy ranks the child within its group (the run's session,
    or the job's cgroup on a cluster), so other users' work does not starve it; the run's own
    other processes (data loader workers, an analysis' feature workers) do, until they end. It
    cannot be left without privileges. Under another policy (a run started with `chrt`) the
    child keeps it: a real-time run's child should not be made idle by guesswork."""
    try:
        if os.sched_getscheduler(0) == os.SCHED_OTHER:
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):  # not Linux, or not allowed (a sandbox): niceness only
        pass


def main() -> None:
    """`python -m acr.core.child_sink FD [FOLDER]`: serve the socket FD that the run's process
    passed, with FOLDER for temporary files."""
    parent = os.getppid()
    if os.getpgid(0) != os.getpid():
        os.setpgid(0, 0)
    for number in (signal.SIGINT, signal.SIGTERM):  # (a handler, not SIG_IGN: the processes
        signal.signal(number, lambda *_: None)  # it starts get the default action back)
    if hasattr(os, "nice"):
        os.nice(CHILD_NICENESS)
    idle_policy()
    tempfile.tempdir = _given_folder()  # its libraries' temporary files (None: the system's)
    threading.Thread(target=_end_with_parent, args=(parent,), daemon=True).start()
    serve(Connection(int(sys.argv[1])))


if __name__ == "__main__":
    main()
