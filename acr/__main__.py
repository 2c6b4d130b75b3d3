"""The `acr` command's process entry (the console script, and `python -m acr ...`, which is what
`torchrun -m acr` runs): the Typer app, then a quick exit where that is safe."""
from __future__ import annotations

import os
import sys
import threading
from typing import NoReturn


def main() -> NoReturn:
    from acr.cli import app

    try:
        app(prog_name="acr")
        code = None
    except SystemExit as stop:
        code = stop.code
    leave(code)


def leave(code: object) -> NoReturn:
    """Exit with `code` (SystemExit's meaning) without Python's teardown where nothing needs
    it: no torch loaded (its C++ state, CUDA and process groups get their normal exit) and no
    other thread running. The teardown frees every module and object one by one: 0.1-0.15 s
    after an analysis (matplotlib, scipy), which a cached re-run otherwise spends on little
    else. The exit handlers (atexit: multiprocessing, logging, trackers) still run, and the
    standard streams are flushed; every file acr writes is closed where it is written."""
    if "torch" in sys.modules or threading.active_count() > 1:
        raise SystemExit(code)
    import atexit

    if code is None or isinstance(code, int):
        status = code or 0
    else:  # SystemExit("message"): printed, status 1
        print(code, file=sys.stderr)
        status = 1
    atexit._run_exitfuncs()  # (what the interpreter runs at exit; the teardown comes after)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except ValueError:  # closed: nothing to flush
            pass
        except OSError:  # as Python's own exit: status 120 when the output could not be written
            status = 120
    os._exit(status)


if __name__ == "__main__":
    main()
