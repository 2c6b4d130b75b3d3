"""The single output facade: messages and progress go through here, never through print().

On a terminal it uses rich (colours, live progress bars); otherwise (CI, pipes, log files) it writes
plain lines to stderr, with progress reported at most every few seconds. Results the user asked for
(where the output is) go to stdout via `result`.
"""
from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from typing import Callable, Iterator

from rich.console import Console

_err = Console(stderr=True, highlight=False)
_out = Console(highlight=False)


def info(message: str) -> None:
    _err.print(message, markup=False, soft_wrap=True)


def warn(message: str) -> None:
    _err.print(f"warning: {message}", style="yellow", markup=False, soft_wrap=True)


def error(message: str) -> None:
    _err.print(message, style="red", markup=False, soft_wrap=True)


def result(message: str) -> None:
    _out.print(message, markup=False, soft_wrap=True)


@contextmanager
def progress(description: str, total: float) -> Iterator[Callable[[float], None]]:
    """Yield `update(done)` that reports absolute progress `done` out of `total`."""
    if _err.is_terminal:
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                   TimeElapsedColumn, TimeRemainingColumn)

        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn())
        with Progress(*columns, console=_err, transient=False) as bar:
            task = bar.add_task(description, total=total)
            yield lambda done: bar.update(task, completed=done)
        return
    last = [0.0, None]  # time and value of the last line

    def update(done: float) -> None:
        now = time.monotonic()
        if done != last[1] and (now - last[0] >= 5.0 or done >= total):
            last[0], last[1] = now, done
            print(f"{description}: {done:g}/{total:g}", file=sys.stderr, flush=True)

    yield update


def table(title: str, columns: list[str], rows: list[list[str]]) -> None:
    """A small table on stderr. On a terminal: rich, when it fits the terminal's width (numbers
    are never broken across lines); otherwise, and in logs, pipes and CI, plain lines: the
    title, then the header and each row with cells separated by tabs."""
    if _err.is_terminal:
        from rich.measure import Measurement
        from rich.table import Table

        grid = Table(title=title, title_justify="left")
        for index, column in enumerate(columns):  # a label column, then right-aligned numbers
            grid.add_column(column, justify="left" if index == 0 else "right", no_wrap=True)
        for row in rows:
            grid.add_row(*row)
        unbounded = _err.options.update(width=1 << 16)  # the width the table wants
        if Measurement.get(_err, unbounded, grid).maximum <= _err.width:
            _err.print(grid)
            return
    print("\n".join([title, *("\t".join(cells) for cells in [columns, *rows])]),
          file=sys.stderr, flush=True)
