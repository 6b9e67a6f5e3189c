"""Progress of long stages: a rich bar with rate and ETA on a terminal, one line per event in
logs and CI (where a redrawn bar would fill the file with control characters)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

Log = Callable[[str], None]


class Progress:
    """``advance(n)`` as work finishes; ``note(text)`` for an event worth its own line."""

    def __init__(self, advance: Callable[[int], None], note: Log):
        self.advance, self.note = advance, note


def _is_tty() -> bool:
    return sys.stdout.isatty()


@contextmanager
def progress(
    description: str, total: int, log: Log, *, unit: str = "step", lines: int = 5
) -> Iterator[Progress]:
    """Report ``total`` units of work. On a terminal (and when ``log`` prints) a rich progress
    bar shows the rate and ETA; otherwise ``log`` gets about ``lines`` lines with the same facts."""
    t0 = time.perf_counter()
    done = 0
    quiet = getattr(log, "quiet", False)
    if _is_tty() and not quiet:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
        from rich.progress import (
            Progress as Bar,
        )

        bar = Bar(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            transient=True,
        )
        with bar:
            task = bar.add_task(description, total=total, rate="")

            def advance(n: int = 1) -> None:
                nonlocal done
                done += n
                el = time.perf_counter() - t0
                bar.update(task, advance=n, rate=f"{done / el:.2f} {unit}/s" if el > 0 else "")

            yield Progress(advance, lambda s: bar.console.log(s))
        log(f"{description}: {total} {unit}s in {time.perf_counter() - t0:.1f}s")
        return
    every = max(1, total // max(1, lines))
    next_mark = every

    def advance(n: int = 1) -> None:
        nonlocal done, next_mark
        done += n
        if done >= next_mark or done == total:
            el = time.perf_counter() - t0
            rate = done / el if el > 0 else 0.0
            eta = (total - done) / rate if rate > 0 else 0.0
            log(f"{description}: {done}/{total} {unit}s, {rate:.2f} {unit}/s, ETA {eta:.0f}s")
            while next_mark <= done:
                next_mark += every

    yield Progress(advance, log)
